"""Layout2Im generator (Zhao et al., CVPR 2019): crops → z, layout → image.

Port of `models/generator.py` of zhaobozb/layout2im (facts:
reference/layout2im.md §2): the object estimator `CropEncoder` (μ, log σ² of
every object from a 32×32 crop of the real image), the object composer and
encoder `LayoutEncoder` (category embedding ⊕ z filled into the box mask,
convolved per object), the objects fuser (a 3-layer ConvLSTM over each
image's objects, `layers.ConvLSTM`), 6 residual blocks and the `Decoder`.

Objects live in fixed, padded slots [B, O] with a validity mask instead of
the reference's flat object list: padded slots are excluded from every
BatchNorm statistic (`mask=`), skipped by the ConvLSTM, and (in the recipe)
from every loss, so they cannot change any output.

Kept from the reference on purpose:
* `LayoutEncoder.c1` is a 1×1 conv with padding 1: the 64×64 composed maps
  become 66×66 (zero border, then β of the class through CBN), hence
  33 → 16 → 8 after the strided convs (pitfall 1);
* CBN (per-object class γ, β) in both encoders, plain BN in the fuser's
  residual blocks and the decoder (pitfall 2); PyTorch momentum/eps;
* no output nonlinearity: images live in ImageNet-normalised space
  (`normalize_images` / `deprocess`);
* initialisation of torch 1.0, the version the reference pins: convs and
  linears kaiming-uniform(√5) with uniform biases, embeddings N(0, 1), and
  BatchNorm2d weights U(0, 1) (torch ≥ 1.2 uses ones).

Variables: 'params', 'batch_stats'. Train mode needs
`mutable=['batch_stats']` and the RNG stream 'eps' (the reparameterisation
noise of the crop encoder, drawn per slot with `slot_normal`). NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import layers

Array = jax.Array
Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # utils/data.py, imagenet_preprocess
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(image: Array) -> Array:
  """uint8 [..., 3] → float32 (x/255 − mean)/std (ToTensor + Normalize)."""
  x = jnp.asarray(image, jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def deprocess(images: Array, stretch: bool) -> Array:
  """ImageNet-normalised [B, H, W, 3] → float32 in [-1, 1].

  Undoes the normalisation, then either min-max stretches each image over
  all its pixels and channels to [0, 1] (`imagenet_deprocess_batch`,
  rescale=True: test.py's saved images and train.py's TensorBoard images) or
  clips to [0, 1]; the result is mapped to [-1, 1].
  """
  x = images.astype(jnp.float32) * jnp.asarray(IMAGENET_STD) + jnp.asarray(
      IMAGENET_MEAN)
  if stretch:
    lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
    hi = jnp.max(x, axis=(1, 2, 3), keepdims=True)
    x = (x - lo) / jnp.maximum(hi - lo, 1e-12)
  else:
    x = jnp.clip(x, 0.0, 1.0)
  return x * 2.0 - 1.0


def slot_normal(key: jax.Array, shape: tuple[int, int, int]) -> Array:
  """N(0, 1) float32 [B, O, D] where slot k's rows come from fold_in(key, k).

  A slot's noise does not depend on how many slots there are, so padding a
  layout with more (masked) slots leaves its real objects' draws, and hence
  every output, unchanged.
  """
  b, o, d = shape
  draw = lambda k: jax.random.normal(jax.random.fold_in(key, k), (b, d),
                                     jnp.float32)
  return jnp.swapaxes(jax.vmap(draw)(jnp.arange(o)), 0, 1)


def box_masks(boxes: Array, size: int, nonempty: bool) -> Array:
  """Binary box masks [..., size, size] float32 of boxes [..., 4] (x0,y0,x1,y1).

  As the reference loaders: rows round(y0·S) ≤ r < round(y1·S), columns
  alike, with round half to even (Python's `round`). nonempty=True is the
  COCO loader's max(round(y0·S) + 1, round(y1·S)) end (at least one row and
  column); the VG loader has no such guard (nonempty=False).
  """
  idx = jnp.arange(size, dtype=jnp.float32)

  def axis(lo, hi):
    start, end = jnp.round(lo * size), jnp.round(hi * size)
    if nonempty:
      end = jnp.maximum(start + 1.0, end)
    return ((idx >= start[..., None]) & (idx < end[..., None])).astype(
        jnp.float32)

  rows = axis(boxes[..., 1], boxes[..., 3])
  cols = axis(boxes[..., 0], boxes[..., 2])
  return rows[..., :, None] * cols[..., None, :]


def _sample_matrix(lo: Array, hi: Array, n_out: int, n_in: int) -> Array:
  """[..., n_out, n_in] bilinear weights of samples at linspace(lo, hi)·(n_in−1)
  (grid_sample with align_corners=True and zero padding)."""
  t = jnp.linspace(0.0, 1.0, n_out, dtype=jnp.float32)
  pos = (lo[..., None] + (hi - lo)[..., None] * t) * (n_in - 1)
  src = jnp.arange(n_in, dtype=jnp.float32)
  return jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - src))


def crop_boxes(images: Array, boxes: Array, size: int) -> Array:
  """sg2im's `crop_bbox_batch`: crops [B, O, size, size, C] of images
  [B, H, W, C] at boxes [B, O, 4] (normalised x0, y0, x1, y1).

  Output pixel (j, k) samples the image bilinearly at (y0 + (y1−y0)·j/(S−1),
  x0 + (x1−x0)·k/(S−1)) in align_corners=True coordinates (PyTorch 1.0's
  `grid_sample`), zero outside the image. Separable: Ay · image · Axᵀ.
  """
  b = boxes.astype(jnp.float32)
  h, w = images.shape[1:3]
  ay = _sample_matrix(b[..., 1], b[..., 3], size, h).astype(images.dtype)
  ax = _sample_matrix(b[..., 0], b[..., 2], size, w).astype(images.dtype)
  return jnp.einsum('bojh,bhwc,bokw->bojkc', ay, images, ax)


def _torch_bn_scale(key, shape, dtype=layers.PARAM_DTYPE):
  """torch 1.0 `BatchNorm2d.reset_parameters`: weight ~ U(0, 1)."""
  return jax.random.uniform(key, shape, dtype)


def _conv(x: Array, features: int, kernel: int, stride: int, padding: int,
          *, dtype: Dtype, name: str, bias: bool = False) -> Array:
  """`nn.Conv2d(in, features, kernel, stride, padding, bias)`, torch init."""
  return layers.torch_conv(
      features, kernel, stride, padding, use_bias=bias, dtype=dtype,
      kernel_init=layers.torch_default_conv_init(),
      bias_init=layers.torch_default_bias_init(x.shape[-1] * kernel ** 2),
      name=name)(x)


def _bn(x: Array, train: bool, dtype: Dtype, name: str) -> Array:
  """`nn.BatchNorm2d(C)` (affine) with torch 1.0's init."""
  return layers.batch_norm(use_running_average=not train, dtype=dtype,
                           scale_init=_torch_bn_scale, name=name)(x)


