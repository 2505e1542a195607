"""LAMA generator (Li et al., ICCV 2021) built on LostGAN-V2's ISLA-Norm.

Port of `ResnetGenerator{64,128,256}`, `MaskRegressNet`, `ResBlockG`,
`SpatialAdaptiveSynBatchGroupNorm2d` and `ChannelwiseNoiseInjection` of
`ZejianLi/LAMA` (facts in `reference/lama_lostgan.md` §1–3). NHWC features;
object masks are [B, O, H, W].

Boxes: the module boundary takes jaxl2i's normalised (x0, y0, x1, y1); they
are converted to the reference's (x0, y0, w, h) inside. Slots with
`objects_mask` False are replaced by the reference's padding object (class 0,
box (x0, y0, w, h) = (−0.6, −0.6, 0.5, 0.5), entirely off-canvas), so they
flow through the mask net (and its BatchNorm statistics) exactly as the
reference's padded slots do and receive an all-zero mask.

Variables: 'params' (float32), 'batch_stats' (BatchNorm running averages)
and 'spectral_norm' (u, v, σ of every SN layer). Train mode needs
`mutable=['batch_stats', 'spectral_norm']`. RNG stream 'noise': the
channel-shared noise of every ResBlockG, drawn in train and eval mode alike
(the reference samples it at test time too). The image latent `z_img` is an
input (the recipe draws it).

Initialisation follows `init_parameter`: orthogonal for every ≥2-D parameter
(SN raw weights, the label embedding), zero biases, BN scale 1, ρ 0.1, every
α 0.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.models import layers
from jaxl2i.models import lama_layers as ll

Array = jax.Array
Dtype = Any

SLOPE = 0.01  # LeakyReLU slope everywhere in LAMA.
NORM_EPS = 1e-5  # BatchNorm / GroupNorm eps of ISLA-BGN and the mask net.
GN_GROUPS = 4
MASK_SUM_EPS = 1e-4  # Σ_j M_j + 1e-4 in ISLA's per-pixel normalisation.
RHO_INIT = 0.1
ADAPT_SIZE = 64  # LAMA's adaption always runs at 64×64 (pitfall 7).
PAD_BOX_XYWH = (-0.6, -0.6, 0.5, 0.5)
# Label-embedding width and trunk widths (× ch) per resolution.
EMBED_DIM = {64: 128, 128: 160, 256: 192}
TRUNK = {64: (16, 8, 4, 2, 1), 128: (8, 8, 4, 4, 2, 1),
         256: (16, 8, 8, 4, 4, 2, 1)}

_ortho = nn.initializers.orthogonal()


def _bn(train: bool, name: str, affine: bool = True,
        axis_name: Optional[str] = None) -> nn.BatchNorm:
  return layers.batch_norm(
      use_running_average=not train, use_scale=affine, use_bias=affine,
      epsilon=NORM_EPS, axis_name=axis_name, name=name)


def _group_norm(x: Array, affine: bool = False) -> Array:
  return nn.GroupNorm(num_groups=GN_GROUPS, epsilon=NORM_EPS,
                      use_bias=affine, use_scale=affine)(x)


def xyxy_to_xywh(boxes: Array) -> Array:
  """(x0, y0, x1, y1) → (x0, y0, w, h) on the last axis."""
  return jnp.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]],
                         axis=-1)


def _placement_matrix(start: Array, size: Array, n_out: int,
                      n_in: int) -> Array:
  """[..., n_out, n_in] weights of grid_sample(align_corners=True, zeros).

  Output pixel j sits at t_j = j/(n_out − 1); the grid value (t_j − start)/size
  ∈ [0, 1] maps to the mask coordinate ((t_j − start)/size)·(n_in − 1).
  """
  t = jnp.linspace(0.0, 1.0, n_out, dtype=jnp.float32)
  size = jnp.where(jnp.abs(size) < 1e-6, 1e-6, size)
  src = (t - start[..., None]) / size[..., None] * (n_in - 1)
  # Keep both neighbours outside the mask when far outside (and finite).
  src = jnp.clip(src, -2.0, n_in + 1.0)
  low = jnp.floor(src)
  frac = src - low
  onehot = lambda i: jax.nn.one_hot(i.astype(jnp.int32), n_in,
                                    dtype=jnp.float32)
  return ((1.0 - frac)[..., None] * onehot(low) +
          frac[..., None] * onehot(low + 1.0))


def masks_to_layout(masks: Array, boxes_xywh: Array, map_size: int) -> Array:
  """Places per-object masks into their boxes (`masks_to_layout`).

  Args:
    masks: [B, O, M, M] float masks.
    boxes_xywh: [B, O, 4] normalised (x0, y0, w, h).
    map_size: output canvas size H = W.

  Returns:
    [B, O, map_size, map_size] float32, zero outside the boxes.
  """
  m = masks.shape[-1]
  b = boxes_xywh.astype(jnp.float32)
  ay = _placement_matrix(b[..., 1], b[..., 3], map_size, m)
  ax = _placement_matrix(b[..., 0], b[..., 2], map_size, m)
  return jnp.einsum('bohm,bomn,bown->bohw', ay, masks.astype(jnp.float32), ax)


class IslaBgn(nn.Module):
  """ISLA-Norm with Batch-Group Norm (`SpatialAdaptiveSynBatchGroupNorm2d`).

  x̂ = BN(x) + clamp(ρ, 0, 1)·(GN₄(x) − BN(x)); per-object γ_i, β_i = SN
  linear maps of w_i; masks resized to the feature size and normalised over
  objects (Σ + 1e-4); output x̂ + clamp(α, −1, 1)·(Γ ⊙ x̂ + B).
  """
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, masks: Array, *,
               train: bool) -> Array:
    """x [B,H,W,C]; w [B,O,num_w]; masks [B,O,H',W'] → [B,H,W,C]."""
    x_bn = _bn(train, 'batch_norm2d', affine=False,
               axis_name=self.axis_name)(x)
    x_gn = _group_norm(x.astype(jnp.float32))
    rho = self.param('rho', nn.initializers.constant(RHO_INIT), ())
    h = x_bn + jnp.clip(rho, 0.0, 1.0) * (x_gn - x_bn)
    m = ll.resize_bilinear(masks.astype(jnp.float32), x.shape[1:3],
                           channels_last=False)
    m = m / (jnp.sum(m, axis=1, keepdims=True) + MASK_SUM_EPS)
    gamma = ll.SNDense(self.features, name='weight_proj')(
        w, update_stats=train)
    beta = ll.SNDense(self.features, name='bias_proj')(w, update_stats=train)
    gamma = jnp.einsum('bohw,boc->bhwc', m, gamma.astype(jnp.float32))
    beta = jnp.einsum('bohw,boc->bhwc', m, beta.astype(jnp.float32))
    alpha = self.param('alpha', nn.initializers.zeros, ())
    out = h + jnp.clip(alpha, -1.0, 1.0) * (gamma * h + beta)
    return out.astype(self.dtype)


class NoiseInjection(nn.Module):
  """x + softplus(s_c)·n, n ~ N(0, 1) [B, H, W, 1] (RNG stream 'noise')."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    seed = self.param('noise_weight_seed', nn.initializers.zeros,
                      (x.shape[-1],))
    noise = jax.random.normal(self.make_rng('noise'), x.shape[:3] + (1,),
                              jnp.float32)
    return x + (jax.nn.softplus(seed) * noise).astype(x.dtype)


