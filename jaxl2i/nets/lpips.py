"""LPIPS v0.1 with AlexNet (`lpips.LPIPS(net='alex', version='0.1')`) in Flax.

d(x0, x1) = Σ_l mean_{h,w} w_l · (n(f_l(x0)) − n(f_l(x1)))²
(`shared/reference/metrics.md` §4):
1. inputs [B, H, W, 3] float in [-1, 1]; ScalingLayer (x − shift) / scale;
2. torchvision AlexNet `features`, taps after the ReLUs of conv1..conv5
   (64, 192, 384, 256, 256 channels);
3. per tap: unit-normalise along channels, f / (‖f‖₂ + 1e-10); squared
   difference; 1×1 conv without bias to one channel (`lin0..lin4`, learned
   non-negative weights; the dropout before it is off in eval);
4. spatial mean per tap, sum over taps -> one distance per image pair.
Float32 with Precision.HIGHEST throughout.

Weights: two published files, registered with the weight manager here:
torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, only `features.*`
is used) and the v0.1 linear heads shipped with the `lpips` package
(`lpips/weights/v0.1/alex.pth`). `load_lpips()` fetches, converts and merges
both. Variables: {'params': {'features_{0,3,6,8,10}': {kernel, bias},
'lin{0..4}': {kernel}}} (conv names follow torchvision's `features` indices).
"""
from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.nets import weights

CONVERTER_VERSION = 1  # Bump when a converter's output changes.

