"""VGG-19 `features` (torchvision layout) in Flax, with named taps.

Sixteen 3x3/pad-1 convs with bias, each followed by ReLU, in five blocks of
2, 2, 4, 4, 4 convs, each block ending in a 2x2/stride-2 pool (torchvision
`cfgs['E']`, 20,024,384 parameters). Tap names: `conv{b}_{l}` (pre-ReLU),
`relu{b}_{l}` (post-ReLU) and `pool{b}`; only the layers up to the deepest
requested tap are computed.

Variants:
- `pool='max'`: torchvision/SPADE (reference/spade_pix2pix.md A6).
- `pool='avg'`: CRN's average-pooling VGG (reference/crn.md §5). CRN uses TF
  SAME 2x2/2 pools, equal to these VALID (floor) pools for even sizes.

Input range convention: images [B, H, W, 3] RGB.
- `imagenet_normalize=True`: inputs in [0, 1]; (x - mean) / std with the
  ImageNet statistics below is applied inside, as torchvision expects.
- `imagenet_normalize=False` (default): inputs are fed unchanged. SPADE's VGG
  loss does this with its [-1, 1] generator images (reference A6), so SPADE
  uses `imagenet_normalize=False` on [-1, 1] images.
CRN's MatConvNet convention belongs to other weights: RGB in [0, 255] minus
`MATCONVNET_MEAN`, no std (reference/crn.md §5, pitfall 2), with the
MatConvNet file (`load_matconvnet_vgg19`); with torchvision weights use
`imagenet_normalize=True` on [0, 1].

Weights: torchvision's `vgg19-dcbb9e9d.pth` (`load_vgg19`) or MatConvNet's
`imagenet-vgg-verydeep-19.mat` (`load_matconvnet_vgg19`, the file CRN used),
both through the weight manager.

Precision: parameters are float32; `dtype` is the compute dtype (the loss runs
in the policy dtype), taps are returned in it. `precision` is passed to every
conv (None = the global default).
"""
from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.nets import weights

CONVERTER_VERSION = 1  # Bump when a converter's output changes.
WEIGHTS_NAME = 'vgg19-dcbb9e9d.pth'
MATCONVNET_WEIGHTS_NAME = 'imagenet-vgg-verydeep-19.mat'
# CRN's build_vgg19: input - [123.68, 116.779, 103.939] (reference/crn.md §5).
MATCONVNET_MEAN = (123.68, 116.779, 103.939)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet statistics.
IMAGENET_STD = (0.229, 0.224, 0.225)
BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
          (512, 512, 512, 512))  # torchvision cfgs['E'].


def _layers() -> list[tuple[str, str, int]]:
  """[(kind, name, torchvision features index)] in forward order."""
  out, idx = [], 0
  for b, widths in enumerate(BLOCKS, start=1):
    for l in range(1, len(widths) + 1):
      out.append(('conv', f'conv{b}_{l}', idx))
      out.append(('relu', f'relu{b}_{l}', idx + 1))
      idx += 2
    out.append(('pool', f'pool{b}', idx))
    idx += 1
  return out


LAYERS = tuple(_layers())
TAP_NAMES = tuple(name for _, name, _ in LAYERS)
_WIDTH = {f'conv{b}_{l}': w for b, ws in enumerate(BLOCKS, start=1)
          for l, w in enumerate(ws, start=1)}


