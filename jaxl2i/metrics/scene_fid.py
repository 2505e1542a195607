"""SceneFID: FID over object crops (OC-GAN's metric, LAMA's protocol).

Protocol (`shared/reference/metrics.md` §2, LAMA `utils/extract_cropped_objects
.py` and `test.py`): every valid (non-padding) object box is cropped from the
image and the crop is resized to 224×224 with PIL bicubic; FID is computed
between the real crops and the generated crops. LAMA converts the normalised
box to pixels differently on the two sides, and we keep that:
real crops take the `ceil` of each pixel corner, generated crops truncate
with `int()` (= floor for the non-negative corners): `rounding='ceil'` /
`'floor'`.

`crop_objects` reproduces `PIL.Image.crop(box).resize((224, 224), BICUBIC)`
with fixed shapes, as two dense separable resampling matrices per box: the
Keys cubic kernel (a = −0.5) evaluated at PIL's sample positions
(`(o + 0.5)·scale` inside the crop), the kernel widened by the scale factor
when shrinking (PIL's antialiasing), taps outside the crop dropped and the
weights renormalised, exactly as PIL builds its coefficients. For uint8 images
we also mimic PIL's 8-bit path: horizontal pass, round-half-up and clip to
[0, 255], vertical pass, round and clip again. For float images no
quantisation or clipping is done (like PIL's mode 'F'). Against Pillow 13 the
float path agrees to ~2e-3 on the [0, 255] scale and the uint8 path to one
level in >99% of the pixels (rarely two): Pillow's own coefficients are less
precise (its mode-'F' result deviates from a float64 evaluation of the same
formula by that amount), which flips roundings of values within ~1e-3 of .5.
One difference: PIL pads a box reaching outside the image with black; we clip
boxes to the image.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import parallel
from jaxl2i.metrics import fid as fid_lib

CROP_SIZE = 224  # LAMA / OC-GAN crop resolution.
_BICUBIC_A = -0.5  # PIL's bicubic kernel parameter.
_BICUBIC_SUPPORT = 2.0


def _bicubic(x: jax.Array) -> jax.Array:
  """Keys cubic convolution kernel with a = −0.5 (PIL's `bicubic_filter`)."""
  a = _BICUBIC_A
  x = jnp.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return jnp.where(x < 1.0, near, jnp.where(x < 2.0, far, 0.0))


def _resample_matrix(lo: jax.Array, hi: jax.Array, in_size: int,
                     out_size: int) -> jax.Array:
  """[out_size, in_size] weights resizing pixels [lo, hi) to out_size.

  lo, hi: scalar int32 pixel bounds with 0 <= lo < hi <= in_size.
  """
  n = (hi - lo).astype(jnp.float32)
  scale = n / out_size
  filterscale = jnp.maximum(scale, 1.0)
  centers = lo + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale
  pix = jnp.arange(in_size, dtype=jnp.float32) + 0.5
  w = _bicubic((pix[None, :] - centers[:, None]) / filterscale)
  inside = (jnp.arange(in_size) >= lo) & (jnp.arange(in_size) < hi)
  w = jnp.where(inside[None, :], w, 0.0)
  return w / jnp.sum(w, axis=1, keepdims=True)


def pixel_boxes(boxes: jax.Array, height: int, width: int,
                rounding: str) -> jax.Array:
  """Normalised (x0, y0, x1, y1) -> int32 pixel (x0, y0, x1, y1), clipped.

  Args:
    boxes: [..., 4] float normalised corners.
    height, width: image size in pixels.
    rounding: 'ceil' (LAMA real crops) or 'floor' (LAMA generated crops,
      Python `int()` of non-negative values).

  The products corner × size are float32, as in LAMA's torch tensors (so
  0.1 × 40 gives exactly 4, not 4.0000001).

  Returns:
    [..., 4] int32 with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    (degenerate boxes are widened to one pixel).
  """
  if rounding not in ('ceil', 'floor'):
    raise ValueError(f"rounding must be 'ceil' or 'floor', got {rounding!r}")
  rnd = jnp.ceil if rounding == 'ceil' else jnp.floor
  size = jnp.array([width, height, width, height], jnp.float32)
  px = rnd(jnp.asarray(boxes, jnp.float32) * size).astype(jnp.int32)
  x0 = jnp.clip(px[..., 0], 0, width - 1)
  y0 = jnp.clip(px[..., 1], 0, height - 1)
  x1 = jnp.clip(px[..., 2], x0 + 1, width)
  y1 = jnp.clip(px[..., 3], y0 + 1, height)
  return jnp.stack([x0, y0, x1, y1], axis=-1)


def _round_clip_u8(x: jax.Array) -> jax.Array:
  return jnp.clip(jnp.floor(x + 0.5), 0.0, 255.0)


def crop_objects(images: jax.Array, boxes: jax.Array, mask: jax.Array,
                 size: int = CROP_SIZE,
                 rounding: str = 'floor') -> tuple[jax.Array, jax.Array]:
  """Crops every object box and resizes it to size×size (PIL bicubic).

  Jit-able with `size` and `rounding` static; shapes are fixed, padded slots
  still produce a (meaningless) crop and are flagged in `valid`.

  Args:
    images: [B, H, W, C] uint8 in [0, 255] or float (any range).
    boxes: [B, O, 4] float normalised (x0, y0, x1, y1).
    mask: [B, O] bool/0-1 object validity.
    size: output crop side.
    rounding: pixel-corner rounding, see `pixel_boxes`.

  Returns:
    crops: [B*O, size, size, C], uint8 for uint8 images (PIL's 8-bit
      rounding), else float32.
    valid: [B*O] bool.
  """
  is_u8 = images.dtype == jnp.uint8
  b, h, w, c = images.shape
  o = boxes.shape[1]
  px = pixel_boxes(boxes, h, w, rounding).reshape(b * o, 4)
  wx = jax.vmap(lambda lo, hi: _resample_matrix(lo, hi, w, size))(
      px[:, 0], px[:, 2])  # [B*O, size, W]
  wy = jax.vmap(lambda lo, hi: _resample_matrix(lo, hi, h, size))(
      px[:, 1], px[:, 3])  # [B*O, size, H]
  img = jnp.repeat(images.astype(jnp.float32), o, axis=0)  # [B*O, H, W, C]
  hp = jax.lax.Precision.HIGHEST
  # PIL order: horizontal pass first, then vertical.
  rows = jnp.einsum('npw,nhwc->nhpc', wx, img, precision=hp)
  if is_u8:
    rows = _round_clip_u8(rows)
  out = jnp.einsum('nqh,nhpc->nqpc', wy, rows, precision=hp)
  if is_u8:
    out = _round_clip_u8(out).astype(jnp.uint8)
  valid = jnp.asarray(mask).astype(bool).reshape(b * o)
  return out, valid


class SceneFID:
  """Accumulates real and generated object-crop features; `result()` = FID.

  `feature_fn` maps crops [N, size, size, 3] (uint8 when the images are
  uint8, as LAMA feeds saved PNG crops) to [N, dim] features, e.g. the jitted
  FID Inception of `jaxl2i.nets.inception_fid` (which resizes 224 -> 299 as
  the TF graph does). Call `update_real` once per real image batch and
  `update_fake` for every generated batch (LAMA: 5 samples per layout).
  """

  def __init__(self, feature_fn: Callable[[jax.Array], jax.Array],
               dim: int = 2048, size: int = CROP_SIZE):
    self.feature_fn = feature_fn
    self.size = size
    self.real = fid_lib.FeatureStats(dim)
    self.fake = fid_lib.FeatureStats(dim)
    self._crop = jax.jit(crop_objects, static_argnames=('size', 'rounding'))

  def _update(self, stats: fid_lib.FeatureStats, images, boxes, mask,
              rounding: str) -> None:
    crops, valid = self._crop(images, boxes, mask, size=self.size,
                              rounding=rounding)
    # to_host gathers every host's rows of global (multi-host) arrays.
    valid = parallel.to_host(valid)
    if valid.any():
      stats.update(parallel.to_host(self.feature_fn(crops)), valid)

  def update_real(self, images: jax.Array, boxes: jax.Array,
                  mask: jax.Array) -> None:
    """Real images [B,H,W,3], boxes [B,O,4], mask [B,O] (LAMA: ceil)."""
    self._update(self.real, images, boxes, mask, 'ceil')

  def update_fake(self, images: jax.Array, boxes: jax.Array,
                  mask: jax.Array) -> None:
    """Generated images, same layout arrays (LAMA: int() truncation)."""
    self._update(self.fake, images, boxes, mask, 'floor')

  def result(self) -> float:
    """FID between the accumulated real and generated crop features."""
    return fid_lib.fid_from_stats(self.real, self.fake)
