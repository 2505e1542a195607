"""Cascaded Refinement Network (Chen & Koltun, ICCV 2017) in Flax.

Facts: reference/crn.md §1-3 (official `CQFIO/PhotographicImageSynthesis`,
`demo_256p.py` / `demo_512p.py` / `demo_1024p.py`, TensorFlow 1 + slim; its
tensors are NHWC like ours).

A cascade of refinement modules, coarse to fine, each at twice the
resolution of the previous one. Module i at h_i × w_i:

  inp = L_{h_i}                                      (first module)
  inp = concat(bilinear_up(F_{i-1}), L_{h_i})        (others; align_corners)
  F_i = lrelu(LN(conv3x3(lrelu(LN(conv3x3(inp))))))   no conv biases

with L_h the one-hot label map area-downsampled to h × w (2×2 average pools,
pitfall 5), LN a layer norm over H, W and C of each sample with per-channel
γ/β and eps 1e-12 (pitfall 7), lrelu max(0.2x, x). A linear 1×1 conv with a
bias maps the last F to 3k channels, then (x + 1) / 2 · 255; image u takes
channels (u, k + u, 2k + u) (pitfall 9). Outputs are not clipped.

The first module works at resolution / 2^(n-1) for n modules, i.e. 4 × 8 for
the reference's 256×512 ... 1024×2048 cascades; the width follows the input
(4 × 4 for square maps). Parameters are named by module height as the
reference's scopes are (`g_4` … `g_1024`, head `g_<H>_head` for the
reference's `g_<H>_conv100`), so a 512p cascade loads a 256p checkpoint by
path except `^g_512` (pitfall 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

LAYER_NORM_EPS = 1e-12   # tf.contrib.layers.layer_norm (reference §2)
LRELU_SLOPE = 0.2        # lrelu(x) = max(0.2x, x) (reference §2)
START_HEIGHT = 4         # M0 works at 4×8 (reference §1)
# Output mapping (reference §3): (x + 1) / 2 · 255.
OUTPUT_SCALE = 255.0


def reference_channels(resolution: int) -> tuple[int, ...]:
  """d_i of the official cascade from 4 × 8 up to `resolution` rows.

  demo_*.py: dim = 512 if sp >= 128 else 1024, except 128 at sp = 512 and
  32 at sp = 1024 (reference §1): 256p → (1024,)*5 + (512,)*2, 512p adds
  128, 1024p adds 128 and 32.
  """
  n = int(np.log2(resolution / START_HEIGHT)) + 1
  if n < 1 or START_HEIGHT * 2**(n - 1) != resolution:
    raise ValueError(f'resolution {resolution} is not 4·2^i')
  special = {512: 128, 1024: 32}
  heights = [START_HEIGHT * 2**i for i in range(n)]
  return tuple(special.get(h, 512 if h >= 128 else 1024) for h in heights)


def lrelu(x: Array) -> Array:
  return jnp.maximum(LRELU_SLOPE * x, x)


def area_downsample(x: Array) -> Array:
  """[B,H,W,C] -> [B,H/2,W/2,C]: tf.image.resize_area by exactly 2 = 2×2
  average pooling (pitfall 5); H and W must be even."""
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f'area_downsample needs even sizes, got {x.shape}')
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def label_pyramid(labels: Array, levels: int) -> list[Array]:
  """[labels, down(labels), down(down(labels)), …]: `levels` maps, finest
  first, each the area average of the previous (reference §2)."""
  out = [labels]
  for _ in range(levels - 1):
    out.append(area_downsample(out[-1]))
  return out


def _align_corners_axis(x: Array, size: int, axis: int) -> Array:
  """Linear interpolation along `axis` to `size` samples, corners aligned:
  output i reads input position i·(n − 1)/(size − 1) (pitfall 6)."""
  n = x.shape[axis]
  if n == size:
    return x
  scale = (n - 1) / (size - 1) if size > 1 else 0.0
  pos = np.arange(size, dtype=np.float64) * scale
  lo = np.minimum(np.floor(pos).astype(np.int32), max(n - 2, 0))
  hi = np.minimum(lo + 1, n - 1)
  frac = (pos - lo).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = size
  frac = jnp.asarray(frac.reshape(shape), x.dtype)
  a = jnp.take(x, lo, axis=axis)
  b = jnp.take(x, hi, axis=axis)
  return a + (b - a) * frac


def upsample_bilinear_align_corners(x: Array, size: Sequence[int]) -> Array:
  """[B,h,w,C] -> [B,H,W,C] as tf.image.resize_bilinear(align_corners=True).

  jax.image.resize uses half-pixel centres, which is a different map; the
  interpolation is written out (separable, two gathers per axis).
  """
  x = _align_corners_axis(x, int(size[0]), axis=1)
  return _align_corners_axis(x, int(size[1]), axis=2)


def layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
  """slim.layer_norm: statistics over H, W, C of each sample, γ (init 1) and
  β (init 0) per channel, eps 1e-12; two-pass variance as tf.nn.moments
  (E[x²] − E[x]² loses the variance of large activations in float32)."""
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, reduction_axes=(1, 2, 3),
                      feature_axes=-1, use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


def _conv(features: int, kernel: int, use_bias: bool, dtype, name: str):
  """slim.conv2d: stride 1, SAME, Xavier-uniform weights, zero biases."""
  return nn.Conv(features, (kernel, kernel), padding='SAME',
                 use_bias=use_bias,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.zeros, dtype=dtype,
                 param_dtype=jnp.float32, name=name)


class RefinementModule(nn.Module):
  """One module M_i: (upsample + concat) → 2 × (conv3x3, LN, lrelu)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, labels: Array, prev: Array | None = None) -> Array:
    """labels: [B,h,w,P]; prev: F_{i-1} [B,h/2,w/2,d] or None (M0).

    Returns:
      F_i [B,h,w,features] in `dtype`.
    """
    x = labels.astype(self.dtype)
    if prev is not None:
      up = upsample_bilinear_align_corners(prev, labels.shape[1:3])
      x = jnp.concatenate([up.astype(self.dtype), x], axis=-1)  # F first
    for i in (1, 2):
      x = _conv(self.features, 3, False, self.dtype, f'conv{i}')(x)
      x = lrelu(layer_norm(self.dtype, f'norm{i}')(x))
    return x


