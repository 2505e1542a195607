"""Layout2Im (Zhao et al., CVPR 2019): a VAE-GAN from layouts.

Facts: reference/layout2im.md §4–6 (official zhaobozb/layout2im train.py /
test.py). Every iteration, G runs both of its paths: reconstruction (z of
each object encoded from its real crop, reparameterised) and generation
(z_rand ~ N(0, I)). BCE-with-logits GAN losses:

  L_D = λ_img_adv·[BCE(D_img(real), 1) + ½BCE(D_img(rec), 0)
                   + ½BCE(D_img(rand), 0)]
      + λ_obj_adv·[BCE(D_src(crops_real), 1) + ½BCE(D_src(crops_rec), 0)
                   + ½BCE(D_src(crops_rand), 0)]
      + λ_obj_cls·CE(D_cls(crops_real), y)
  L_G = λ_img_rec·mean|img_rec − real| + λ_z_rec·mean|μ(E(crops_rand)) − z|
      + λ_img_adv·½[BCE(D_img(rec), 1) + BCE(D_img(rand), 1)]
      + λ_obj_adv·½[BCE(D_src(crops_rec), 1) + BCE(D_src(crops_rand), 1)]
      + λ_obj_cls·½[CE(D_cls(crops_rec), y) + CE(D_cls(crops_rand), y)]
      + λ_kl·(−½ Σ (1 + log σ² − μ² − σ²))     summed over objects and dims

Object terms are means over the valid objects of the batch (the
reference's flat object list; padded slots are left out), the KL a sum over
them. D is updated first on G's outputs; then G is run AGAIN for its own
update (share_fake=False) with the same z_rand — the trainer passes the same
key on purpose — and a fresh ε of the crop encoder (`regenerate`), as the
second `netG(...)` call of train.py draws it anew. BatchNorm statistics of G
thus move twice per iteration, and every train-mode D call makes one
spectral-norm power iteration, in the reference's call order.

Sampling (evaluation, image grids, jaxl2i.generate) is test.py's: G in eval
mode, z ~ N(0, I) per object, output deprocessed from ImageNet space and
min-max stretched per image (`model.minmax_stretch`; False clips instead);
the evaluators then quantise by truncation (`uint8='truncate'`, the byte
cast of `imagenet_deprocess_batch`).

config.model: resolution (64), crop_size (32), ch (64), z_dim (64),
  embed_dim (64), clstm_hidden ((128, 64, 64)), clstm_kernel (5), num_res
  (6), d_img_ch (64: train.py passes embedding_dim), d_obj_ch (64),
  box_mask_nonempty (True COCO loader, False VG loader), minmax_stretch,
  z_rec_fixed_encoder (False: the reference; True: the latent regression
  trains G only, as BicycleGAN's).
config.loss: img_adv, obj_adv, obj_cls, img_rec, z_rec, kl, adv_warmup (0:
  the reference; N > 0 ramps G's adversarial and classifier weights linearly
  from 0 to 1 over the first N steps, D unchanged: not in train.py).
Batches: image, boxes, classes, objects_mask (`pad_objects`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxl2i import config_lib
from jaxl2i import losses
from jaxl2i import visualize
from jaxl2i.models import layout2im as l2i
from jaxl2i.models import layout2im_discriminator as l2i_d
from jaxl2i.recipes import base

G_MUTABLE = ['batch_stats']
D_MUTABLE = ['spectral_norm']


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean of x [B, O, ...] over the valid objects (valid [B, O])."""
  v = jnp.broadcast_to(valid.reshape(*valid.shape, *(1,) * (x.ndim - 2)),
                       x.shape).astype(jnp.float32)
  return jnp.sum(x.astype(jnp.float32) * v) / jnp.maximum(jnp.sum(v), 1.0)


def object_bce(logits: jax.Array, target: float, valid: jax.Array):
  """BCE-with-logits of object logits [B, O] against a constant target."""
  logits = logits.astype(jnp.float32)
  return masked_mean(optax.sigmoid_binary_cross_entropy(
      logits, jnp.full_like(logits, target)), valid)