def _dense(x: Array, features: int, name: str, dtype: Dtype) -> Array:
  """`nn.Linear(in, features)` with PyTorch's default init."""
  return nn.Dense(features, dtype=dtype, param_dtype=layers.PARAM_DTYPE,
                  kernel_init=layers.torch_default_conv_init(),
                  bias_init=layers.torch_default_bias_init(x.shape[-1]),
                  name=name)(x)


# (kernel, stride, padding, width multiplier) of the crop encoder's convs.
_CROP_CONVS = ((7, 1, 3, 1), (4, 2, 1, 2), (4, 2, 1, 4), (4, 2, 1, 8),
               (4, 2, 1, 16))
# ... and of the layout encoder's (the 1×1 conv with padding 1 first).
_LAYOUT_CONVS = ((1, 1, 1, 1), (4, 2, 1, 2), (4, 2, 1, 4), (4, 2, 1, 8))


class CropEncoder(nn.Module):
  """Object estimator: crops [N, S, S, 3] → (μ, log σ²) [N, z_dim] each.

  conv7 (ch) → conv4/2 (2, 4, 8, 16·ch), each without bias, CBN, ReLU;
  global average pool; `fc_mu`, `fc_logvar` linears with bias.
  """
  num_classes: int
  ch: int = 64
  z_dim: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, crops: Array, classes: Array, valid: Array, *,
               train: bool) -> tuple[Array, Array]:
    x = crops.astype(self.dtype)
    for i, (k, s, p, mult) in enumerate(_CROP_CONVS):
      x = _conv(x, self.ch * mult, k, s, p, dtype=self.dtype, name=f'c{i + 1}')
      x = layers.ConditionalBatchNorm(self.num_classes, self.dtype,
                                      name=f'bn{i + 1}')(
                                          x, classes, train=train, mask=valid)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    mu = _dense(x, self.z_dim, 'fc_mu', self.dtype)
    logvar = _dense(x, self.z_dim, 'fc_logvar', self.dtype)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)


