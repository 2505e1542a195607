"""Segmentation-mask WGAN-GP (Volokitin et al.): noise → label map, and the
DCGAN* image baseline (the same networks generating images).

Facts: reference/seg_gan.md (the paper; `igul222/improved_wgan_training`
`gan_64x64.py` for WGAN-GP and the DCGAN networks):

  L_D = mean D(fake) − mean D(real) + λ·mean_i (‖∇_x̂ D(x̂_i)‖₂ − 1)², λ 10
  L_G = −mean D(fake)
with D the patch critic (scores averaged over the 64×64 patches; the
penalty on that average w.r.t. the whole interpolated map, reference §4 ◇).
Each iteration runs `loss.n_critic` (5) critic updates, each on a fresh
real batch and a fresh fake, then one G update on a fresh fake (the step's
n_critic machinery, STYLE.md §4). The reference trains the critic alone at
iteration 0 and then alternates G, 5 critic steps; our iterations are 5
critic steps then G — the same sequence of updates.

Encodings (`model.encoding`):
  'onehot'  real maps are exact one-hot [H,W,C]; G ends in a softmax
            (reference pitfall 1: kept as the paper does);
  'rgb'     maps drawn in jaxl2i's class palette (visualize.palette), in
            [-1, 1], G ends in tanh; decoded by the nearest palette colour;
  'image'   DCGAN*: G generates the photo itself.

The generator samples with BatchNorm running averages (eval mode). The
reference's tflib BatchNorm always normalises with batch statistics; eval
mode keeps samples independent of each other (inversion restarts, single
frames) ◇.

config.model: encoding, upsample ('transposed'|'nearest'), z_dim,
  g_widths, g_kernels, d_widths, d_kernel, d_norm ('layer'|'none'),
  patches ('grid'|'random'), num_random_patches, resolution (4·2^len(g_widths)).
config.loss: gp (λ), n_critic.
config.inversion: restarts, steps, lr, extra_softmax (jaxl2i.interpolate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import config_lib
from jaxl2i import losses
from jaxl2i import visualize
from jaxl2i.models import seg_gan as models
from jaxl2i.recipes import base

ENCODINGS = ('onehot', 'rgb', 'image')


def _batch_size(batch) -> int:
  return jax.tree.leaves(batch)[0].shape[0]


class Recipe(base.Recipe):
  """WGAN-GP on label maps (or images): n_critic critic steps, then G."""

  order = ('d', 'g')
  share_fake = False
  unconditional = True

  def __init__(self, config, meta):
    self.n_critic = int(config.loss.n_critic)
    super().__init__(config, meta)

  def build(self):
    m = self.config.model
    if m.encoding not in ENCODINGS:
      raise config_lib.ConfigError(
          f'config.model.encoding={m.encoding!r}: use one of {ENCODINGS}')
    size = models.native_size(len(m.g_widths))
    if size != m.resolution:
      raise config_lib.ConfigError(
          f'config.model.g_widths has {len(m.g_widths)} upsampling layers, '
          f'which make {size}² maps, but config.model.resolution is '
          f'{m.resolution}')
    self.channels = (self.meta.num_classes if m.encoding == 'onehot' else 3)
    g = models.SegGenerator(
        out_channels=self.channels, widths=tuple(m.g_widths),
        kernels=tuple(m.g_kernels), upsample=m.upsample,
        output='softmax' if m.encoding == 'onehot' else 'tanh',
        dtype=self.dtype)
    d = models.PatchCritic(
        critic=models.DCGANCritic(widths=tuple(m.d_widths),
                                  kernel=m.d_kernel, norm=m.d_norm,
                                  dtype=self.dtype),
        sampling=m.patches, num_random=m.num_random_patches)
    self.lut = jnp.asarray(visualize.palette(self.meta.num_classes),
                           jnp.float32) / 127.5 - 1.0   # [C, 3] in [-1, 1]
    return g, d

  # --- maps --------------------------------------------------------------

  def real(self, batch) -> jax.Array:
    """The real map [B,H,W,channels] float32 in G's output encoding."""
    encoding = self.config.model.encoding
    if encoding == 'image':
      return base.image_to_float(batch['image'])
    if encoding == 'onehot':
      return jax.nn.one_hot(batch['label'], self.channels, dtype=jnp.float32)
    return self.colorize(batch['label'])

  def colorize(self, labels: jax.Array) -> jax.Array:
    """int [...,H,W] -> float32 [...,H,W,3] palette colours in [-1, 1]."""
    return self.lut[jnp.clip(labels, 0, self.meta.num_classes - 1)]

  def decode(self, out: jax.Array) -> jax.Array:
    """G's map [B,H,W,channels] -> int32 [B,H,W] class ids (arg-max of the
    probabilities, or the nearest palette colour)."""
    if self.config.model.encoding == 'onehot':
      return jnp.argmax(out, axis=-1).astype(jnp.int32)
    if self.config.model.encoding == 'rgb':
      d2 = jnp.sum(jnp.square(out[..., None, :] - self.lut), axis=-1)
      return jnp.argmin(d2, axis=-1).astype(jnp.int32)
    raise ValueError('an image model (encoding image) has no label maps')

  def map_loss(self, out: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample loss [B] of G's maps against target ids [B,H,W], for GAN
    inversion: cross-entropy, with `inversion.extra_softmax` of the softmax
    output first (the paper found it helped); for colour-coded maps the
    squared error to the target's colours ◇."""
    if self.config.model.encoding == 'rgb':
      return jnp.mean(jnp.square(out - self.colorize(labels)), axis=(1, 2, 3))
    if self.config.model.encoding != 'onehot':
      raise ValueError('an image model (encoding image) has no label maps')
    logp = (jax.nn.log_softmax(out, axis=-1)
            if self.config.inversion.extra_softmax
            else jnp.log(jnp.maximum(out, 1e-12)))
    picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return -jnp.mean(picked, axis=(1, 2))

  # --- networks ----------------------------------------------------------

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    return jax.random.normal(key, (num, self.config.model.z_dim), jnp.float32)

  def g_apply(self, g_variables, z: jax.Array) -> jax.Array:
    """Eval-mode G: z [N, z_dim] -> float32 map [N,H,W,channels]."""
    return self.g.apply(g_variables, z, train=False)

  def _critic(self, d_params, d_state, x, key):
    return self.d.apply({'params': d_params, **d_state}, x.astype(self.dtype),
                        rngs={'patches': key}, mutable=list(d_state))

  # --- recipe ------------------------------------------------------------

  def init(self, key, batch):
    k_g, k_d, k_patch = jax.random.split(key, 3)
    n = _batch_size(batch)
    g_vars = self.g.init(k_g, jnp.zeros((n, self.config.model.z_dim)),
                         train=False)
    d_vars = self.d.init({'params': k_d, 'patches': k_patch},
                         self.real(batch).astype(self.dtype))
    return g_vars, d_vars

  def generate(self, g_params, nets, batch, key):
    z = self.latents(key, _batch_size(batch))
    out, g_state = self.g.apply({'params': g_params, **nets.g.state}, z,
                                train=True, mutable=list(nets.g.state))
    return {'map': out}, g_state

  def d_loss(self, d_params, nets, batch, out, key):
    k_patch, k_gp = jax.random.split(key)
    real, fake = self.real(batch), out['map']
    n = real.shape[0]
    scores, d_state = self._critic(d_params, nets.d.state,
                                   jnp.concatenate([fake, real]), k_patch)
    loss_real, loss_fake = losses.wgan_d(scores[n:], scores[:n])
    critic = lambda x: self._critic(d_params, nets.d.state, x, k_patch)[0]
    gp = losses.gradient_penalty(critic, real, fake, k_gp)
    loss = loss_fake + loss_real + self.config.loss.gp * gp
    metrics = {'d/wasserstein': -(loss_fake + loss_real), 'd/gp': gp,
               'd/real_score': -loss_real, 'd/fake_score': loss_fake}
    return loss, (metrics, d_state)

  def g_loss(self, out, nets, batch, key):
    scores, d_state = self._critic(nets.d.params, nets.d.state, out['map'],
                                   key)
    return losses.wgan_g(scores), ({}, d_state)

  def sample_noise(self, g_variables, num, key):
    out = self.g_apply(g_variables, self.latents(key, num))
    if self.config.model.encoding == 'image':
      return {'image': out}
    labels = self.decode(out)
    return {'label': labels, 'image': self.colorize(labels)}

  def sample(self, g_variables, batch, key):
    return self.sample_noise(g_variables, _batch_size(batch), key)['image']

  def grid_real(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    if self.config.model.encoding == 'image':
      return batch['image']
    return visualize.colorize_labels(batch['label'], self.meta.num_classes)