def object_ce(logits: jax.Array, classes: jax.Array, valid: jax.Array):
  """Cross-entropy of class logits [B, O, C] (F.cross_entropy)."""
  return masked_mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), classes), valid)


def kl_objects(mu: jax.Array, logvar: jax.Array, valid: jax.Array):
  """KL of N(μ, σ²) to N(0, I) summed over the valid objects and dims."""
  ok = valid[..., None]
  return losses.kl_normal(jnp.where(ok, mu, 0.0), jnp.where(ok, logvar, 0.0))


def adversarial_ramp(step, warmup: int) -> jax.Array:
  """Weight of G's adversarial and classifier terms: 1 (the reference)
  when warmup is 0, else rising linearly to 1 over the first `warmup` steps.
  """
  if warmup <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.clip((jnp.asarray(step, jnp.float32) + 1) / warmup, 0.0, 1.0)


class Recipe(base.Recipe):
  """Layout2Im: D then G, G run again on the same z_rand."""

  order = ('d', 'g')
  share_fake = False

  def build(self):
    m = self.config.model
    if m.resolution % 8 or m.resolution < 16:
      raise config_lib.ConfigError(
          f'config.model.resolution={m.resolution}: Layout2Im needs a '
          'multiple of 8, at least 16 (64 in the reference)')
    nc = self.meta.num_classes
    g = l2i.Layout2ImGenerator(
        num_classes=nc, resolution=m.resolution, crop_size=m.crop_size,
        ch=m.ch, z_dim=m.z_dim, embed_dim=m.embed_dim,
        hidden=tuple(m.clstm_hidden), kernel=m.clstm_kernel,
        num_res=m.num_res, box_mask_nonempty=m.box_mask_nonempty,
        z_rec_fixed_encoder=m.z_rec_fixed_encoder,
        dtype=self.dtype)
    d = l2i_d.Layout2ImDiscriminator(num_classes=nc, img_ch=m.d_img_ch,
                                     obj_ch=m.d_obj_ch, dtype=self.dtype)
    return g, d

  # --- inputs ------------------------------------------------------------

  def _check(self, batch) -> None:
    base.check_layout_batch(batch, self.config.model.resolution, 'Layout2Im')

  def _z(self, key, batch) -> jax.Array:
    """z ~ N(0, I) [B, O, z_dim], per slot (`slot_normal`)."""
    b, o = batch['classes'].shape
    return l2i.slot_normal(key, (b, o, self.config.model.z_dim))

  def _layout(self, batch):
    return batch['boxes'], batch['classes'], batch['objects_mask']

  def init(self, key, batch):
    self._check(batch)
    k_g, k_eps, k_d = jax.random.split(key, 3)
    real = l2i.normalize_images(batch['image'])
    g_vars = self.g.init({'params': k_g, 'eps': k_eps}, real,
                         *self._layout(batch), self._z(k_eps, batch),
                         train=False)
    b, o = batch['classes'].shape
    c = self.config.model.crop_size
    d_vars = self.d.init(k_d, real.astype(self.dtype),
                         jnp.zeros((b, o, c, c, 3), self.dtype), train=False)
    return g_vars, d_vars

  # --- training ----------------------------------------------------------

  def _forward(self, g_params, nets, batch, k_z, k_eps):
    z_rand = self._z(k_z, batch)
    out, g_state = self.g.apply(
        {'params': g_params, **nets.g.state},
        l2i.normalize_images(batch['image']), *self._layout(batch), z_rand,
        train=True, rngs={'eps': k_eps}, mutable=G_MUTABLE)
    return {**out, 'z_rand': z_rand}, g_state

  def generate(self, g_params, nets, batch, key):
    k_z, k_eps = jax.random.split(key)
    return self._forward(g_params, nets, batch, k_z, k_eps)

  def regenerate(self, g_params, nets, batch, key, fresh_key):
    # The same z_rand as the D update's forward (train.py passes `z` to both
    # netG calls); the crop encoder's ε is drawn anew (torch.randn inside
    # CropEncoder.forward).
    k_z, _ = jax.random.split(key)
    return self._forward(g_params, nets, batch, k_z, fresh_key)

  def _d_img(self, d_params, d_state, images):
    """One train-mode image-D call (one spectral-norm power iteration)."""
    return self.d.apply({'params': d_params, **d_state},
                        images.astype(self.dtype), train=True,
                        method=l2i_d.Layout2ImDiscriminator.image,
                        mutable=D_MUTABLE)

  def _d_obj(self, d_params, d_state, crops):
    """One train-mode object-D call → (src [B,O], cls [B,O,C], state)."""
    (src, cls), d_state = self.d.apply(
        {'params': d_params, **d_state}, crops.astype(self.dtype), train=True,
        method=l2i_d.Layout2ImDiscriminator.objects, mutable=D_MUTABLE)
    return src, cls, d_state

  def d_loss(self, d_params, nets, batch, out, key):
    del key
    lam, valid = self.config.loss, batch['objects_mask']
    # train.py's call order: D_img on rec, rand, real; D_obj alike.
    st = nets.d.state
    f_rec, st = self._d_img(d_params, st, out['img_rec'])
    f_rand, st = self._d_img(d_params, st, out['img_rand'])
    r_img, st = self._d_img(d_params, st, l2i.normalize_images(batch['image']))
    s_rec, _, st = self._d_obj(d_params, st, out['crops_rec'])
    s_rand, _, st = self._d_obj(d_params, st, out['crops_rand'])
    s_real, c_real, st = self._d_obj(d_params, st, out['crops_real'])
    img_fake = 0.5 * (losses.bce_with_logits(f_rec, 0.0) +
                      losses.bce_with_logits(f_rand, 0.0))
    img_real = losses.bce_with_logits(r_img, 1.0)
    obj_fake = 0.5 * (object_bce(s_rec, 0.0, valid) +
                      object_bce(s_rand, 0.0, valid))
    obj_real = object_bce(s_real, 1.0, valid)
    obj_cls = object_ce(c_real, batch['classes'], valid)
    loss = (lam.img_adv * (img_fake + img_real) +
            lam.obj_adv * (obj_fake + obj_real) + lam.obj_cls * obj_cls)
    metrics = {'d/img_real': img_real, 'd/img_fake': img_fake,
               'd/obj_real': obj_real, 'd/obj_fake': obj_fake,
               'd/obj_cls': obj_cls}
    return loss, (metrics, st)

  def g_loss(self, out, nets, batch, key):
    del key
    lam, valid, y = self.config.loss, batch['objects_mask'], batch['classes']
    d_params, st = nets.d.params, nets.d.state
    f_rec, st = self._d_img(d_params, st, out['img_rec'])
    f_rand, st = self._d_img(d_params, st, out['img_rand'])
    s_rec, c_rec, st = self._d_obj(d_params, st, out['crops_rec'])
    s_rand, c_rand, st = self._d_obj(d_params, st, out['crops_rand'])
    rec_img = losses.l1(out['img_rec'], l2i.normalize_images(batch['image']))
    rec_z = masked_mean(jnp.abs(out['z_rand_rec'] - out['z_rand']), valid)
    kl = kl_objects(out['mu'], out['logvar'], valid)
    img_adv = 0.5 * (losses.bce_with_logits(f_rec, 1.0) +
                     losses.bce_with_logits(f_rand, 1.0))
    obj_adv = 0.5 * (object_bce(s_rec, 1.0, valid) +
                     object_bce(s_rand, 1.0, valid))
    obj_cls = 0.5 * (object_ce(c_rec, y, valid) + object_ce(c_rand, y, valid))
    ramp = adversarial_ramp(nets.step, lam.get('adv_warmup', 0))
    loss = (lam.img_rec * rec_img + lam.z_rec * rec_z + lam.kl * kl + ramp * (
        lam.img_adv * img_adv + lam.obj_adv * obj_adv + lam.obj_cls * obj_cls))
    metrics = {'g/adv_ramp': ramp, 'g/img_adv': img_adv, 'g/obj_adv': obj_adv,
               'g/obj_cls': obj_cls, 'g/rec_img': rec_img, 'g/rec_z': rec_z,
               'g/kl': kl}
    return loss, (metrics, st)

  # --- sampling ----------------------------------------------------------

  def _image(self, normalised):
    return l2i.deprocess(normalised, self.config.model.minmax_stretch)

  def sample(self, g_variables, batch, key):
    """test.py: eval mode, z ~ N(0, I), deprocessed to [-1, 1]."""
    image = self.g.apply(g_variables, *self._layout(batch),
                         self._z(key, batch), train=False,
                         method=l2i.Layout2ImGenerator.generate)
    return self._image(image)

  def reconstruct(self, g_variables, batch):
    """Eval-mode reconstruction of the real images from the encoder's μ."""
    mu, _ = self.g.apply(g_variables, l2i.normalize_images(batch['image']),
                         *self._layout(batch), train=False,
                         method=l2i.Layout2ImGenerator.encode)
    image = self.g.apply(g_variables, *self._layout(batch), mu, train=False,
                         method=l2i.Layout2ImGenerator.generate)
    return self._image(image)

  def object_z_effect(self, g_variables, batch, key, draws: int = 4):
    """How far each object's z acts outside its own box.

    For every object slot j, `draws` new codes z_j (all other objects keep
    theirs) are decoded in eval mode. The mean |Δ image| over the draws and
    channels (output clipped to [-1, 1], not min-max stretched, since a
    per-image stretch would spread a local change over the whole image) is
    averaged inside j's box mask and outside it. Per-object appearance
    codes show as inside ≫ outside; a code that only steers the whole scene
    shows as inside ≈ outside.

    Returns:
      (inside, outside), each [B, O] float32. A padded slot changes nothing
      (both ≈ 0 there, up to rounding); callers mask such slots out.
    """
    boxes, classes, valid = self._layout(batch)
    k_base, k_new = jax.random.split(key)
    z0 = self._z(k_base, batch)
    b, o, d = z0.shape

    def image(z):
      out = self.g.apply(g_variables, boxes, classes, valid, z, train=False,
                         method=l2i.Layout2ImGenerator.generate)
      return l2i.deprocess(out, stretch=False)

    base_image = image(z0)
    m = self.config.model
    masks = l2i.box_masks(boxes, m.resolution, m.box_mask_nonempty)

    def slot(j):
      def redraw(k):
        zj = jax.random.normal(jax.random.fold_in(jax.random.fold_in(
            k_new, j), k), (b, d), z0.dtype)
        return jnp.abs(image(z0.at[:, j].set(zj)) - base_image).mean(-1)
      change = jax.vmap(redraw)(jnp.arange(draws)).mean(0)     # [B, S, S]
      inside = masks[:, j]
      mean_over = lambda w: (change * w).sum((1, 2)) / jnp.maximum(
          w.sum((1, 2)), 1.0)
      return mean_over(inside), mean_over(1.0 - inside)

    inside, outside = jax.lax.map(slot, jnp.arange(o))         # [O, B] each
    return inside.T, outside.T

  def grid_column_names(self):
    return (' reconstruction', ' generation')

  def grid_samples(self, g_variables, batch, key):
    return self.reconstruct(g_variables, batch), self.sample(g_variables,
                                                             batch, key)

  def grid_inputs(self, batch):
    return visualize.draw_boxes(batch['boxes'], batch['classes'],
                                np.asarray(batch['objects_mask'], bool),
                                batch['image'].shape[1:3],
                                self.meta.num_classes)