class VGG19Features(nn.Module):
  """VGG-19 feature extractor returning a dict of taps.

  Attributes:
    pool: 'max' (torchvision, SPADE) or 'avg' (CRN).
    imagenet_normalize: apply ImageNet mean/std to [0, 1] inputs (see module
      docstring for the input range convention).
    dtype: compute dtype; params stay float32.
    precision: conv precision (None = global default).
  """
  pool: str = 'max'
  imagenet_normalize: bool = False
  dtype: jnp.dtype = jnp.float32
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, images: jax.Array,
               taps: Sequence[str] = ('relu5_4',)) -> dict[str, jax.Array]:
    """images: [B, H, W, 3] -> {tap: [B, h, w, C] in `dtype`}."""
    if self.pool not in ('max', 'avg'):
      raise ValueError(f'pool must be max or avg, got {self.pool!r}')
    unknown = set(taps) - set(TAP_NAMES)
    if unknown or not taps:
      raise ValueError(f'Unknown VGG-19 taps {sorted(unknown)}; choose from '
                       f'{TAP_NAMES}')
    last = max(TAP_NAMES.index(t) for t in taps)
    x = images.astype(jnp.float32)
    if self.imagenet_normalize:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = x.astype(self.dtype)
    out = {}
    for kind, name, _ in LAYERS[:last + 1]:
      if kind == 'conv':
        x = nn.Conv(_WIDTH[name], (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, param_dtype=jnp.float32,
                    precision=self.precision, name=name)(x)
      elif kind == 'relu':
        x = nn.relu(x)
      elif self.pool == 'max':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      if name in taps:
        out[name] = x
    return out


def init_variables(seed: int = 0) -> dict:
  """Random variables (He-normal kernels, zero biases), numpy float32."""
  return weights.random_variables(variable_shapes(), seed)


@functools.cache
def variable_shapes() -> dict:
  """Variables' ShapeDtypeStructs via jax.eval_shape (no compute; cached)."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(
      lambda k, x: VGG19Features().init(k, x, ('pool5',)),
      jax.random.key(0), x)


def convert_vgg19(state_dict: dict[str, np.ndarray]) -> dict:
  """torchvision VGG-19 state_dict (numpy) -> {'params': ...} float32.

  `features.N.weight` (O, I, 3, 3) -> params/conv{b}_{l}/kernel (3, 3, I, O),
  `features.N.bias` -> params/conv{b}_{l}/bias; `classifier.*` is dropped.
  """
  by_index = {idx: name for kind, name, idx in LAYERS if kind == 'conv'}
  params, used = {}, set()
  for idx, name in by_index.items():
    w_key, b_key = f'features.{idx}.weight', f'features.{idx}.bias'
    if w_key not in state_dict or b_key not in state_dict:
      raise ValueError(f'{w_key}/{b_key} missing: not a VGG-19 state_dict')
    w = np.asarray(state_dict[w_key], np.float32).transpose(2, 3, 1, 0)
    b = np.asarray(state_dict[b_key], np.float32)
    params[name] = {'kernel': w, 'bias': b}
    used.update((w_key, b_key))
  extra = [k for k in state_dict
           if k not in used and not k.startswith('classifier.')]
  if extra:
    raise ValueError(f'Unexpected VGG-19 weights {extra[:5]}')
  _check_shapes(params)
  return {'params': params}


def _check_shapes(params: dict) -> None:
  expected = weights.flatten(variable_shapes())
  for k, v in weights.flatten({'params': params}).items():
    if v.shape != tuple(expected[k].shape):
      raise ValueError(f'{k}: shape {v.shape} != {expected[k].shape}')


def load_vgg19(allow_random: bool = False, *,
               download: bool = True) -> tuple[dict, bool]:
  """Loads torchvision's ImageNet VGG-19 features through the weight manager.

  Args:
    allow_random: when the real weights are unavailable, return random-init
      variables instead of raising (a perceptual loss with them is not the
      published one; the caller must say so).
    download: allow downloading (see weights.fetch).

  Returns:
    (variables, is_random); variables = {'params': {conv1_1: ...}}.

  Raises:
    weights.WeightsUnavailableError: unavailable and allow_random is False.
  """
  return weights.load_or_random(WEIGHTS_NAME, init_variables,
                                allow_random=allow_random, download=download)


def register_weights() -> None:
  """Registers MatConvNet's VGG-19 with `jaxl2i.nets.weights`."""
  weights.register(weights.WeightFile(
      name=MATCONVNET_WEIGHTS_NAME,
      # MatConvNet's pretrained-model page; only an MD5 is published (also
      # quoted by the TF neural-style ports that read this file).
      url=('https://www.vlfeat.org/matconvnet/models/'
           'imagenet-vgg-verydeep-19.mat'),
      sha256='', md5='106118b7cf60435e6d8e04f6a6dc3657',
      how_to_get=("It is MatConvNet's ImageNet VGG-19, the file the "
                  'official CRN code loads as '
                  'VGG_Model/imagenet-vgg-verydeep-19.mat.'),
      converter='jaxl2i.nets.vgg19:convert_matconvnet_vgg19',
      short_name='vgg19_matconvnet',
      reader='jaxl2i.nets.matconvnet:read_simplenn'))


register_weights()


def convert_matconvnet_vgg19(layers: dict[str, np.ndarray]) -> dict:
  """`matconvnet.read_simplenn` of imagenet-vgg-verydeep-19.mat -> Flax.

  `conv{b}_{l}.weight` [3, 3, I, O] is the kernel as stored (CRN feeds it to
  tf.nn.conv2d as HWIO; Flax kernels are HWIO too), `conv{b}_{l}.bias` [O]
  the bias; fc6-fc8 are dropped.
  """
  params = {}
  for kind, name, _ in LAYERS:
    if kind != 'conv':
      continue
    w_key, b_key = f'{name}.weight', f'{name}.bias'
    if w_key not in layers or b_key not in layers:
      raise ValueError(f'layer {name} missing: not a MatConvNet VGG-19')
    params[name] = {'kernel': np.asarray(layers[w_key], np.float32),
                    'bias': np.asarray(layers[b_key], np.float32)}
  extra = [k for k in layers
           if k.split('.')[0] not in params and not k.startswith('fc')]
  if extra:
    raise ValueError(f'Unexpected MatConvNet VGG-19 layers {extra[:5]}')
  _check_shapes(params)
  return {'params': params}


def load_matconvnet_vgg19(allow_random: bool = False, *,
                          download: bool = True) -> tuple[dict, bool]:
  """MatConvNet's VGG-19 (CRN's loss network); as `load_vgg19`.

  Feed it RGB in [0, 255] minus MATCONVNET_MEAN (imagenet_normalize=False).
  """
  return weights.load_or_random(MATCONVNET_WEIGHTS_NAME, init_variables,
                                allow_random=allow_random, download=download)

