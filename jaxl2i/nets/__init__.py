"""Pretrained networks for losses and metrics.

- `weights`: registry of published weight files, sha256 checks, cache,
  downloads and the offline error; `load_params` converts once and caches.
- `inception_fid`: pytorch-fid's FID InceptionV3 (pool3 features).
- `vgg19`: torchvision VGG-19 features with named taps (max/avg pool).
- `pth`: torch-free reader of .pth state_dicts.
- `convert`: `python -m jaxl2i.nets.convert --name vgg19|inception`.
"""
from jaxl2i.nets.weights import WeightsChecksumError
from jaxl2i.nets.weights import WeightsError
from jaxl2i.nets.weights import WeightsUnavailableError