class CRN(nn.Module):
  """The cascade: one-hot label map -> k images.

  Attributes:
    resolution: output height H (the input's height must equal it).
    channels: d_i of the modules, coarse to fine (`reference_channels`).
    num_images: k, images produced at once (head of 3k channels).
    remat: rematerialise each module in the backward pass (`nn.remat`):
      only module inputs/outputs are kept, the memory trade of 1024×2048.
    dtype: compute dtype; parameters float32, the output float32.
  """
  resolution: int
  channels: Sequence[int]
  num_images: int = 1
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, labels: Array) -> Array:
    """labels: [B,H,W,P] one-hot (float) with H = resolution and H, W
    divisible by 2^(n-1).

    Returns:
      images [B,k,H,W,3] float32, nominally in [0, 255] (not clipped).
    """
    n = len(self.channels)
    b, h, w, _ = labels.shape
    step = 2**(n - 1)
    if h != self.resolution or h % step or w % step:
      raise ValueError(
          f'CRN of resolution {self.resolution} with {n} modules needs a '
          f'label map of height {self.resolution} and width divisible by '
          f'{step}; got {h}x{w}')
    pyramid = label_pyramid(labels.astype(jnp.float32), n)[::-1]
    block = nn.remat(RefinementModule) if self.remat else RefinementModule
    x = None
    for level, features in zip(pyramid, self.channels):
      x = block(features, dtype=self.dtype,
                name=f'g_{level.shape[1]}')(level, x)
    k = self.num_images
    out = _conv(3 * k, 1, True, self.dtype, f'g_{h}_head')(x)
    out = (out.astype(jnp.float32) + 1.0) / 2.0 * OUTPUT_SCALE
    # Channel c·k + u is colour c of image u (the reference's transpose,
    # split into 3 groups of k and concat on the last axis).
    return out.reshape(b, h, w, 3, k).transpose(0, 4, 1, 2, 3)
