"""LAMA / LostGAN-V2 discriminator: image branch + ROIAlign object branch.

Port of `ResnetDiscriminator{64,128,256}`, `OptimizedBlock`, `ResBlockD`
and the `CombineDiscriminator*` box handling of `ZejianLi/LAMA`
`model/rcnn_discriminator.py` (facts in `reference/lama_lostgan.md` §4).

Every conv is SN with eps 1e-4 and a bias; heads and the projection
embedding are SN with eps 1e-12. ReZero gates α are clamped to [−1, 1]
(their own lr group in the trainer: names end in 'alpha'). LeakyReLU 0.01.

Static shapes instead of the reference's boolean filtering: every object slot
goes through both the small- and the large-box path (128/256) and the result
of its route is selected; slots that the reference drops (class 0, i.e.
padding and VG's `__image__` object, or `objects_mask` False) are returned
as 0 with `valid` False. The object loss must average over `valid` only.

Initialisation: orthogonal/zero-bias at 64 and 128; the 256 discriminator
never calls `init_parameter` in the reference, so it keeps PyTorch's defaults
(kaiming-uniform(√5) weights and uniform biases, embedding N(0, 1)).

Variables: 'params' and 'spectral_norm' (train: `mutable=['spectral_norm']`).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import layers
from jaxl2i.models import lama_layers as ll
from jaxl2i.models import roi_align as roi

Array = jax.Array
Dtype = Any

SLOPE = 0.01
ROI_SIZE = (8, 8)


def _inits(torch_default: bool, fan_in: int):
  """(kernel_init, bias_init) for a layer with the given fan_in."""
  if torch_default:
    return (layers.torch_default_conv_init(),
            layers.torch_default_bias_init(fan_in))
  return nn.initializers.orthogonal(), nn.initializers.zeros


class _Conv(nn.Module):
  """SN conv (eps 1e-4, bias) with the discriminator's initialisation."""
  features: int
  kernel: int
  torch_init: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, update_stats: bool) -> Array:
    k_init, b_init = _inits(self.torch_init,
                            x.shape[-1] * self.kernel * self.kernel)
    return ll.SNConv(self.features, self.kernel, use_bias=True,
                     eps=ll.SN_EPS_CONV, kernel_init=k_init, bias_init=b_init,
                     dtype=self.dtype, name='sn_conv')(
                         x, update_stats=update_stats)


class OptimizedBlock(nn.Module):
  """First block: α·pool(conv(LReLU(conv(x)))) + conv1×1(pool(x))."""
  out_ch: int
  downsample: bool
  torch_init: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv = lambda k, name: _Conv(self.out_ch, k, self.torch_init, self.dtype,
                                 name=name)
    h = conv(3, 'conv1')(x, update_stats=train)
    h = conv(3, 'conv2')(nn.leaky_relu(h, SLOPE), update_stats=train)
    sc = x
    if self.downsample:
      h, sc = ll.avg_pool2x(h), ll.avg_pool2x(sc)
    sc = conv(1, 'c_sc')(sc, update_stats=train)
    alpha = self.param('alpha', nn.initializers.zeros, ())
    return jnp.clip(alpha, -1.0, 1.0).astype(self.dtype) * h + sc


class ResBlockD(nn.Module):
  """clamp(α)·pool(conv(LReLU(conv(LReLU(x))))) + pool(conv1×1(x))."""
  out_ch: int
  downsample: bool
  torch_init: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv = lambda k, name: _Conv(self.out_ch, k, self.torch_init, self.dtype,
                                 name=name)
    h = conv(3, 'conv1')(nn.leaky_relu(x, SLOPE), update_stats=train)
    h = conv(3, 'conv2')(nn.leaky_relu(h, SLOPE), update_stats=train)
    if self.downsample:
      h = ll.avg_pool2x(h)
    sc = x
    if x.shape[-1] != self.out_ch or self.downsample:
      sc = conv(1, 'c_sc')(sc, update_stats=train)
      if self.downsample:
        sc = ll.avg_pool2x(sc)
    alpha = self.param('alpha', nn.initializers.zeros, ())
    return jnp.clip(alpha, -1.0, 1.0).astype(self.dtype) * h + sc