class ResBlockG(nn.Module):
  """Up-sampling generator block with ISLA-BGN, noise and raw ReZero α."""
  out_ch: int
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, masks: Array, *,
               train: bool) -> Array:
    conv = lambda f, k, bias, name: ll.SNConv(
        f, k, use_bias=bias, dtype=self.dtype, name=name)
    norm = lambda c, name: IslaBgn(c, self.axis_name, self.dtype, name=name)
    h = norm(x.shape[-1], 'b1')(x, w, masks, train=train)
    h = ll.upsample_nearest2x(nn.leaky_relu(h, SLOPE))
    h = conv(self.out_ch, 3, False, 'conv1')(h, update_stats=train)
    h = NoiseInjection(name='noise1')(h)
    h = norm(self.out_ch, 'b2')(h, w, masks, train=train)
    h = conv(self.out_ch, 3, False, 'conv2')(nn.leaky_relu(h, SLOPE),
                                             update_stats=train)
    h = NoiseInjection(name='noise2')(h)
    sc = conv(self.out_ch, 1, True, 'c_sc')(
        ll.upsample_nearest2x(x.astype(self.dtype)), update_stats=train)
    alpha = self.param('alpha', nn.initializers.zeros, ())
    return alpha.astype(self.dtype) * h + sc


class _Gated(nn.Module):
  """x + α·Conv3×3(LReLU(Norm(x))) (MaskRegressBlock / MaskAdjustBlock).

  MaskAdjustBlock's `nn.GroupNorm(4, C)` keeps PyTorch's default affine=True
  (scale 1, bias 0 at init); the ISLA GroupNorm is affine=False.
  """
  group_norm: bool  # affine GN(4) (adjust block) vs affine BN (regress block)
  sn_eps: float
  dtype: Dtype = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    if self.group_norm:
      h = _group_norm(x, affine=True)
    else:
      h = _bn(train, 'bn', axis_name=self.axis_name)(x)
    h = ll.SNConv(x.shape[-1], 3, use_bias=False, eps=self.sn_eps,
                  dtype=self.dtype, name='conv')(
                      nn.leaky_relu(h, SLOPE), update_stats=train)
    alpha = self.param('alpha', nn.initializers.zeros, ())
    return x + alpha.astype(self.dtype) * h


