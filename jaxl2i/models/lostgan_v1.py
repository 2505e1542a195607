"""LostGAN-V1 (Sun & Wu, ICCV 2019): generator and discriminator.

Port of `ResnetGenerator{64,128}`, `ResBlock`, `MaskRegressNet` and
`SpatialAdaptiveSynBatchNorm2d` of `WillSuen/LostGANs`
(`model/resnet_generator_v1.py`, `model/mask_regression.py`,
`model/norm_module.py`) and of `ResnetDiscriminator{64,128}` /
`CombineDiscriminator{,128}` (`model/rcnn_discriminator.py`). Facts checked
against those files; summary in `reference/lama_lostgan.md` (§2.1, §3, §4
"LostGAN v1" notes). Differences from LAMA (`lama.py`):

* style vector w_i = [z_i, emb(y_i)] (z first); the official `mapping` is an
  empty `nn.Sequential`, so w is the raw concatenation and there is no
  parameter in the 'mapping' lr group. The mask net reads the same w (no
  box width/height). Label embedding 128 (64²) / 180 (128²), plain (no SN).
* mask net: SN-fc → 128×4×4; [SNConv3×3 (bias) → BN → ReLU] then bilinear
  up to 8, again and up to 16, a third block, SNConv1×1 → sigmoid: 16×16
  masks. Its SN layers use PyTorch's default eps 1e-12. The masks are placed
  with `lama.masks_to_layout` (`grid_sample` with PyTorch 1.0's implicit
  align_corners=True) on a 64×64 canvas at both resolutions
  (`MaskRegressNet(num_w)` keeps `map_size=64`); each ISLA layer resizes
  that canvas bilinearly (align_corners=False) to its feature size.
* ISLA-Norm v1: BN(affine=False, eps 1e-5, momentum 0.1), then
  scale = Σ_i M_i γ_i / (Σ_i M_i + 1e-6) + 1, bias likewise without +1,
  output scale·x̂ + bias (no GN, ρ or α). γ, β: SN-Linear(num_w → C).
* ResBlock: ReLU, nearest ×2, convs with bias (SN eps 1e-4), no noise
  injection, no ReZero; 1×1 shortcut with bias on the upsampled input.
* trunk: SN-fc(z_img) → 16ch×4×4; 64²: 16→8→4→2→1 (blocks res2..res5),
  128²: 16→16→8→4→2→1 (res1..res5); affine BN → ReLU → SNConv3×3 → tanh.
* every BatchNorm is a SynchronizedBatchNorm2d (`axis_name` here).
* init: orthogonal for ≥2-D parameters, zero biases (both generators and
  the 64² discriminator); the 128² discriminator never calls its
  `init_parameter`, so it keeps PyTorch defaults (kaiming-uniform(√5),
  uniform biases, embedding N(0, 1)).

Parameter names mirror the official ones with Sequential indices written
`_i` (`mask_regress.conv1.0` → `mask_regress/conv1_0`, `final.2` →
`final_2`). Official buffers without a counterpart: the unused
`running_mean/var` of each ISLA module's own BatchNorm base class.

Variables: 'params', 'batch_stats' (G only), 'spectral_norm'. No RNG
stream at apply time (V1 draws no noise; `z_img` is an input).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import lama
from jaxl2i.models import lama_layers as ll
from jaxl2i.models import layers
from jaxl2i.models import roi_align as roi

Array = jax.Array
Dtype = Any

NORM_EPS = 1e-5
MASK_SUM_EPS = 1e-6  # Σ_i M_i + 1e-6 in ISLA-Norm v1.
MASK_SIZE = 16  # 4·2², fixed by the two bilinear ups of the mask net.
MASK_MAP_SIZE = 64  # MaskRegressNet's default map_size, used at 64 and 128.
EMBED_DIM = {64: 128, 128: 180}
TRUNK = {64: (16, 8, 4, 2, 1), 128: (16, 16, 8, 4, 2, 1)}
FIRST_BLOCK = {64: 2, 128: 1}  # official names res2.. (64) / res1.. (128)
ROI_SIZE = (8, 8)


def _bn(train: bool, name: str, affine: bool = True,
        axis_name: Optional[str] = None) -> nn.BatchNorm:
  return layers.batch_norm(
      use_running_average=not train, use_scale=affine, use_bias=affine,
      epsilon=NORM_EPS, axis_name=axis_name, name=name)


class IslaV1(nn.Module):
  """`SpatialAdaptiveSynBatchNorm2d`: mask-weighted affine after BN."""
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, masks: Array, *,
               train: bool) -> Array:
    """x [B,H,W,C]; w [B,O,num_w]; masks [B,O,H',W'] ≥ 0 → [B,H,W,C]."""
    x_bn = _bn(train, 'batch_norm2d', affine=False,
               axis_name=self.axis_name)(x).astype(jnp.float32)
    m = ll.resize_bilinear(masks.astype(jnp.float32), x.shape[1:3],
                           channels_last=False)
    gamma = ll.SNDense(self.features, name='weight_proj')(
        w, update_stats=train).astype(jnp.float32)
    beta = ll.SNDense(self.features, name='bias_proj')(
        w, update_stats=train).astype(jnp.float32)
    den = jnp.sum(m, axis=1)[..., None] + MASK_SUM_EPS  # [B, H, W, 1]
    scale = jnp.einsum('bohw,boc->bhwc', m, gamma) / den + 1.0
    bias = jnp.einsum('bohw,boc->bhwc', m, beta) / den
    return (scale * x_bn + bias).astype(self.dtype)


class ResBlockGV1(nn.Module):
  """Up-sampling block: ISLA → ReLU → up → conv → ISLA → ReLU → conv."""
  out_ch: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, masks: Array, *,
               train: bool) -> Array:
    conv = lambda k, name: ll.SNConv(
        self.out_ch, k, use_bias=True, eps=ll.SN_EPS_CONV, dtype=self.dtype,
        name=name)
    norm = lambda c, name: IslaV1(c, self.axis_name, self.dtype, name=name)
    h = nn.relu(norm(x.shape[-1], 'b1')(x, w, masks, train=train))
    h = conv(3, 'conv1')(ll.upsample_nearest2x(h), update_stats=train)
    h = nn.relu(norm(self.out_ch, 'b2')(h, w, masks, train=train))
    h = conv(3, 'conv2')(h, update_stats=train)
    # learnable_sc holds for every generator block (upsample=True).
    sc = conv(1, 'c_sc')(ll.upsample_nearest2x(x.astype(self.dtype)),
                         update_stats=train)
    return h + sc


class MaskRegressNetV1(nn.Module):
  """Per-object 16×16 masks placed on a `map_size`² canvas."""
  map_size: int = MASK_MAP_SIZE
  hidden: int = 128
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, w: Array, boxes_xywh: Array, *, train: bool) -> Array:
    """w [B,O,num_w]; boxes [B,O,4] (x0,y0,w,h) → [B,O,S,S] float32."""
    b, o, d = w.shape
    conv = lambda f, k, name: ll.SNConv(
        f, k, use_bias=True, eps=ll.SN_EPS_DEFAULT, dtype=self.dtype,
        name=name)
    x = ll.SNDense(self.hidden * 16, dtype=self.dtype, name='fc')(
        w.reshape(b * o, d), update_stats=train)
    # Channel-major (C, 4, 4) view as in PyTorch, then NHWC.
    x = x.reshape(b * o, self.hidden, 4, 4).transpose(0, 2, 3, 1)
    for i in (1, 2, 3):
      if i > 1:  # F.interpolate(size=8 / 16, bilinear, align_corners=False)
        x = ll.resize_bilinear(x, (x.shape[1] * 2, x.shape[2] * 2))
      x = conv(self.hidden, 3, f'conv{i}_0')(x, update_stats=train)
      x = _bn(train, f'conv{i}_1', axis_name=self.axis_name)(x)
      x = nn.relu(x)
    x = conv(1, 1, 'conv3_3')(x, update_stats=train)
    masks = jax.nn.sigmoid(x.astype(jnp.float32))[..., 0]
    masks = masks.reshape(b, o, MASK_SIZE, MASK_SIZE)
    return lama.masks_to_layout(masks, boxes_xywh, self.map_size)


class LostGanV1Generator(nn.Module):
  """`ResnetGenerator{64,128}` of LostGAN-V1.

  Attributes:
    resolution: 64 or 128.
    num_classes: label-embedding rows (COCO-Stuff 184, VG 179).
    ch: base width (64).
    z_dim: object/image latent size (128).
    embed_dim: label-embedding width; None → 128 (64²) / 180 (128²).
    mask_hidden: mask-net width (128).
    mask_map_size: canvas of the placed masks (64 in the official code).
    axis_name: BatchNorm axis name under pmap/shard_map (None under jit).
    dtype: compute dtype; params float32.
  """
  resolution: int = 128
  num_classes: int = 184
  ch: int = 64
  z_dim: int = 128
  embed_dim: Optional[int] = None
  mask_hidden: int = 128
  mask_map_size: int = MASK_MAP_SIZE
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_img: Array, z_obj: Array, boxes: Array,
               classes: Array, objects_mask: Array, *, train: bool,
               return_masks: bool = False, masks: Optional[Array] = None):
    """Generates images from layouts.

    Args:
      z_img: [B, z_dim] image latent.
      z_obj: [B, O, z_dim] object latents.
      boxes: [B, O, 4] normalised (x0, y0, x1, y1).
      classes: [B, O] int32 class ids (0 = padding / VG `__image__`).
      objects_mask: [B, O] bool, False for padded slots (replaced by the
        reference's padding object: class 0, off-canvas box).
      train: batch statistics + SN power iteration (mutable 'batch_stats',
        'spectral_norm') when True; running averages when False.
      return_masks: also return the masks.
      masks: optional [B, O, H, W] object masks (any H = W; each ISLA layer
        resizes them) replacing the mask net, which is then not created
        (LAMA Table 5's "LostGAN-V1 w/ GT masks"); returned resized to S.

    Returns:
      image [B, S, S, 3] in [-1, 1] (dtype `dtype`); with `return_masks`,
      (image, masks, masks): the placed masks [B, O, S, S] float32 in [0, 1],
      bilinearly resized from the 64² canvas to S (what the last ISLA layer
      uses); V1 has no adaption, so both entries are the same array.
    """
    if self.resolution not in TRUNK:
      raise ValueError(f'resolution must be one of {sorted(TRUNK)}')
    valid = objects_mask.astype(bool)
    pad = jnp.asarray(lama.PAD_BOX_XYWH, jnp.float32)
    boxes_xywh = jnp.where(valid[..., None],
                           lama.xyxy_to_xywh(boxes.astype(jnp.float32)), pad)
    classes = jnp.where(valid, classes, 0).astype(jnp.int32)
    b = classes.shape[0]
    d_y = self.embed_dim or EMBED_DIM[self.resolution]
    emb = nn.Embed(self.num_classes, d_y,
                   embedding_init=nn.initializers.orthogonal(),
                   param_dtype=layers.PARAM_DTYPE, name='label_embedding')(
                       classes)
    w = jnp.concatenate([z_obj.astype(jnp.float32), emb], axis=-1)
    if masks is None:
      bbmap = MaskRegressNetV1(self.mask_map_size, self.mask_hidden,
                               self.axis_name, self.dtype,
                               name='mask_regress')(w, boxes_xywh,
                                                    train=train)
    else:
      bbmap = masks.astype(jnp.float32)

    widths = [self.ch * m for m in TRUNK[self.resolution]]
    x = ll.SNDense(16 * widths[0], name='fc')(
        z_img.astype(jnp.float32), update_stats=train)
    x = x.reshape(b, widths[0], 4, 4).transpose(0, 2, 3, 1).astype(self.dtype)
    first = FIRST_BLOCK[self.resolution]
    for i, width in enumerate(widths[1:]):
      x = ResBlockGV1(width, self.axis_name, self.dtype,
                      name=f'res{first + i}')(x, w, bbmap, train=train)
    x = nn.relu(_bn(train, 'final_0', axis_name=self.axis_name)(x))
    x = ll.SNConv(3, 3, use_bias=True, eps=ll.SN_EPS_CONV, dtype=self.dtype,
                  name='final_2')(x, update_stats=train)
    image = jnp.tanh(x)
    if return_masks:
      s = self.resolution
      out = ll.resize_bilinear(bbmap, (s, s), channels_last=False)
      return image, out, out
    return image


# ------------------------------------------------------------ discriminator


def _inits(torch_init: bool, fan_in: int):
  """(kernel_init, bias_init): PyTorch defaults or orthogonal / zeros."""
  if torch_init:
    return (layers.torch_default_conv_init(),
            layers.torch_default_bias_init(fan_in))
  return nn.initializers.orthogonal(), nn.initializers.zeros


class ResBlockDV1(nn.Module):
  """`ResBlock` / `OptimizedBlock` of the V1 discriminator (ReLU, no α).

  ResBlock: pool(conv2(ReLU(conv1(ReLU(x))))) + pool(c_sc(x)) (identity
  shortcut when in == out and no down-sampling). OptimizedBlock (`first`):
  pool(conv2(ReLU(conv1(x)))) + c_sc(pool(x)).
  """
  out_ch: int
  downsample: bool
  first: bool = False
  torch_init: bool = False
  dtype: Dtype = jnp.float32

  def _conv(self, x: Array, k: int, name: str, train: bool) -> Array:
    k_init, b_init = _inits(self.torch_init, x.shape[-1] * k * k)
    return ll.SNConv(self.out_ch, k, use_bias=True, eps=ll.SN_EPS_CONV,
                     kernel_init=k_init, bias_init=b_init, dtype=self.dtype,
                     name=name)(x, update_stats=train)

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    pool = ll.avg_pool2x if self.downsample else (lambda t: t)
    h = x if self.first else nn.relu(x)
    h = self._conv(h, 3, 'conv1', train)
    h = pool(self._conv(nn.relu(h), 3, 'conv2', train))
    if self.first:
      sc = self._conv(pool(x), 1, 'c_sc', train)
    elif x.shape[-1] != self.out_ch or self.downsample:
      sc = pool(self._conv(x, 1, 'c_sc', train))
    else:
      sc = x
    return h + sc


def small_boxes(px: Array, size: int, corner: bool = False) -> Array:
  """Small-box routing of the 128² discriminator.

  Args:
    px: [..., 4] boxes (x0, y0, x1, y1) in image pixels.
    size: image size S (the threshold is S/2 = 64 px at 128²).
    corner: False (current official code): width < S/2 and height < S/2;
      True (ICCV'19-era code): x1 < S/2 and y1 < S/2.

  Returns:
    [...] bool, True for the small-box path.
  """
  half = size / 2
  if corner:
    return (px[..., 2] < half) & (px[..., 3] < half)
  return ((px[..., 2] - px[..., 0]) < half) & ((px[..., 3] - px[..., 1]) <
                                               half)


# (width multiplier, downsample) of block1.. per resolution.
_D_IMG = {64: ((1, False), (2, False), (4, True), (8, True), (16, True)),
          128: ((1, True), (2, True), (4, True), (8, True), (16, True),
                (16, False))}


class LostGanV1Discriminator(nn.Module):
  """`CombineDiscriminator` (64²) / `CombineDiscriminator128` of LostGAN.

  Static shapes as in `lama_discriminator`: every slot goes through the
  object path; slots the reference drops (class 0 or `objects_mask` False)
  return 0 with `valid` False. At 128² each box is routed to the small-box
  path (block_obj3 → block_obj4 on the 32² features, ROIAlign 1/4) or the
  large-box path (block_obj4 on the 16² features, ROIAlign 1/8).

  Attributes:
    resolution: 64 or 128.
    num_classes: projection-embedding rows.
    ch: base width (64).
    corner_routing: False (current official code): small iff box width and
      height < 64 px; True: the ICCV'19-era code's test x1 < 64 and
      y1 < 64 px (it compared corner coordinates, not sizes).
    dtype: compute dtype; params float32.
  """
  resolution: int = 128
  num_classes: int = 184
  ch: int = 64
  corner_routing: bool = False
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
    if res not in _D_IMG:
      raise ValueError(f'resolution must be one of {sorted(_D_IMG)}')
    tinit, ch, dt = res == 128, self.ch, self.dtype
    block = lambda mult, down, name, first=False: ResBlockDV1(
        ch * mult, down, first, tinit, dt, name=name)
    x = images.astype(dt)
    taps = []
    for i, (mult, down) in enumerate(_D_IMG[res]):
      x = block(mult, down, f'block{i + 1}', i == 0)(x, train=train)
      taps.append(x)
    x = nn.relu(x).astype(jnp.float32)
    pooled = jnp.mean(x, (1, 2)) if res == 64 else jnp.sum(x, (1, 2))

    def head(name, feat):
      k_init, b_init = _inits(tinit, feat.shape[-1])
      return ll.SNDense(1, kernel_init=k_init, bias_init=b_init, name=name)(
          feat, update_stats=train)[:, 0]

    d_img = head('l_im' if res == 64 else 'l7', pooled)
    valid = objects_mask.astype(bool) & (classes != 0)
    px = boxes.astype(jnp.float32) * images.shape[1]
    if res == 64:
      feat = roi.roi_align(taps[2], px, ROI_SIZE, 1 / 2, 0, valid)
      last = block(8, True, 'block_obj4')
    else:
      shared = block(8, False, 'block_obj4')
      fs = shared(block(4, False, 'block_obj3')(taps[1], train=train),
                  train=train)
      fl = shared(taps[2], train=train)
      f_small = roi.roi_align(fs, px, ROI_SIZE, 1 / 4, 0, valid)
      f_large = roi.roi_align(fl, px, ROI_SIZE, 1 / 8, 0, valid)
      small = small_boxes(px, images.shape[1], self.corner_routing)
      feat = jnp.where(small[..., None, None, None], f_small, f_large)
      last = block(16, True, 'block_obj5')
    b, o = classes.shape
    feat = feat.reshape((b * o,) + feat.shape[2:])
    feat = last(feat, train=train)
    feat = jnp.sum(nn.relu(feat).astype(jnp.float32), (1, 2))
    d_obj = head('l_obj', feat)
    emb_init = (nn.initializers.normal(1.0) if tinit else
                nn.initializers.orthogonal())
    proj = ll.SNEmbed(self.num_classes, feat.shape[-1],
                      embedding_init=emb_init, name='l_y')(
                          classes.reshape(-1), update_stats=train)
    d_obj = d_obj + jnp.sum(proj * feat, axis=-1)
    d_obj = jnp.where(valid, d_obj.reshape(b, o), 0.0)
    return d_img, d_obj, valid
