"""FID InceptionV3 (pytorch-fid's port of the TF 2015-12-05 graph) in Flax.

Architecture as `pytorch_fid.inception.InceptionV3([3])` with
`use_fid_inception=True` (reference/metrics.md §1.2): BasicConv2d = conv (no
bias) -> BatchNorm(eps 1e-3) -> ReLU; Mixed_5b..d FIDInceptionA, Mixed_6a
InceptionB, Mixed_6b..e FIDInceptionC, Mixed_7a InceptionD, Mixed_7b
FIDInceptionE_1, Mixed_7c FIDInceptionE_2; the 3x3/s1/p1 pool branches average
without counting padding, except Mixed_7c which max-pools. Output: the 2048-d
global average (pool3). The 1008-way classifier is not part of the features.

Input convention (as pytorch-fid's forward with its defaults): images
[B, H, W, 3] float in [0, 1] (or uint8 in [0, 255], divided by 255 first);
bilinearly resized to 299x299 with half-pixel centres (PyTorch
`align_corners=False`) and no antialiasing, in both directions; then mapped to
[-1, 1] by 2x - 1. Everything runs in float32 with Precision.HIGHEST, whatever
the global precision or dtype policy.

Variables: {'params': conv kernels and BN scale/bias, 'batch_stats': BN mean
and var}; module names follow the PyTorch ones (Mixed_5b/branch1x1/conv ...).
"""
from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.nets import weights

