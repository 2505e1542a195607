"""pix2pix (Isola et al.): U-Net G + 70×70 PatchGAN, vanilla GAN + λ·L1.

Facts: reference/spade_pix2pix.md Part B (official PyTorch port
`junyanz/pytorch-CycleGAN-and-pix2pix models/pix2pix_model.py`):
  D: 0.5·[BCE(D(A, B), 1) + BCE(D(A, G(A).detach()), 0)], D called twice.
  G: BCE(D(A, G(A)), 1) + λ_L1·mean|G(A) − B|, λ_L1 = 100.
D is updated first, then G on the same fake (share_fake).

config.model: netG ('unet' (default; num_downs levels), 'resnet_9blocks'
  or 'resnet_6blocks' (the official --netG names; `norm` 'batch' as pix2pix
  or 'instance')), ngf, ndf, num_downs, n_layers_d, use_dropout,
  dropout_rate, input ('onehot': one-hot label map [+ instance edges with
  `edges`], 'color': the colourised label map in [-1,1] as pix2pix's
  Cityscapes A images), edges (bool), sample_train_mode (paper: test with
  dropout on and batch statistics).
config.loss: gan ('vanilla'), l1 (100.0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxl2i import config_lib
from jaxl2i import losses
from jaxl2i import visualize
from jaxl2i.models import pix2pix as models
from jaxl2i.recipes import base


class Recipe(base.Recipe):
  """pix2pix: D then G on one shared fake."""

  order = ('d', 'g')
  share_fake = True

  def build(self):
    m = self.config.model
    g = self.build_generator(m)
    d = models.PatchDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d,
                                  dtype=self.dtype)
    self.gan_d, self.gan_g = losses.gan_losses(self.config.loss.gan)
    return g, d

  def build_generator(self, m):
    net = m.get('netG', 'unet')
    if net == 'unet':
      return models.UNetGenerator(
          out_channels=3, ngf=m.ngf, num_downs=m.num_downs,
          use_dropout=m.use_dropout, dropout_rate=m.dropout_rate,
          dtype=self.dtype)
    blocks = {'resnet_9blocks': 9, 'resnet_6blocks': 6}
    if net not in blocks:
      raise config_lib.ConfigError(f'config.model.netG={net!r}: use unet, '
                                   f'{", ".join(blocks)}')
    return models.ResnetGenerator(
        out_channels=3, ngf=m.ngf, n_blocks=blocks[net],
        norm=m.get('norm', 'batch'), use_dropout=m.use_dropout,
        dropout_rate=m.dropout_rate, dtype=self.dtype)

  # --- inputs ------------------------------------------------------------

  def condition(self, batch) -> jax.Array:
    """The generator input A: [B,H,W,C] in the compute dtype."""
    m = self.config.model
    if m.input == 'color':
      lut = jnp.asarray(visualize.palette(self.meta.num_classes), jnp.float32)
      label = jnp.clip(batch['label'], 0, self.meta.num_classes - 1)
      return (lut[label] / 127.5 - 1.0).astype(self.dtype)
    return base.conditioning_map(batch, self.meta.num_classes,
                                 with_edges=m.edges, dtype=self.dtype)

  def _d(self, d_params, d_state, cond, image):
    x = jnp.concatenate([cond, image.astype(self.dtype)], axis=-1)
    return self.d.apply({'params': d_params, **d_state}, x, train=True,
                        mutable=list(d_state))

  # --- recipe ------------------------------------------------------------

  def init(self, key, batch):
    k_g, k_drop, k_d = jax.random.split(key, 3)
    cond = self.condition(batch)
    g_vars = self.g.init({'params': k_g, 'dropout': k_drop}, cond, train=True)
    real = base.image_to_float(batch['image'])
    d_vars = self.d.init(k_d, jnp.concatenate([cond, real.astype(self.dtype)],
                                              -1), train=True)
    return g_vars, d_vars

  def generate(self, g_params, nets, batch, key):
    fake, g_state = self.g.apply(
        {'params': g_params, **nets.g.state}, self.condition(batch),
        train=True, rngs={'dropout': key}, mutable=list(nets.g.state))
    return {'image': fake.astype(jnp.float32)}, g_state

  def d_loss(self, d_params, nets, batch, out, key):
    del key
    cond = self.condition(batch)
    # Fake first, then real, as backward_D does (BN statistics in order).
    fake_logits, d_state = self._d(d_params, nets.d.state, cond, out['image'])
    real_logits, d_state = self._d(d_params, d_state, cond,
                                   base.image_to_float(batch['image']))
    loss_real, loss_fake = self.gan_d(real_logits, fake_logits)
    loss = 0.5 * (loss_fake + loss_real)
    metrics = {'d/loss_real': loss_real, 'd/loss_fake': loss_fake,
               'd/real_logit': jnp.mean(real_logits.astype(jnp.float32)),
               'd/fake_logit': jnp.mean(fake_logits.astype(jnp.float32))}
    return loss, (metrics, d_state)

  def g_loss(self, out, nets, batch, key):
    del key
    cond = self.condition(batch)
    fake_logits, d_state = self._d(nets.d.params, nets.d.state, cond,
                                   out['image'])
    gan = self.gan_g(fake_logits)
    l1 = losses.l1(out['image'], base.image_to_float(batch['image']))
    loss = gan + self.config.loss.l1 * l1
    return loss, ({'g/gan': gan, 'g/l1': l1}, d_state)

  def sample(self, g_variables, batch, key):
    params, state = g_variables['params'], {
        k: v for k, v in g_variables.items() if k != 'params'}
    train = self.config.model.sample_train_mode
    fake, _ = self.g.apply({'params': params, **state}, self.condition(batch),
                           train=train, rngs={'dropout': key},
                           mutable=list(state) if train else [])
    return fake.astype(jnp.float32)
