"""CRN (Chen & Koltun, ICCV 2017): a cascaded refinement network, no GAN.

Facts: reference/crn.md (official `CQFIO/PhotographicImageSynthesis`,
demo_256p.py / demo_512p.py / demo_1024p.py). One update per iteration, of
G only (`order = ('g',)`):

  images = G(L)                 [B,k,H,W,3], nominally [0, 255]
  Φ_0 = RGB − MatConvNet mean, Φ_1..5 = VGG-19 (average pooling) after the
        ReLUs of conv1_2 … conv5_2 (pitfalls 1-3)
  E_l(u, p) = mean_xy [M_p^l · mean_c |Φ_l(I) − Φ_l(g_u)|]   (class masks
        M^l = L area-downsampled to layer l; `loss.class_masks`)
  L(u, p) = Σ_l λ_l E_l(u, p)
  loss = 0.999 Σ_p min_u L + 0.001 Σ_p mean_u L   (k > 1: diversity loss)
       = Σ_p L(1, p)                               (k = 1; without class
         masks Σ_l λ_l mean|Φ_l(I) − Φ_l(g)|, the 512p/1024p loss)

λ: a reference table (`loss.lambda_table`, LAMBDA_TABLES) or `loss.lambdas`;
or the paper's automatic rule (`loss.auto_lambda_epochs` > 0): every term
starts at 1/#elements (λ = 1 on the means E_l) and after that many epochs
each λ_l becomes 1 / (mean of Σ_p E_l over the epoch before), so every term
contributes ~1 from then on. Its sums live in the G collection
'loss_stats'. Because CRN has no discriminator, `generate` runs G and the
loss network Φ together and hands the per-layer errors to `g_loss`.

config.model: resolution (H), aspect (W/H, for data and benchmarks),
  channels (() = the reference ladder for `resolution`), num_images (k),
  num_classes (0: the dataset's), remat (per-module nn.remat), trainable
  (regex of parameter paths that train, '' = all; demo_1024p.py trains only
  g_512 and g_1024: the others get stop_gradient, so their backward pass is
  never computed).
config.loss: taps, lambda_table, lambdas, class_masks, min_weight,
  mean_weight, auto_lambda_epochs, vgg_weights ('matconvnet': the reference's
  file and input convention | 'torchvision': vgg19-dcbb9e9d.pth on
  ImageNet-normalised [0, 1] inputs, not the reference's), vgg_allow_random.
"""

from __future__ import annotations

import re

from absl import logging
import jax
import jax.numpy as jnp

from jaxl2i import config_lib
from jaxl2i import losses
from jaxl2i import state as state_lib
from jaxl2i import visualize
from jaxl2i.models import crn
from jaxl2i.nets import vgg19
from jaxl2i.recipes import base

# p0 (the mean-subtracted pixels), then VGG-19 after the ReLUs of conv1_2 …
# conv5_2 (reference/crn.md §5, pitfall 3).
TAPS = ('input', 'relu1_2', 'relu2_2', 'relu3_2', 'relu4_2', 'relu5_2')
# λ of TAPS "collected at 100th epoch" (reference/crn.md §5 table).
LAMBDA_TABLES = {
    'cityscapes_256p': (1.0, 1 / 1.6, 1 / 2.3, 1 / 1.8, 1 / 2.8, 10 / 0.8),
    'cityscapes_512p': (1.0, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5),
    'cityscapes_1024p': (1.0, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5),
    'gta_256p': (1.0, 1 / 1.4, 1 / 1.8, 1 / 1.3, 1 / 2.2, 10 / 0.62),
}
STATS = 'loss_stats'   # G collection of the automatic λ rule
VGG_SOURCES = ('matconvnet', 'torchvision')


def _to_unit(images: jax.Array) -> jax.Array:
  """[0, 255] images -> [-1, 1], clipped as the reference clips on saving."""
  return jnp.clip(images / 127.5 - 1.0, -1.0, 1.0)