CONVERTER_VERSION = 1  # Bump when convert_inception's output changes.
WEIGHTS_NAME = 'pt_inception-2015-12-05-6726825d.pth'
FEATURE_DIM = 2048
# pytorch-fid's `--dims`: the features are the global average of the output
# of block 0 (first max-pool, 64 ch), 1 (second max-pool, 192 ch), 2
# (Mixed_6e, 768 ch) or 3 (pool3, 2048 ch; the standard FID).
DIMS = (64, 192, 768, 2048)
INPUT_SIZE = 299
BN_EPS = 1e-3  # TF Inception BatchNorm epsilon (reference/metrics.md §1.2).
_HI = jax.lax.Precision.HIGHEST


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm (running stats) -> ReLU, float32."""
  features: int
  kernel: int | tuple[int, int]
  stride: int = 1
  padding: int | tuple[int, int] = 0

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=self.stride,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                dtype=jnp.float32, param_dtype=jnp.float32, precision=_HI,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=BN_EPS,
                     dtype=jnp.float32, param_dtype=jnp.float32,
                     name='bn')(x)
    return nn.relu(x)


def _avg3(x):
  # TF average pooling excludes the zero padding from the count.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max3(x, stride=1, pad=1):
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """FIDInceptionA (35x35 grid)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, 1, name='branch1x1')(x)
    b5 = BasicConv(48, 1, name='branch5x5_1')(x)
    b5 = BasicConv(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = BasicConv(64, 1, name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, 1, name='branch_pool')(_avg3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """InceptionB (35 -> 17 reduction)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, 3, stride=2, name='branch3x3')(x)
    bd = BasicConv(64, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, 3, stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  """FIDInceptionC (17x17 grid, factorised 7x7)."""
  c7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.c7
    b1 = BasicConv(192, 1, name='branch1x1')(x)
    b7 = BasicConv(c7, 1, name='branch7x7_1')(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv(c7, 1, name='branch7x7dbl_1')(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, 1, name='branch_pool')(_avg3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """InceptionD (17 -> 8 reduction)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, 1, name='branch3x3_1')(x)
    b3 = BasicConv(320, 3, stride=2, name='branch3x3_2')(b3)
    b7 = BasicConv(192, 1, name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, 3, stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """FIDInceptionE_1 (pool='avg') / FIDInceptionE_2 (pool='max')."""
  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, 1, name='branch1x1')(x)
    b3 = BasicConv(384, 1, name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
    ], axis=-1)
    bd = BasicConv(448, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
    ], axis=-1)
    # The TF graph max-pools in Mixed_7c (pytorch-fid FIDInceptionE_2).
    pooled = _max3(x) if self.pool == 'max' else _avg3(x)
    bp = BasicConv(192, 1, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of PyTorch bilinear, align_corners=False.

  Source coordinate (o + 0.5) * n_in / n_out - 0.5, clamped below at 0; the
  neighbour index is clamped at n_in - 1. No antialiasing. The arithmetic
  follows PyTorch's CPU kernel for float32 images: float32 scale, and the
  coordinate rounded to float32 once after the multiply-add (as its fused
  multiply-add does). Plain float64 coordinates differ from torch's weights by
  up to ~6e-5 for sizes near 300; these match them exactly (tested).
  """
  f32 = np.float32
  scale = np.float64(f32(n_in) / f32(n_out))
  src = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(f32)
  src = np.maximum(src, f32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  lam = src - i0.astype(f32)
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), i0), f32(1.0) - lam)
  np.add.at(m, (np.arange(n_out), i1), lam)
  return m


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resizes [B, H, W, C] float32 like torch F.interpolate(bilinear, False)."""
  h, w = x.shape[1:3]
  if (h, w) == tuple(size):
    return x
  mh = jnp.asarray(_bilinear_matrix(h, size[0]))
  mw = jnp.asarray(_bilinear_matrix(w, size[1]))
  x = jnp.einsum('oh,bhwc->bowc', mh, x, precision=_HI)
  return jnp.einsum('pw,bowc->bopc', mw, x, precision=_HI)


def preprocess(images: jax.Array, resize_input: bool = True) -> jax.Array:
  """[B, H, W, 3] float [0, 1] or uint8 -> [B, 299, 299, 3] float32 [-1, 1]."""
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  if resize_input:
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  return 2.0 * x - 1.0


class InceptionV3FID(nn.Module):
  """FID Inception returning pool3 features.

  Attributes:
    resize_input: resize to 299x299 first (pytorch-fid default True).
    normalize_input: map [0, 1] to [-1, 1] (pytorch-fid default True); if
      False the input must already be the network input in [-1, 1].
    dims: feature size, one of DIMS (pytorch-fid `--dims`); the network
      stops at that block. Only 2048 gives FIDs comparable to published ones.
  """
  resize_input: bool = True
  normalize_input: bool = True
  dims: int = FEATURE_DIM

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: [B, H, W, 3] (see module docstring) -> [B, dims] float32."""
    if self.dims not in DIMS:
      raise ValueError(f'dims={self.dims}: use one of {DIMS}')
    pool = lambda x: jnp.mean(x, axis=(1, 2))
    if self.normalize_input:
      x = preprocess(images, self.resize_input)
    else:
      x = images.astype(jnp.float32)
      if self.resize_input:
        x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
    x = BasicConv(32, 3, stride=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, 3, name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max3(x, 2, 0)
    if self.dims == 64:
      return pool(x)
    x = BasicConv(80, 1, name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, 3, name='Conv2d_4a_3x3')(x)
    x = _max3(x, 2, 0)
    if self.dims == 192:
      return pool(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, name=name)(x)
    if self.dims == 768:
      return pool(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    return pool(x)


def init_variables(seed: int = 0) -> dict:
  """Random variables (He-normal kernels, BN identity), numpy float32."""
  return weights.random_variables(variable_shapes(), seed)


@functools.cache
def variable_shapes() -> dict:
  """Variables' ShapeDtypeStructs via jax.eval_shape (no compute; cached)."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3FID().init, jax.random.key(0), x)


def convert_inception(state_dict: dict[str, np.ndarray]) -> dict:
  """pytorch-fid state_dict (numpy) -> {'params', 'batch_stats'} (float32).

  Maps `<path>.conv.weight` (O, I, kh, kw) -> params/<path>/conv/kernel
  (kh, kw, I, O); `<path>.bn.{weight,bias}` -> params/<path>/bn/{scale,bias};
  `<path>.bn.running_{mean,var}` -> batch_stats/<path>/bn/{mean,var}. The
  classifier (`fc.*`) and `num_batches_tracked` are dropped. Checks that every
  variable of the Flax model is set with the right shape.
  """
  flat = {}
  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[0] == 'fc' or parts[-1] == 'num_batches_tracked':
      continue
    path, layer, leaf = '/'.join(parts[:-2]), parts[-2], parts[-1]
    v = np.asarray(value, np.float32)
    if layer == 'conv' and leaf == 'weight':
      flat[f'params/{path}/conv/kernel'] = v.transpose(2, 3, 1, 0)
    elif layer == 'bn' and leaf in ('weight', 'bias'):
      name = 'scale' if leaf == 'weight' else 'bias'
      flat[f'params/{path}/bn/{name}'] = v
    elif layer == 'bn' and leaf in ('running_mean', 'running_var'):
      flat[f'batch_stats/{path}/bn/{leaf[len("running_"):]}'] = v
    else:
      raise ValueError(f'Unexpected FID Inception weight {key!r}')
  _check_against(flat, weights.flatten(variable_shapes()))
  return weights.unflatten(flat)


def _check_against(flat: dict, expected: dict) -> None:
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing or extra:
    raise ValueError(f'state_dict does not match the FID Inception: missing '
                     f'{missing[:5]}..., unexpected {extra[:5]}...')
  for k, v in expected.items():
    if flat[k].shape != tuple(v.shape):
      raise ValueError(f'{k}: shape {flat[k].shape} != {v.shape}')


@functools.cache
def _jitted(dims: int):
  """One jitted network and preprocessing per process and `dims`: every
  inception_fn shares their compilation cache (the variables are arguments).
  """
  network = jax.jit(InceptionV3FID(resize_input=False, normalize_input=False,
                                   dims=dims).apply)
  return network, jax.jit(preprocess)


def inception_fn(variables: dict, dims: int = FEATURE_DIM
                 ) -> Callable[[jax.Array], jax.Array]:
  """Returns images [B, H, W, 3] -> features [B, dims] float32 (pool3 for
  the default 2048; see InceptionV3FID.dims).

  Resizing and the network are jitted separately, so inputs of different
  sizes recompile only the cheap resize; the network compiles once per batch
  size. Images follow the module docstring's convention.
  """
  if dims not in DIMS:
    raise ValueError(f'dims={dims}: use one of {DIMS}')
  variables = jax.tree.map(jnp.asarray, variables)
  network, prep = _jitted(dims)

  def features(images: jax.Array) -> jax.Array:
    return network(variables, prep(images))

  return features


def load_inception(allow_random: bool = False, *,
                   download: bool = True) -> tuple[dict, bool]:
  """Loads the FID Inception variables through the weight manager.

  Args:
    allow_random: when the real weights are unavailable, return random-init
      variables instead of raising. FIDs computed with them are NOT real FIDs
      and must be labelled as such by the caller.
    download: allow downloading (see weights.fetch).

  Returns:
    (variables, is_random).

  Raises:
    weights.WeightsUnavailableError: unavailable and allow_random is False.
  """
  return weights.load_or_random(WEIGHTS_NAME, init_variables,
                                allow_random=allow_random, download=download)
