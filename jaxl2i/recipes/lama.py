"""LAMA (Li et al., ICCV 2021): layout → object masks → image, hinge GAN.

Facts: reference/lama_lostgan.md §5–6, 8 (official `ZejianLi/LAMA`
train.py / test.py / utils/util.py):
  D: λ_obj·[mean relu(1 − D_obj(real)) + mean relu(1 + D_obj(fake))]
     + λ_img·[mean relu(1 − D_img(real)) + mean relu(1 + D_img(fake))],
     λ_obj 1.0, λ_img 0.1; object means over the valid (class ≠ 0) objects.
  G: −λ_obj·mean D_obj(fake) − λ_img·mean D_img(fake).
One fake per iteration: D trains on it, then G through the same tensor with
the updated D (share_fake). D sees the real batch first, then the fake one;
each train-mode D call makes one spectral-norm power iteration, as there.
No reconstruction or perceptual loss (the paper's ablation found it worse).

Latents: z_img [B, z], z_obj [B, O, z] ~ N(0, 1) in training; sampling for
grids and evaluation truncates them as `truncted_random` does: entries with
|z| > model.truncation are redrawn once (and may still exceed it).

config.model: arch ('lama', or 'lostgan_v1': LostGAN-V1's generator and
  discriminator, models/lostgan_v1.py), resolution (64|128|256; the images'
  size),
  ch, z_dim, embed_dim (0: 128/160/192 by resolution), mask_hidden,
  mask_adaption (False: the paper's no-adaption ablation), mask_source
  ('generated', or 'gt': train the mask-to-image part on ground-truth object
  masks from the `instance` map, the paper's Sec. 3 experiment), truncation
  (eval-time threshold, 0 = none).
config.loss: img (0.1), obj (1.0).
Batches: image, boxes, classes, objects_mask (pad_objects), and `instance`
(object slot k has instance id k + 1) when ground-truth masks are used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import config_lib
from jaxl2i import visualize
from jaxl2i.metrics import mask_entropy as entropy_lib
from jaxl2i.models import lama as lama_g
from jaxl2i.models import lama_discriminator as lama_d
from jaxl2i.models import lostgan_v1
from jaxl2i.recipes import base

G_MUTABLE = ['batch_stats', 'spectral_norm']
D_MUTABLE = ['spectral_norm']
ARCHS = ('lama', 'lostgan_v1')
RESOLUTIONS = {'lama': (64, 128, 256), 'lostgan_v1': (64, 128)}
MASK_SOURCES = ('generated', 'gt')


def truncated_normal(key: jax.Array, shape, threshold: float) -> jax.Array:
  """N(0, 1) with entries beyond ±threshold redrawn once (0: no redraw)."""
  k1, k2 = jax.random.split(key)
  z = jax.random.normal(k1, shape, jnp.float32)
  if threshold <= 0:
    return z
  return jnp.where(jnp.abs(z) > threshold,
                   jax.random.normal(k2, shape, jnp.float32), z)


def gt_masks(batch, num_slots: int) -> jax.Array:
  """[B, O, H, W] float32 one-hot object masks from the instance map."""
  ids = jnp.arange(1, num_slots + 1, dtype=jnp.int32)
  m = batch['instance'][:, None] == ids[None, :, None, None]
  m = m & batch['objects_mask'][..., None, None].astype(bool)
  return m.astype(jnp.float32)


def colorize_masks(masks: jax.Array, classes: jax.Array, valid: jax.Array,
                   num_classes: int) -> jax.Array:
  """Object masks [B,O,H,W] as pictures [B,H,W,3] in [-1, 1].

  Each pixel mixes its objects' class colours by mask weight, divided by
  max(Σ weights, 1): overlap shows as blended colours, weak coverage as
  dark, background as black.
  """
  lut = jnp.asarray(visualize.palette(num_classes), jnp.float32) / 255.0
  m = masks.astype(jnp.float32) * valid[..., None, None]
  colour = lut[jnp.clip(classes, 0, num_classes - 1)]          # [B,O,3]
  total = jnp.maximum(jnp.sum(m, axis=1), 1.0)[..., None]       # [B,H,W,1]
  pic = jnp.einsum('bohw,boc->bhwc', m, colour) / total
  return pic * 2.0 - 1.0


def _masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
  v = valid.astype(jnp.float32)
  return jnp.sum(x.astype(jnp.float32) * v) / jnp.maximum(jnp.sum(v), 1.0)


class Recipe(base.Recipe):
  """LAMA / LostGAN: D then G on one shared fake, hinge losses."""

  order = ('d', 'g')
  share_fake = True

  def build(self):
    m = self.config.model
    if m.arch not in ARCHS:
      raise config_lib.ConfigError(
          f'config.model.arch={m.arch!r}: use one of {ARCHS}')
    if m.mask_source not in MASK_SOURCES:
      raise config_lib.ConfigError(
          f'config.model.mask_source={m.mask_source!r}: use one of '
          f'{MASK_SOURCES}')
    if m.resolution not in RESOLUTIONS[m.arch]:
      raise config_lib.ConfigError(
          f'config.model.resolution={m.resolution}: {m.arch} has generators '
          f'for {RESOLUTIONS[m.arch]}')
    nc = self.meta.num_classes
    if m.arch == 'lostgan_v1':
      if m.mask_adaption:
        raise config_lib.ConfigError(
            "model.arch='lostgan_v1' has no mask adaption: set "
            'model.mask_adaption=False')
      g = lostgan_v1.LostGanV1Generator(
          resolution=m.resolution, num_classes=nc, ch=m.ch, z_dim=m.z_dim,
          embed_dim=m.embed_dim or None, mask_hidden=m.mask_hidden,
          dtype=self.dtype)
      d = lostgan_v1.LostGanV1Discriminator(
          resolution=m.resolution, num_classes=nc, ch=m.d_ch,
          dtype=self.dtype)
      return g, d
    g = lama_g.LamaGenerator(
        resolution=m.resolution, num_classes=nc, ch=m.ch, z_dim=m.z_dim,
        embed_dim=m.embed_dim or None, mask_hidden=m.mask_hidden,
        mask_adaption=m.mask_adaption, dtype=self.dtype)
    d = lama_d.LamaDiscriminator(resolution=m.resolution, num_classes=nc,
                                 ch=m.d_ch, dtype=self.dtype)
    return g, d

  # --- inputs ------------------------------------------------------------

  def _check(self, batch) -> None:
    base.check_layout_batch(batch, self.config.model.resolution, 'LAMA')
    if self.config.model.mask_source == 'gt' and 'instance' not in batch:
      raise config_lib.ConfigError(
          "model.mask_source='gt' needs the 'instance' map in the batches "
          '(keep it in data.pp_*; the dataset must have one)')

  def latents(self, key, batch, truncation: float = 0.0):
    b, o = batch['classes'].shape
    k_img, k_obj = jax.random.split(key)
    z = self.config.model.z_dim
    return (truncated_normal(k_img, (b, z), truncation),
            truncated_normal(k_obj, (b, o, z), truncation))

  def _g(self, variables, batch, key, *, train: bool, truncation: float = 0.0,
         masks=None):
    """G on a batch → ((image, adapted, raw), new mutable collections)."""
    k_z, k_noise = jax.random.split(key)
    z_img, z_obj = self.latents(k_z, batch, truncation)
    if masks is None and self.config.model.mask_source == 'gt':
      masks = gt_masks(batch, batch['classes'].shape[1])
    out = self.g.apply(
        variables, z_img, z_obj, batch['boxes'], batch['classes'],
        batch['objects_mask'], train=train, return_masks=True, masks=masks,
        rngs={'noise': k_noise}, mutable=G_MUTABLE if train else False)
    return out if train else (out, {})

  def _d(self, d_params, d_state, images, batch):
    (d_img, d_obj, valid), d_state = self.d.apply(
        {'params': d_params, **d_state}, images.astype(self.dtype),
        batch['boxes'], batch['classes'], batch['objects_mask'], train=True,
        mutable=D_MUTABLE)
    return d_img.astype(jnp.float32), d_obj.astype(jnp.float32), valid, d_state

  # --- recipe ------------------------------------------------------------

  def init(self, key, batch):
    self._check(batch)
    k_g, k_noise, k_z, k_d = jax.random.split(key, 4)
    z_img, z_obj = self.latents(k_z, batch)
    masks = (gt_masks(batch, batch['classes'].shape[1])
             if self.config.model.mask_source == 'gt' else None)
    g_vars = self.g.init({'params': k_g, 'noise': k_noise}, z_img, z_obj,
                         batch['boxes'], batch['classes'],
                         batch['objects_mask'], train=False, masks=masks)
    real = base.image_to_float(batch['image']).astype(self.dtype)
    d_vars = self.d.init(k_d, real, batch['boxes'], batch['classes'],
                         batch['objects_mask'], train=False)
    return g_vars, d_vars

  def generate(self, g_params, nets, batch, key):
    (image, masks, raw), g_state = self._g(
        {'params': g_params, **nets.g.state}, batch, key, train=True)
    return {'image': image.astype(jnp.float32), 'masks': masks,
            'raw_masks': raw}, g_state

  def d_loss(self, d_params, nets, batch, out, key):
    del key
    lam = self.config.loss
    real = base.image_to_float(batch['image'])
    r_img, r_obj, valid, d_state = self._d(d_params, nets.d.state, real, batch)
    f_img, f_obj, _, d_state = self._d(d_params, d_state, out['image'], batch)
    img_real = jnp.mean(jax.nn.relu(1.0 - r_img))
    img_fake = jnp.mean(jax.nn.relu(1.0 + f_img))
    obj_real = _masked_mean(jax.nn.relu(1.0 - r_obj), valid)
    obj_fake = _masked_mean(jax.nn.relu(1.0 + f_obj), valid)
    loss = lam.obj * (obj_real + obj_fake) + lam.img * (img_real + img_fake)
    metrics = {'d/img_real': img_real, 'd/img_fake': img_fake,
               'd/obj_real': obj_real, 'd/obj_fake': obj_fake,
               'd/real_logit': jnp.mean(r_img),
               'd/fake_logit': jnp.mean(f_img)}
    return loss, (metrics, d_state)

  def g_loss(self, out, nets, batch, key):
    del key
    lam = self.config.loss
    f_img, f_obj, valid, d_state = self._d(nets.d.params, nets.d.state,
                                           out['image'], batch)
    g_img = -jnp.mean(f_img)
    g_obj = -_masked_mean(f_obj, valid)
    loss = lam.obj * g_obj + lam.img * g_img
    entropy = lambda m: jnp.mean(entropy_lib.mask_entropy(
        jax.lax.stop_gradient(m), batch['objects_mask']))
    metrics = {'g/img': g_img, 'g/obj': g_obj,
               'g/mask_entropy_raw': entropy(out['raw_masks']),
               'g/mask_entropy': entropy(out['masks'])}
    return loss, (metrics, d_state)

  # --- sampling ----------------------------------------------------------

  def sample_outputs(self, g_variables, batch, key, *, masks=None):
    """Eval mode, truncated latents → (image, adapted, raw) float32."""
    (image, adapted, raw), _ = self._g(
        g_variables, batch, key, train=False,
        truncation=self.config.model.truncation, masks=masks)
    return image.astype(jnp.float32), adapted, raw

  def sample(self, g_variables, batch, key):
    return self.sample_outputs(g_variables, batch, key)[0]

  def _show_adapted(self) -> bool:
    m = self.config.model
    return m.mask_adaption and m.mask_source != 'gt'

  def grid_column_names(self):
    names = (' raw masks', ' adapted masks', '')
    return names if self._show_adapted() else (names[0], names[2])

  def grid_samples(self, g_variables, batch, key):
    image, adapted, raw = self.sample_outputs(g_variables, batch, key)
    nc = self.meta.num_classes
    paint = lambda m: colorize_masks(m, batch['classes'],
                                     batch['objects_mask'], nc)
    if self._show_adapted():
      return paint(raw), paint(adapted), image
    return paint(raw), image

  def grid_inputs(self, batch):
    return visualize.draw_boxes(batch['boxes'], batch['classes'],
                                np.asarray(batch['objects_mask'], bool),
                                batch['image'].shape[1:3],
                                self.meta.num_classes)