# Per resolution: image blocks (width multiplier, downsample); index of the
# x1 / x2 taps; image pooling; object blocks; ROI scales; small-box rule.
_IMG = {
    64: ((1, False), (2, False), (4, True), (8, True), (16, True)),
    128: ((1, True), (2, True), (4, True), (8, True), (8, True), (16, False)),
    256: ((1, True), (2, True), (4, True), (4, True), (8, True), (8, True),
          (16, False)),
}
_TAPS = {64: (2, None), 128: (1, 2), 256: (2, 3)}
# (first small-box block, shared block) widths; the final block's width.
_OBJ = {64: (None, None, 8), 128: (4, 8, 16), 256: (4, 8, 16)}
_SCALES = {64: (1 / 2, None), 128: (1 / 4, 1 / 8), 256: (1 / 8, 1 / 16)}


class LamaDiscriminator(nn.Module):
  """`CombineDiscriminator{64,128,256}` with fixed object slots.

  Attributes:
    resolution: 64, 128 or 256.
    num_classes: projection-embedding rows (184 COCO-Stuff, 179 VG).
    ch: base width (64).
    dtype: compute dtype; params float32.
  """
  resolution: int = 128
  num_classes: int = 184
  ch: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, boxes: Array, classes: Array,
               objects_mask: Array, *, train: bool):
    """Scores images and their objects.

    Args:
      images: [B, S, S, 3] in [-1, 1].
      boxes: [B, O, 4] normalised (x0, y0, x1, y1).
      classes: [B, O] int32 (0 = dropped, as in the reference).
      objects_mask: [B, O] bool.
      train: one SN power iteration (mutable 'spectral_norm') when True.

    Returns:
      d_img [B] float32, d_obj [B, O] float32 (0 where not valid),
      valid [B, O] bool = objects_mask & (classes != 0).
    """
    res = self.resolution
    if res not in _IMG:
      raise ValueError(f'resolution must be one of {sorted(_IMG)}')
    tinit = res == 256
    ch, dt = self.ch, self.dtype
    x = images.astype(dt)
    taps = []
    for i, (mult, down) in enumerate(_IMG[res]):
      block = (OptimizedBlock if i == 0 else ResBlockD)(
          ch * mult, down, tinit, dt, name=f'block{i + 1}')
      x = block(x, train=train)
      taps.append(x)
    x = nn.leaky_relu(x, SLOPE).astype(jnp.float32)
    pooled = jnp.sum(x, (1, 2)) if res == 256 else jnp.mean(x, (1, 2))
    head = lambda name, fan: ll.SNDense(
        1, use_bias=False,
        kernel_init=_inits(tinit, fan)[0], name=name)
    d_img = head('l_im', pooled.shape[-1])(pooled, update_stats=train)[:, 0]

    valid = objects_mask.astype(bool) & (classes != 0)
    px = boxes.astype(jnp.float32) * images.shape[1]
    i1, i2 = _TAPS[res]
    s_small, s_large = _SCALES[res]
    w_small, w_shared, w_last = _OBJ[res]
    if res == 64:
      feat = roi.roi_align(taps[i1], px, ROI_SIZE, s_small, 0, valid)
    else:
      shared = ResBlockD(ch * w_shared, False, tinit, dt, name='block_obj_b')
      fs = ResBlockD(ch * w_small, False, tinit, dt, name='block_obj_a')(
          taps[i1], train=train)
      fs = shared(fs, train=train)
      fl = shared(taps[i2], train=train)
      f_small = roi.roi_align(fs, px, ROI_SIZE, s_small, 0, valid)
      f_large = roi.roi_align(fl, px, ROI_SIZE, s_large, 0, valid)
      bw, bh = px[..., 2] - px[..., 0], px[..., 3] - px[..., 1]
      half = images.shape[1] / 2
      if res == 128:  # strict at 128, non-strict at 256 (pitfall 12)
        small = (bw < half) & (bh < half)
      else:
        small = (bw <= half) & (bh <= half)
      feat = jnp.where(small[..., None, None, None], f_small, f_large)
    b, o = classes.shape
    feat = feat.reshape((b * o,) + feat.shape[2:])
    feat = ResBlockD(ch * w_last, True, tinit, dt, name='block_obj_last')(
        feat, train=train)
    feat = jnp.sum(nn.leaky_relu(feat, SLOPE).astype(jnp.float32), (1, 2))
    d_obj = head('l_obj', feat.shape[-1])(feat, update_stats=train)[:, 0]
    emb_init = (nn.initializers.normal(1.0) if tinit else
                nn.initializers.orthogonal())
    proj = ll.SNEmbed(self.num_classes, feat.shape[-1], embedding_init=emb_init,
                      name='l_y')(classes.reshape(-1), update_stats=train)
    d_obj = d_obj + jnp.sum(proj * feat, axis=-1)
    d_obj = jnp.where(valid, d_obj.reshape(b, o), 0.0)
    return d_img, d_obj, valid