# lpips ScalingLayer constants (lpips/lpips.py).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor eps.
# torchvision AlexNet features: (index, out channels, kernel, stride, pad);
# each conv is followed by ReLU.
_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1),
          (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
# features[2] and features[5] are 3x3/s2 max pools (before convs 3 and 6).
_POOL_BEFORE = (3, 6)
CHANNELS = tuple(c[1] for c in _CONVS)
_HI = jax.lax.Precision.HIGHEST

ALEXNET_WEIGHTS = 'alexnet-owt-7be5be79.pth'
LIN_WEIGHTS = 'lpips-v0.1-alex-lin.pth'


def register_weights() -> None:
  """Registers the two weight files with `jaxl2i.nets.weights`."""
  weights.register(weights.WeightFile(
      name=ALEXNET_WEIGHTS,
      # URL as in torchvision/models/alexnet.py (AlexNet_Weights.IMAGENET1K_V1)
      url='https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
      # The PyTorch hub file-name prefix of the sha256 (full digest unknown
      # offline).
      sha256='7be5be79',
      how_to_get=("It is torchvision's ImageNet AlexNet "
                  '(torchvision.models.AlexNet_Weights.IMAGENET1K_V1).'),
      converter='jaxl2i.nets.lpips:convert_alexnet',
      short_name='alexnet'))
  weights.register(weights.WeightFile(
      name=LIN_WEIGHTS,
      url=('https://github.com/richzhang/PerceptualSimilarity/raw/master/'
           'lpips/weights/v0.1/alex.pth'),
      # sha256 of lpips/weights/v0.1/alex.pth as shipped in the lpips 0.1.4
      # pip package.
      sha256=('df73285e35b22355a2df87cdb6b70b34'
              '3713b667eddbda73e1977e0c860835c0'),
      size_hint=6009,
      how_to_get=('It ships with the lpips pip package as '
                  'lpips/weights/v0.1/alex.pth (pip install lpips==0.1.4).'),
      converter='jaxl2i.nets.lpips:convert_lin_heads',
      short_name='lpips_alex_lin'))


register_weights()


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features` up to the last ReLU; returns 5 taps."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """x: [B, H, W, 3] float32 (scaled) -> list of [B, h_l, w_l, C_l]."""
    taps = []
    for idx, ch, k, s, p in _CONVS:
      if idx in _POOL_BEFORE:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
      x = nn.Conv(ch, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                  precision=_HI, name=f'features_{idx}')(x)
      x = nn.relu(x)
      taps.append(x)
    return taps


def _unit_normalize(f: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True))
  return f / (norm + NORM_EPS)


class LPIPS(nn.Module):
  """LPIPS v0.1 AlexNet distance between two image batches."""

  @nn.compact
  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """x0, x1: [B, H, W, 3] float in [-1, 1] -> [B] float32 distances.

    H, W >= 31 (the smallest input for which every AlexNet tap is
    non-empty).
    """
    b = x0.shape[0]
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    x = jnp.concatenate([x0, x1], axis=0).astype(jnp.float32)
    x = (x - shift) / scale
    taps = AlexNetFeatures(name='net')(x)
    total = jnp.zeros((b,), jnp.float32)
    for l, f in enumerate(taps):
      f = _unit_normalize(f)
      diff = jnp.square(f[:b] - f[b:])
      d = nn.Conv(1, (1, 1), use_bias=False, precision=_HI,
                  name=f'lin{l}')(diff)
      total = total + jnp.mean(d, axis=(1, 2, 3))
    return total


def init_variables(seed: int = 0) -> dict:
  """Random variables with the LPIPS shapes (numpy, no compilation).

  Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1²); the linear heads are made
  non-negative like the trained ones. For tests and offline smoke runs only.
  """
  rng = np.random.default_rng(seed)
  net, in_ch = {}, 3
  for idx, ch, k, _, _ in _CONVS:
    fan_in = in_ch * k * k
    net[f'features_{idx}'] = {
        'kernel': (rng.normal(size=(k, k, in_ch, ch)) /
                   np.sqrt(fan_in)).astype(np.float32),
        'bias': (0.1 * rng.normal(size=(ch,))).astype(np.float32)}
    in_ch = ch
  params = {'net': net}
  for l, ch in enumerate(CHANNELS):
    params[f'lin{l}'] = {'kernel': np.abs(
        rng.normal(size=(1, 1, ch, 1)) / np.sqrt(ch)).astype(np.float32)}
  return {'params': params}


def convert_alexnet(state_dict: dict[str, np.ndarray]) -> dict:
  """AlexNet weights (numpy state_dict) -> {'params': {'net': ...}}.

  Accepts torchvision keys (`features.{i}.weight|bias`; the classifier is
  ignored) or those of an `lpips.LPIPS` module (`net.slice{k}.{i}.weight`).
  Conv (O, I, kh, kw) -> (kh, kw, I, O).
  """
  net = {}
  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[0] == 'features' and len(parts) == 3:
      idx, leaf = int(parts[1]), parts[2]
    elif (parts[0] == 'net' and len(parts) == 4 and
          parts[1].startswith('slice')):
      idx, leaf = int(parts[2]), parts[3]
    else:
      continue
    v = np.asarray(value, np.float32)
    layer = net.setdefault(f'features_{idx}', {})
    if leaf == 'weight':
      layer['kernel'] = v.transpose(2, 3, 1, 0)
    elif leaf == 'bias':
      layer['bias'] = v
    else:
      raise ValueError(f'Unexpected AlexNet weight {key!r}')
  expected = {f'features_{c[0]}' for c in _CONVS}
  if set(net) != expected or any(len(v) != 2 for v in net.values()):
    raise ValueError(f'AlexNet state_dict incomplete: got {sorted(net)}')
  for idx, ch, k, _, _ in _CONVS:
    shape = net[f'features_{idx}']['kernel'].shape
    if shape[0] != k or shape[3] != ch:
      raise ValueError(f'features.{idx}: unexpected kernel shape {shape}')
  return {'params': {'net': net}}


def convert_lin_heads(state_dict: dict[str, np.ndarray]) -> dict:
  """LPIPS v0.1 linear heads -> {'params': {'lin{l}': {'kernel'}}}.

  Reads `lin{l}.model.1.weight` (1, C, 1, 1) -> kernel (1, 1, C, 1); other
  keys (e.g. a full lpips.LPIPS state_dict's trunk) are ignored.
  """
  params = {}
  for l, ch in enumerate(CHANNELS):
    key = f'lin{l}.model.1.weight'
    if key not in state_dict:
      raise ValueError(f'LPIPS heads: missing {key!r}')
    v = np.asarray(state_dict[key], np.float32)
    if v.shape != (1, ch, 1, 1):
      raise ValueError(f'{key}: shape {v.shape} != {(1, ch, 1, 1)}')
    params[f'lin{l}'] = {'kernel': v.transpose(2, 3, 1, 0)}
  return {'params': params}


def convert_lpips(state_dict: dict[str, np.ndarray]) -> dict:
  """A full `lpips.LPIPS(net='alex')` state_dict -> Flax variables."""
  trunk = convert_alexnet(state_dict)['params']
  heads = convert_lin_heads(state_dict)['params']
  return {'params': {**trunk, **heads}}


def load_lpips(*, download: bool = True) -> dict:
  """Pretrained LPIPS variables through the weight manager.

  Raises:
    weights.WeightsUnavailableError: a file is missing and cannot be fetched.
  """
  trunk = weights.load_params(ALEXNET_WEIGHTS, download=download)['params']
  heads = weights.load_params(LIN_WEIGHTS, download=download)['params']
  return {'params': {**trunk, **heads}}


def lpips_fn(variables: dict) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Jitted (x0, x1) [B, H, W, 3] in [-1, 1] -> [B] LPIPS distances."""
  variables = jax.tree.map(jnp.asarray, variables)
  return jax.jit(functools.partial(LPIPS().apply, variables))
