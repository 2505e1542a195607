"""LAMA's mask-clarity experiment (Sec. 3, Fig. 2): FID under tainted masks.

  config.evals.tainted = dict(type='tainted_mask', taus=(0, 0.02, 0.05, 0.1),
                              mask_source='gt', num_samples=3097)

The mask-to-image part of a layout model is fed, instead of its own masks,
    M_τ = (1 − τ)·M + (τ / m)·1,
with M the ground-truth object masks (`mask_source='gt'`: one-hot masks from
the eval split's `instance` map, object slot k = instance id k + 1) or the
model's own raw masks ('generated'), and m the number of object slots (the
formula taints the whole m×H×W tensor, padded slots included: with COCO's 8
slots this gives the paper's entropies 0.12 at τ = 0.02 and ≈ 0.47 at 0.1).
For every τ it reports FID, SceneFID (`scene_fid`) and the mask entropy of
M_τ. The paper runs it on a LostGAN mask-to-image model trained on
ground-truth masks (a config with model.mask_source='gt').
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import parallel
from jaxl2i.evaluators import common
from jaxl2i.metrics import fid as fid_lib
from jaxl2i.metrics import mask_entropy as entropy_lib
from jaxl2i.metrics import scene_fid as scene_fid_lib
from jaxl2i.recipes import lama as lama_recipe

SOURCES = ('gt', 'generated')


def taint(masks: jax.Array, tau: float) -> jax.Array:
  """(1 − τ)·M + τ/m over all m object slots of [B, m, H, W] masks."""
  return (1.0 - tau) * masks + tau / masks.shape[1]


def tau_name(tau: float) -> str:
  return f'tau{tau:g}'


class Evaluator(common.Base):
  """FID / SceneFID / entropy of each generator for every τ."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.require_recipe('sample_outputs', 'takes no object masks')
    if self.cfg.mask_source not in SOURCES:
      raise ValueError(f'evals.{name}.mask_source='
                       f'{self.cfg.mask_source!r}: use one of {SOURCES}')
    self.features = self.load_inception()
    mode = self.cfg.uint8

    def sample(variables, batch, key, tau):
      k_mask, k_img = jax.random.split(key)
      if self.cfg.mask_source == 'gt':
        masks = lama_recipe.gt_masks(batch, batch['classes'].shape[1])
      else:
        masks = self.recipe.sample_outputs(variables, batch, k_mask)[2]
      masks = taint(masks, tau)
      image = self.recipe.sample_outputs(variables, batch, k_img,
                                         masks=masks)[0]
      entropy = entropy_lib.mask_entropy(masks)
      return common.to_uint8(image, mode), entropy

    self.tainted = jax.jit(sample)

  def run(self, state):
    gens = self.generators(state)
    taus = [float(t) for t in self.cfg.taus]
    real = fid_lib.FeatureStats(self.dims)
    fakes = {(w, t): fid_lib.FeatureStats(self.dims)
             for w, _ in gens for t in taus}
    scenes = {}
    if self.cfg.scene_fid:
      scenes = {k: scene_fid_lib.SceneFID(self.features, dim=self.dims,
                                          size=self.cfg.crop_size)
                for k in fakes}
      first = next(iter(scenes.values()), None)
      for s in scenes.values():
        s.real = first.real
    entropy = {k: 0.0 for k in fakes}
    count = 0
    for i, (mask, batch) in enumerate(self.batches()):
      if 'instance' not in batch and self.cfg.mask_source == 'gt':
        raise ValueError("tainted_mask with mask_source='gt' needs the "
                         "'instance' map: keep it in data.pp_eval")
      objects = batch['objects_mask'] & batch['_mask'][:, None]
      real.update(parallel.to_host(self.features(batch['image'])), mask)
      if scenes:
        first.update_real(batch['image'], batch['boxes'], objects)
      count += int(mask.sum())
      for which, variables in gens:
        for tau in taus:
          images, ent = self.tainted(variables, batch, self.sample_key(i),
                                     jnp.float32(tau))
          key = (which, tau)
          fakes[key].update(parallel.to_host(self.features(images)), mask)
          entropy[key] += float(np.asarray(parallel.to_host(ent))[mask].sum())
          if scenes:
            scenes[key].update_fake(images, batch['boxes'], objects)
    metrics = {}
    fid_name, sfid_name = self.metric_name('fid'), self.metric_name('scene_fid')
    for (which, tau), stats in fakes.items():
      t = tau_name(tau)
      metrics[f'tainted/{fid_name}/{t}/{which}'] = float(
          fid_lib.frechet_distance(stats.mu, stats.sigma, real.mu,
                                   real.sigma))
      if scenes:
        metrics[f'tainted/{sfid_name}/{t}/{which}'] = float(
            scenes[(which, tau)].result())
      metrics[f'tainted/mask_entropy/{t}/{which}'] = (
          entropy[(which, tau)] / max(count, 1))
    return metrics, self.protocol(
        inception=self.inception_protocol(),
        masks=f'(1 - tau) * M + tau / m over all m slots; M = '
              f'{self.cfg.mask_source} masks', taus=taus,
        num_layouts=count)