class MaskRegressNet(nn.Module):
  """Object masks F_om (32×32 per object), placement and the LAMA module.

  Attributes:
    map_size: canvas size (the image resolution).
    hidden: mask-net width (128).
    mask_size: per-object mask size (32 = 4·2³; fixed by the three ups).
    mask_adaption: False gives the "LAMA without mask adaption" ablation
      (adapted mask = raw mask, no LAMA parameters).
  """
  map_size: int
  hidden: int = 128
  mask_adaption: bool = True
  dtype: Dtype = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, latent: Array, boxes_xywh: Array, *,
               train: bool) -> tuple[Array, Array]:
    """latent [B,O,d]; boxes [B,O,4] → (adapted, raw) [B,O,S,S] float32."""
    b, o, d = latent.shape
    flat = latent.reshape(b * o, d)
    x = ll.SNDense(self.hidden * 16, dtype=self.dtype, name='fc')(
        flat, update_stats=train)
    # Channel-major (C, 4, 4) view as in PyTorch, then NHWC.
    x = x.reshape(b * o, self.hidden, 4, 4).transpose(0, 2, 3, 1)
    for i in range(3):
      x = _Gated(False, ll.SN_EPS_CONV, self.dtype, self.axis_name,
                 name=f'conv{i + 1}')(x, train=train)
      x = ll.resize_bilinear(x, (x.shape[1] * 2, x.shape[2] * 2))
    x = _bn(train, 'final_bn', axis_name=self.axis_name)(x)
    x = ll.SNConv(1, 1, use_bias=True, eps=ll.SN_EPS_DEFAULT,
                  dtype=self.dtype, name='final_conv')(
                      nn.leaky_relu(x, SLOPE), update_stats=train)
    masks = jax.nn.sigmoid(x.astype(jnp.float32))[..., 0]
    masks = masks.reshape(b, o, *masks.shape[1:])
    raw = masks_to_layout(masks, boxes_xywh, self.map_size)
    if not self.mask_adaption:
      return raw, raw

    dm = d // 4
    key = ll.SNDense(dm, name='key_affine')(flat, update_stats=train)
    query = ll.SNDense(dm, name='query_affine')(flat, update_stats=train)
    key = key.reshape(b, o, dm).astype(jnp.float32)
    query = query.reshape(b, o, dm).astype(jnp.float32)
    small = ll.resize_bilinear(raw, (ADAPT_SIZE, ADAPT_SIZE),
                               channels_last=False)
    pixel_query = jnp.einsum('bod,bohw->bhwd', query, small)
    local = pixel_query
    for i in range(2):
      local = _Gated(True, ll.SN_EPS_DEFAULT, jnp.float32,
                     name=f'query_local_{i}')(local, train=train)
    energy = jnp.einsum('bod,bhwd->bohw', key, local)
    alpha = self.param('mask_adjust_alpha', nn.initializers.zeros, ())
    scale = jnp.tanh(energy * jnp.clip(alpha, -1.0, 1.0)) + 1.0
    scale = ll.resize_bilinear(scale, (self.map_size, self.map_size),
                               channels_last=False)
    return raw * scale, raw


