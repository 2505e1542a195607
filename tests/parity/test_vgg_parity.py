"""Parity of the Flax VGG-19 features with torchvision's vgg19 (random weights).

Every conv, relu and pool tap is compared, for the max-pool (torchvision,
SPADE) and average-pool (CRN; torch reference built by swapping MaxPool2d for
AvgPool2d) variants, with and without ImageNet input normalisation. The
torchvision state_dict goes through a legacy-format .pth file and jaxl2i's
torch-free reader, as the published file would.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')




torchvision = pytest.importorskip('torchvision')

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxl2i.nets import pth
from jaxl2i.nets import vgg19

REL_TOL = 1e-4  # max|diff| / max(1, max|ref|) per tap.


@pytest.fixture(scope='module')
def torch_vgg(tmp_path_factory):
  # The full vgg19 (with its 120M-parameter classifier) is built on the meta
  # device only to check the state_dict names; the features are built by
  # torchvision's own make_layers(cfgs['E']), exactly as vgg19() does.
  with torch.device('meta'):
    names = [k for k in torchvision.models.vgg19(weights=None).state_dict()
             if k.startswith('features.')]
  torch.manual_seed(0)
  tv = torchvision.models.vgg
  features = tv.make_layers(tv.cfgs['E'], batch_norm=False).eval()
  with torch.no_grad():
    for m in features:
      if isinstance(m, torch.nn.Conv2d):  # vgg19()'s init, random biases.
        torch.nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                      nonlinearity='relu')
        m.bias.uniform_(-0.1, 0.1)
  state = {f'features.{k}': v for k, v in features.state_dict().items()}
  assert sorted(state) == sorted(names)
  path = tmp_path_factory.mktemp('vgg') / 'vgg19.pth'
  torch.save(state, path, _use_new_zipfile_serialization=False)
  variables = vgg19.convert_vgg19(pth.load_state_dict(path))
  return features, variables


def _torch_taps(features, x):
  out = {}
  with torch.no_grad():
    for (_, name, idx), layer in zip(vgg19.LAYERS, features):
      x = layer(x) if not isinstance(layer, torch.nn.ReLU) else torch.relu(x)
      out[name] = x.permute(0, 2, 3, 1).numpy().copy()
      assert idx == len(out) - 1
  return out


@pytest.mark.parametrize('pool,normalize', [('max', False), ('max', True),
                                            ('avg', False)])
def test_all_taps_match_torchvision(torch_vgg, pool, normalize):
  features, variables = torch_vgg
  if pool == 'avg':
    features = torch.nn.Sequential(*[
        torch.nn.AvgPool2d(2, 2) if isinstance(m, torch.nn.MaxPool2d) else m
        for m in features])
  rng = np.random.default_rng(0)
  lo = 0.0 if normalize else -1.0  # [0, 1] with normalisation, else [-1, 1].
  images = rng.uniform(lo, 1.0, (2, 32, 32, 3)).astype(np.float32)
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  if normalize:
    x = (x - torch.tensor(vgg19.IMAGENET_MEAN)[:, None, None]) / torch.tensor(
        vgg19.IMAGENET_STD)[:, None, None]
  ref = _torch_taps(features, x)
  net = vgg19.VGG19Features(pool=pool, imagenet_normalize=normalize,
                            precision=jax.lax.Precision.HIGHEST)
  out = jax.jit(lambda v, im: net.apply(v, im, vgg19.TAP_NAMES))(
      variables, images)
  worst = 0.0
  for name in vgg19.TAP_NAMES:
    assert out[name].shape == ref[name].shape, name
    diff = float(np.abs(np.asarray(out[name]) - ref[name]).max())
    mag = float(np.abs(ref[name]).max())
    worst = max(worst, diff / max(1.0, mag))
    if name.startswith('relu') and name.endswith('_1'):
      print(f'vgg {pool} norm={normalize} {name}: max|diff| {diff:.2e} '
            f'max|ref| {mag:.3f}')
    assert diff / max(1.0, mag) <= REL_TOL, (name, diff, mag)
  print(f'vgg {pool} norm={normalize}: worst relative diff {worst:.2e}')