class ResidualBlock(nn.Module):
  """x + BN(conv3(ReLU(BN(conv3(x))))), convs without bias."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    c = x.shape[-1]
    h = _conv(x, c, 3, 1, 1, dtype=self.dtype, name='conv1')
    h = nn.relu(_bn(h, train, self.dtype, 'bn1'))
    h = _conv(h, c, 3, 1, 1, dtype=self.dtype, name='conv2')
    return x + _bn(h, train, self.dtype, 'bn2')


class LayoutEncoder(nn.Module):
  """Object composer + encoder + fuser: per-object maps → [B, S/8, S/8, C].

  Attributes:
    hidden: ConvLSTM widths (128, 64, 64); the residual blocks run at
      hidden[-1] channels.
  """
  num_classes: int
  ch: int = 64
  embed_dim: int = 64
  hidden: Sequence[int] = (128, 64, 64)
  kernel: int = 5
  num_res: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, classes: Array, masks: Array, z: Array, valid: Array, *,
               train: bool) -> Array:
    """classes [B,O], masks [B,O,S,S], z [B,O,z], valid [B,O] bool."""
    b, o, s = masks.shape[:3]
    emb = nn.Embed(self.num_classes, self.embed_dim,
                   embedding_init=nn.initializers.normal(1.0),
                   param_dtype=layers.PARAM_DTYPE, name='embedding')(classes)
    code = jnp.concatenate([emb, z.astype(emb.dtype)], axis=-1)
    x = code[:, :, None, None, :] * masks[..., None]
    x = x.reshape(b * o, s, s, -1).astype(self.dtype)
    flat_y, flat_valid = classes.reshape(-1), valid.reshape(-1)
    for i, (k, st, p, mult) in enumerate(_LAYOUT_CONVS):
      x = _conv(x, self.ch * mult, k, st, p, dtype=self.dtype,
                name=f'c{i + 1}')
      x = layers.ConditionalBatchNorm(self.num_classes, self.dtype,
                                      name=f'bn{i + 1}')(
                                          x, flat_y, train=train,
                                          mask=flat_valid)
      if i < len(_LAYOUT_CONVS) - 1:   # c4 → bn4 has no ReLU
        x = nn.relu(x)
    x = x.reshape(b, o, *x.shape[1:])
    h = layers.ConvLSTM(self.hidden, self.kernel, self.dtype, name='clstm')(
        x, valid)
    for i in range(self.num_res):
      h = ResidualBlock(self.dtype, name=f'res{i}')(h, train=train)
    return h


class Decoder(nn.Module):
  """[B, S/8, S/8, C] → image [B, S, S, 3] in ImageNet-normalised space.

  conv3 (4·ch), convT4/2 (4, 2, 1·ch), each without bias, BN, ReLU; conv7
  to 3 channels with bias, no tanh.
  """
  ch: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, *, train: bool) -> Array:
    x = _conv(h.astype(self.dtype), self.ch * 4, 3, 1, 1, dtype=self.dtype,
              name='c0')
    x = nn.relu(_bn(x, train, self.dtype, 'bn0'))
    for i, mult in enumerate((4, 2, 1)):
      x = layers.torch_conv_transpose(
          self.ch * mult, 4, 2, 1, use_bias=False, dtype=self.dtype,
          kernel_init=layers.torch_default_conv_init(transpose=True),
          name=f'dc{i + 1}')(x)
      x = nn.relu(_bn(x, train, self.dtype, f'bn{i + 1}'))
    x = _conv(x, 3, 7, 1, 3, dtype=self.dtype, name='c4', bias=True)
    return x.astype(jnp.float32)


class Layout2ImGenerator(nn.Module):
  """The whole generator (`Generator`), reference defaults at 64×64.

  Attributes:
    num_classes: vocabulary size (184 COCO-Stuff, 179 VG).
    resolution: image size S (64); the fused maps are S/8.
    crop_size: object crops (32).
    ch: width of the encoders and the decoder (64).
    z_dim, embed_dim: appearance code and category embedding (64, 64).
    hidden, kernel: ConvLSTM widths and kernel ((128, 64, 64), 5).
    num_res: residual blocks after the fuser (6).
    box_mask_nonempty: the COCO loader's ≥ 1-pixel box masks (`box_masks`).
    z_rec_fixed_encoder: False (the reference): the latent regression on
      generated crops trains the crop encoder too; True: G only.
    dtype: compute dtype; params, statistics and outputs float32.
  """
  num_classes: int
  resolution: int = 64
  crop_size: int = 32
  ch: int = 64
  z_dim: int = 64
  embed_dim: int = 64
  hidden: Sequence[int] = (128, 64, 64)
  kernel: int = 5
  num_res: int = 6
  box_mask_nonempty: bool = True
  z_rec_fixed_encoder: bool = False
  dtype: Dtype = jnp.float32

  def setup(self):
    self.crop_encoder = CropEncoder(self.num_classes, self.ch, self.z_dim,
                                    self.dtype)
    self.layout_encoder = LayoutEncoder(
        self.num_classes, self.ch, self.embed_dim, tuple(self.hidden),
        self.kernel, self.num_res, self.dtype)
    self.decoder = Decoder(self.ch, self.dtype)

  def _masks(self, boxes: Array, valid: Array) -> Array:
    m = box_masks(boxes, self.resolution, self.box_mask_nonempty)
    return m * valid[..., None, None].astype(m.dtype)

  def __call__(self, image: Array, boxes: Array, classes: Array,
               valid: Array, z_rand: Array, *, train: bool
               ) -> dict[str, Array]:
    """`Generator.forward`: both passes of one training iteration.

    Args:
      image: real images [B, S, S, 3], ImageNet-normalised float.
      boxes, classes, valid: [B, O, 4] float, [B, O] int, [B, O] bool.
      z_rand: [B, O, z_dim] sampled appearance codes.
      train: batch statistics (and running-average updates, in the
        reference's order E(real), LE(rec), LE(rand), Dec(rec), Dec(rand),
        E(rand)) when True.

    Returns:
      crops_real / crops_rec / crops_rand [B, O, c, c, 3], img_rec /
      img_rand [B, S, S, 3], mu / logvar [B, O, z] of the real crops and
      z_rand_rec [B, O, z] (the encoder MEAN of the generated crops).
    """
    c = self.crop_size
    masks = self._masks(boxes, valid)
    crops_real = crop_boxes(image.astype(jnp.float32), boxes, c)
    mu, logvar = self._estimate(crops_real, classes, valid, train)
    eps = slot_normal(self.make_rng('eps'), mu.shape)
    z_rec = mu + eps * jnp.exp(0.5 * logvar)
    h_rec = self.layout_encoder(classes, masks, z_rec, valid, train=train)
    h_rand = self.layout_encoder(classes, masks, z_rand, valid, train=train)
    img_rec = self.decoder(h_rec, train=train)
    img_rand = self.decoder(h_rand, train=train)
    crops_rand = crop_boxes(img_rand, boxes, c)
    if self.z_rec_fixed_encoder:
      # BicycleGAN's latent regression (Zhu et al. 2017, Sec. 3.3): the
      # regression on generated crops trains G only; the crop encoder's
      # parameters are constants there (their batch statistics still move).
      # Not the reference's (its gradients reach E too): a demo option.
      estimate = nn.map_variables(
          lambda mdl, *a: mdl._estimate(*a), 'params',
          trans_in_fn=lambda v: jax.tree.map(jax.lax.stop_gradient, v),
          mutable=False)
      z_rand_rec, _ = estimate(self, crops_rand, classes, valid, train)
    else:
      z_rand_rec, _ = self._estimate(crops_rand, classes, valid, train)
    return dict(crops_real=crops_real, crops_rec=crop_boxes(img_rec, boxes, c),
                crops_rand=crops_rand, img_rec=img_rec, img_rand=img_rand,
                mu=mu, logvar=logvar, z_rand_rec=z_rand_rec)

  def generate(self, boxes: Array, classes: Array, valid: Array, z: Array, *,
               train: bool = False) -> Array:
    """Layout + codes z [B, O, z_dim] → image [B, S, S, 3] (normalised)."""
    h = self.layout_encoder(classes, self._masks(boxes, valid), z, valid,
                            train=train)
    return self.decoder(h, train=train)

  def encode(self, image: Array, boxes: Array, classes: Array, valid: Array,
             *, train: bool = False) -> tuple[Array, Array]:
    """(μ, log σ²) [B, O, z_dim] of the objects of normalised images."""
    crops = crop_boxes(image.astype(jnp.float32), boxes, self.crop_size)
    return self._estimate(crops, classes, valid, train)

  def _estimate(self, crops: Array, classes: Array, valid: Array,
                train: bool) -> tuple[Array, Array]:
    """The crop encoder on [B, O, c, c, 3] crops (objects flattened)."""
    b, o = classes.shape
    mu, logvar = self.crop_encoder(
        crops.reshape(b * o, *crops.shape[2:]), classes.reshape(-1),
        valid.reshape(-1), train=train)
    return mu.reshape(b, o, -1), logvar.reshape(b, o, -1)