class LamaGenerator(nn.Module):
  """`ResnetGenerator{64,128,256}` of LAMA.

  Attributes:
    resolution: 64, 128 or 256 (selects embedding width and trunk).
    num_classes: label-embedding rows (COCO-Stuff 184, VG 179).
    ch: base width (64).
    z_dim: object/image latent size (128).
    embed_dim: label-embedding width; None → 128/160/192 by resolution.
    mask_hidden: width of the mask net (128).
    mask_adaption: False = the "LAMA without mask adaption" ablation.
    axis_name: BatchNorm axis name under pmap/shard_map (None under jit).
    dtype: compute dtype; params float32.
  """
  resolution: int = 128
  num_classes: int = 184
  ch: int = 64
  z_dim: int = 128
  embed_dim: Optional[int] = None
  mask_hidden: int = 128
  mask_adaption: bool = True
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_img: Array, z_obj: Array, boxes: Array,
               classes: Array, objects_mask: Array, *, train: bool,
               return_masks: bool = False, masks: Optional[Array] = None):
    """Generates images from layouts.

    Args:
      z_img: [B, z_dim] image latent (N(0,1), optionally truncated).
      z_obj: [B, O, z_dim] object latents.
      boxes: [B, O, 4] normalised (x0, y0, x1, y1).
      classes: [B, O] int32 class ids (0 = padding / VG `__image__`).
      objects_mask: [B, O] bool, False for padded slots.
      train: batch statistics + SN power iteration (mutable 'batch_stats',
        'spectral_norm') when True; running averages when False.
      return_masks: also return the masks.
      masks: optional [B, O, S, S] object masks replacing the layout-to-mask
        stage (no mask-net parameters are created or used): the
        mask-to-image model of LAMA's Sec. 3 experiment, trained and tested
        on ground-truth (or tainted) masks. Returned as both mask outputs.

    Returns:
      image [B, S, S, 3] in [-1, 1] (dtype `dtype`); with `return_masks`,
      (image, adapted [B, O, S, S] float32 in [0, 2], raw [B, O, S, S] float32
      in [0, 1]).
    """
    if self.resolution not in TRUNK:
      raise ValueError(f'resolution must be one of {sorted(TRUNK)}')
    valid = objects_mask.astype(bool)
    pad = jnp.asarray(PAD_BOX_XYWH, jnp.float32)
    boxes_xywh = jnp.where(valid[..., None],
                           xyxy_to_xywh(boxes.astype(jnp.float32)), pad)
    classes = jnp.where(valid, classes, 0).astype(jnp.int32)
    b, o = classes.shape
    d_y = self.embed_dim or EMBED_DIM[self.resolution]

    emb = nn.Embed(self.num_classes, d_y, embedding_init=_ortho,
                   param_dtype=layers.PARAM_DTYPE, name='label_embedding')(
                       classes)
    z_obj = z_obj.astype(jnp.float32)
    latent = jnp.concatenate([emb, z_obj, boxes_xywh[..., 2:]], axis=-1)
    if masks is None:
      masks, raw = MaskRegressNet(
          self.resolution, self.mask_hidden, self.mask_adaption, self.dtype,
          self.axis_name, name='mask_regress')(latent, boxes_xywh,
                                               train=train)
    else:
      masks = raw = masks.astype(jnp.float32)

    s = z_obj
    for i in range(3):
      if i:
        s = nn.leaky_relu(s, SLOPE)
      s = ll.SNDense(self.z_dim, name=f'style_mapping_{i}')(
          s, update_stats=train)
    w = jnp.concatenate([emb, s.astype(jnp.float32)], axis=-1)

    widths = [self.ch * m for m in TRUNK[self.resolution]]
    x = ll.SNDense(16 * widths[0], name='fc')(
        z_img.astype(jnp.float32), update_stats=train)
    x = x.reshape(b, widths[0], 4, 4).transpose(0, 2, 3, 1).astype(self.dtype)
    for i, width in enumerate(widths[1:]):
      x = ResBlockG(width, self.axis_name, self.dtype, name=f'res{i + 1}')(
          x, w, masks, train=train)
    x = _bn(train, 'final_bn', axis_name=self.axis_name)(x)
    x = ll.SNConv(3, 3, use_bias=True, dtype=self.dtype, name='final_conv')(
        nn.leaky_relu(x, SLOPE), update_stats=train)
    image = jnp.tanh(x)
    if return_masks:
      return image, masks, raw
    return image