class Recipe(base.Recipe):
  """CRN: G only, perceptual (+ diversity) loss."""

  order = ('g',)
  share_fake = False

  def build(self):
    m, l = self.config.model, self.config.loss
    self.num_classes = m.num_classes or self.meta.num_classes
    self.k = int(m.num_images)
    channels = tuple(m.channels) or crn.reference_channels(m.resolution)
    self.taps = tuple(l.taps)
    self.fixed_lambdas = (LAMBDA_TABLES[l.lambda_table] if l.lambda_table
                          else tuple(l.lambdas))
    self._check(channels)
    self.use_vgg = any(t != 'input' for t in self.taps)
    self.vgg = vgg19.VGG19Features(
        pool='avg', imagenet_normalize=l.vgg_weights == 'torchvision',
        dtype=self.dtype) if self.use_vgg else None
    self.vgg_random = False
    self.trainable = re.compile(m.trainable) if m.trainable else None
    self.auto_switch = 0
    if l.auto_lambda_epochs > 0:
      split = self.config.data.train_split.split('[')[0]
      epoch = config_lib.epoch_steps(
          self.config, self.meta.num_examples.get(split, 0))
      self.auto_switch = max(1, round(l.auto_lambda_epochs * epoch))
      self.auto_window = min(epoch, self.auto_switch)
    g = crn.CRN(resolution=m.resolution, channels=channels,
                num_images=self.k, remat=m.remat, dtype=self.dtype)
    return g, None

  def _check(self, channels) -> None:
    l = self.config.loss
    if l.lambda_table and l.lambda_table not in LAMBDA_TABLES:
      raise config_lib.ConfigError(
          f'config.loss.lambda_table={l.lambda_table!r}: use one of '
          f'{sorted(LAMBDA_TABLES)} or "" with config.loss.lambdas')
    unknown = set(self.taps) - {'input', *vgg19.TAP_NAMES}
    if unknown or len(self.fixed_lambdas) != len(self.taps):
      raise config_lib.ConfigError(
          f'config.loss.taps={self.taps} needs names of {TAPS[0]!r} or '
          f'VGG-19 taps (unknown: {sorted(unknown)}) and one λ each (got '
          f'{len(self.fixed_lambdas)})')
    if l.vgg_weights not in VGG_SOURCES or self.k < 1 or not channels:
      raise config_lib.ConfigError(
          f'config.loss.vgg_weights={l.vgg_weights!r} (use {VGG_SOURCES}), '
          f'model.num_images={self.k} (>= 1), model.channels={channels}')

  def frozen_params(self):
    if not self.use_vgg:
      return {}
    load = (vgg19.load_matconvnet_vgg19 if
            self.config.loss.vgg_weights == 'matconvnet' else vgg19.load_vgg19)
    variables, self.vgg_random = load(
        allow_random=self.config.loss.vgg_allow_random)
    if self.vgg_random:
      logging.warning('CRN loss with a RANDOM VGG-19 (weights not cached): '
                      'its terms are logged as g/p*_RANDOM_WEIGHTS; not the '
                      "paper's perceptual loss")
    return {'vgg': variables}

  # --- G and the loss network ----------------------------------------------

  def labels(self, batch) -> jax.Array:
    """The one-hot label map [B,H,W,P] float32 (P = num_classes)."""
    return base.conditioning_map(batch, self.num_classes, dtype=jnp.float32)

  def images(self, g_params, labels) -> jax.Array:
    """[B,k,H,W,3] float32 in nominal [0, 255]."""
    if self.trainable is not None:   # frozen modules: no backward pass
      g_params = jax.tree_util.tree_map_with_path(
          lambda p, x: x if self.trainable.search(state_lib.path_name(p))
          else jax.lax.stop_gradient(x), g_params)
    return self.g.apply({'params': g_params}, labels)

  def features(self, frozen, images) -> dict[str, jax.Array]:
    """Φ of [N,H,W,3] images in [0, 255]: {tap: [N,h,w,C]}."""
    x = images - jnp.asarray(vgg19.MATCONVNET_MEAN, jnp.float32)
    out = {'input': x}
    vgg_taps = tuple(t for t in self.taps if t != 'input')
    if vgg_taps:
      torch = self.config.loss.vgg_weights == 'torchvision'
      out.update(self.vgg.apply(frozen['vgg'], images / 255.0 if torch else x,
                                vgg_taps))
    return out

  def errors(self, frozen, images, batch, labels) -> tuple[jax.Array, ...]:
    """E_l [B,k,P] of every tap (P = 1 without class masks)."""
    b, k, h, w, _ = images.shape
    real = jax.lax.stop_gradient(
        self.features(frozen, jnp.asarray(batch['image'], jnp.float32)))
    fake = self.features(frozen, images.reshape(b * k, h, w, 3))
    masks = {}
    if self.config.loss.class_masks:   # L area-averaged to every tap's size
      levels = max(h // real[t].shape[1] for t in self.taps).bit_length()
      masks = {m.shape[1]: m for m in crn.label_pyramid(labels, levels)}
    out = []
    for t in self.taps:
      f = fake[t].reshape(b, k, *fake[t].shape[1:])
      mask = masks.get(real[t].shape[1]) if masks else None
      out.append(losses.masked_feature_errors(real[t], f, mask))
    return tuple(out)

  # --- the automatic λ rule --------------------------------------------------

  def _stats_update(self, g_state, errors):
    if not self.auto_switch:
      return {}
    s = g_state[STATS]
    step = s['step'] + 1
    terms = jnp.stack([jnp.mean(jnp.sum(e, -1))
                       for e in jax.lax.stop_gradient(errors)])
    on = (step > self.auto_switch - self.auto_window) & (
        step <= self.auto_switch)
    return {STATS: {'step': step, 'sum': s['sum'] + jnp.where(on, terms, 0.0),
                    'count': s['count'] + on.astype(jnp.float32)}}

  def lambdas(self, g_state) -> jax.Array:
    """λ per tap [L] float32 for this step."""
    if not self.auto_switch:
      return jnp.asarray(self.fixed_lambdas, jnp.float32)
    s = g_state[STATS]
    mean = s['sum'] / jnp.maximum(s['count'], 1.0)
    rescaled = 1.0 / jnp.maximum(mean, 1e-12)
    return jnp.where(s['step'] >= self.auto_switch, rescaled, 1.0)

  # --- recipe ----------------------------------------------------------------

  def init(self, key, batch):
    g_vars = self.g.init(key, self.labels(batch))
    if self.auto_switch:
      n = len(self.taps)
      g_vars = {**g_vars, STATS: {
          'step': jnp.zeros((), jnp.int32), 'sum': jnp.zeros((n,)),
          'count': jnp.zeros(())}}
    return g_vars, None

  def generate(self, g_params, nets, batch, key):
    del key
    labels = self.labels(batch)
    images = self.images(g_params, labels)
    errors = self.errors(nets.frozen, images, batch, labels)
    return ({'image': images, 'errors': errors},
            self._stats_update(nets.g.state, errors))

  def d_loss(self, d_params, nets, batch, out, key):
    raise NotImplementedError('CRN has no discriminator')

  def g_loss(self, out, nets, batch, key):
    del batch, key
    c = self.config.loss
    lam = self.lambdas(nets.g.state)
    weighted = [lam[i] * e for i, e in enumerate(out['errors'])]
    loss = losses.hindsight_loss(sum(weighted), c.min_weight, c.mean_weight)
    suffix = '_RANDOM_WEIGHTS' if self.vgg_random else ''
    metrics = {}
    for i, (tap, e) in enumerate(zip(self.taps, weighted)):
      name = f'g/p{i}' + (suffix if tap != 'input' else '')
      metrics[name] = jnp.mean(jnp.sum(e, -1))   # λ_l Σ_p E_l, mean over u
      if self.auto_switch:
        metrics[f'g/lambda_p{i}'] = lam[i]
    return loss, (metrics, None)

  def sample(self, g_variables, batch, key):
    """One of the k images per input, uniformly by `key`, in [-1, 1]."""
    images = self.images(g_variables['params'], self.labels(batch))
    b = images.shape[0]
    pick = jax.random.randint(key, (b,), 0, self.k)
    return _to_unit(images[jnp.arange(b), pick])

  # --- image grids: all k images of each label map -------------------------

  def grid_column_names(self):
    return ('',) if self.k == 1 else tuple(f'_{u}' for u in range(self.k))

  def grid_samples(self, g_variables, batch, key):
    del key
    images = self.images(g_variables['params'], self.labels(batch))
    return tuple(_to_unit(images[:, u]) for u in range(self.k))

  def grid_inputs(self, batch):
    return visualize.colorize_labels(batch['label'], self.num_classes)
