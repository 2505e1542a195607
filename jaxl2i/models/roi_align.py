"""ROIAlign in JAX (legacy maskrcnn-benchmark / torchvision `aligned=False`).

LAMA's discriminator pools 8×8 object features with the non-aligned ROIAlign
of maskrcnn-benchmark (`model/roi_layers/roi_align.py` of ZejianLi/LAMA),
numerically `torchvision.ops.roi_align(..., aligned=False)`:

* the box (x0, y0, x1, y1) is scaled by `spatial_scale` with no −0.5 offset;
  its size is clamped to ≥ 1 feature pixel;
* each of the ph×pw bins averages gh×gw bilinear samples at
  start + (i + 0.5)·bin/g, where g = `sampling_ratio` if > 0, else the
  adaptive ceil(roi_size / pooled_size) per box;
* a sample outside [−1, size] reads 0; otherwise coordinates are clamped to
  ≥ 0 and the upper neighbour to size − 1.

Static shapes: bilinear sampling is separable, so the pooled features are
Ay · F · Axᵀ with per-box interpolation matrices Ay [ph, H] and Ax [pw, W]
that already contain the bin averages. The adaptive grid is realised by a
static maximum number of samples per bin (`max_samples`, default
ceil(size / pooled), enough for any box inside the feature map) with the
unused samples masked out; boxes whose adaptive grid would exceed it use
`max_samples` samples. The op is jit-able and differentiable with respect to
the features (and the boxes, almost everywhere).
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def _axis_weights(start: Array, end: Array, pooled: int, size: int,
                  sampling_ratio: int, max_samples: int) -> Array:
  """Interpolation matrices along one axis.

  Args:
    start, end: [N] box borders in feature coordinates.
    pooled: number of output bins.
    size: feature-map length along this axis.
    sampling_ratio: fixed samples per bin (> 0) or 0 for adaptive.
    max_samples: static bound of samples per bin (adaptive case).

  Returns:
    [N, pooled, size] float32: bin-averaged bilinear weights.
  """
  length = jnp.maximum(end - start, 1.0)
  bin_size = length / pooled
  if sampling_ratio > 0:
    grid = jnp.full_like(length, float(sampling_ratio))
    n_samples = sampling_ratio
  else:
    grid = jnp.clip(jnp.ceil(length / pooled), 1.0, float(max_samples))
    n_samples = max_samples
  i = jnp.arange(n_samples, dtype=jnp.float32)
  p = jnp.arange(pooled, dtype=jnp.float32)
  # [N, pooled, samples]
  pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None] +
         (i[None, None, :] + 0.5) * (bin_size / grid)[:, None, None])
  used = (i[None, None, :] < grid[:, None, None])
  inside = (pos >= -1.0) & (pos <= size)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos)
  at_end = low >= size - 1
  low = jnp.where(at_end, float(size - 1), low)
  high = jnp.where(at_end, low, low + 1.0)
  pos = jnp.where(at_end, low, pos)
  frac = pos - low
  keep = (used & inside).astype(jnp.float32) / grid[:, None, None]
  w_low = (1.0 - frac) * keep
  w_high = frac * keep
  onehot = lambda idx: jax.nn.one_hot(idx.astype(jnp.int32), size,
                                      dtype=jnp.float32)
  weights = (w_low[..., None] * onehot(low) +
             w_high[..., None] * onehot(high))
  return weights.sum(axis=2)


def roi_align(features: Array,
              boxes: Array,
              output_size: tuple[int, int] = (8, 8),
              spatial_scale: float = 1.0,
              sampling_ratio: int = 0,
              valid: Optional[Array] = None,
              max_samples: Optional[int] = None) -> Array:
  """Pools a fixed number of boxes per image (legacy, non-aligned ROIAlign).

  Args:
    features: [B, H, W, C] feature maps (NHWC).
    boxes: [B, O, 4] float boxes (x0, y0, x1, y1) in input (image) pixels;
      feature coordinates are boxes · spatial_scale.
    output_size: (ph, pw) bins.
    spatial_scale: feature size / image size (e.g. 1/2, 1/8).
    sampling_ratio: samples per bin along each axis; 0 = adaptive
      ceil(roi / bins) as in LAMA (`ROIAlign((8, 8), scale, 0)`).
    valid: optional [B, O] bool; invalid boxes return zeros.
    max_samples: static bound of the adaptive grid (default
      ceil(max(H, W) / min(ph, pw))).

  Returns:
    [B, O, ph, pw, C] pooled features in the dtype of `features`.
  """
  b, h, w, _ = features.shape
  ph, pw = output_size
  if max_samples is None:
    max_samples = max(1, math.ceil(max(h / ph, w / pw)))
  nb, o = boxes.shape[:2]
  if nb != b:
    raise ValueError(f'boxes batch {nb} != features batch {b}')
  flat = boxes.reshape(b * o, 4).astype(jnp.float32) * spatial_scale
  wy = _axis_weights(flat[:, 1], flat[:, 3], ph, h, sampling_ratio,
                     max_samples)
  wx = _axis_weights(flat[:, 0], flat[:, 2], pw, w, sampling_ratio,
                     max_samples)
  if valid is not None:
    wy = wy * valid.reshape(b * o, 1, 1).astype(jnp.float32)
  wy = wy.reshape(b, o, ph, h).astype(features.dtype)
  wx = wx.reshape(b, o, pw, w).astype(features.dtype)
  # Contract the longer spatial axis with the cheaper order: W then H.
  t = jnp.einsum('boqw,bhwc->boqhc', wx, features)
  return jnp.einsum('boph,boqhc->bopqc', wy, t)
