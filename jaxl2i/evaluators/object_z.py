"""Locality of per-object appearance codes (Layout2Im's z).

  config.evals.object_z = dict(type='object_z', every=5000, num_samples=256,
                               draws=4, max_area=0.25)

Layout2Im draws one code z per object; "several samples of a layout show
per-object appearance diversity" means that redrawing one object's z changes
that object, not the whole scene. For every eval layout and every valid
object whose box covers at most `max_area` of the image (0.25: the things,
not the sky- or ground-sized stuff regions), `draws` new codes of that
object alone are decoded (eval mode, clipped [-1, 1] output; the recipe's
`object_z_effect`) and the mean |Δ image| inside its box and outside it is
recorded. Reports both means over the objects and their ratio
inside / outside (≫ 1: local codes; ≈ 1: z steers the whole image). Not a
published metric: a diagnostic of this codebase (README, Layout2Im).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxl2i import parallel
from jaxl2i.evaluators import common


class Evaluator(common.Base):
  """Mean |Δ image| in and outside an object's box when its z is redrawn."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.require_recipe('object_z_effect',
                        'has no per-object codes (Layout2Im only)')
    if int(self.cfg.draws) < 1 or not 0 < float(self.cfg.max_area) <= 1:
      raise ValueError(f'evaluator {name}: draws >= 1 and 0 < max_area <= 1 '
                       f'(got {self.cfg.draws}, {self.cfg.max_area})')
    self.effect = jax.jit(self.recipe.object_z_effect,
                          static_argnames='draws')

  def _objects(self, batch, rows: np.ndarray) -> np.ndarray:
    """[B, O] bool: valid objects of real rows within `max_area`."""
    boxes = parallel.to_host(batch['boxes'])
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    valid = parallel.to_host(batch['objects_mask']).astype(bool)
    return valid & (area <= self.cfg.max_area) & rows[:, None]

  def run(self, state):
    gens = self.generators(state)
    sums = {w: np.zeros(2) for w, _ in gens}
    count = 0
    for i, (rows, batch) in enumerate(self.batches()):
      chosen = self._objects(batch, rows)
      count += int(chosen.sum())
      for which, variables in gens:
        inside, outside = parallel.to_host(self.effect(
            variables, batch, self.sample_key(i), draws=int(self.cfg.draws)))
        sums[which] += [inside[chosen].sum(), outside[chosen].sum()]
    metrics = {}
    for which, _ in gens:
      inside, outside = sums[which] / max(count, 1)
      metrics[f'object_z_inside/{which}'] = float(inside)
      metrics[f'object_z_outside/{which}'] = float(outside)
      metrics[f'object_z_ratio/{which}'] = float(inside / max(outside, 1e-8))
    return metrics, self.protocol(
        change='mean |Δ image| over the redraws and RGB, output clipped to '
               '[-1, 1] (no min-max stretch), inside / outside the box mask',
        draws=int(self.cfg.draws), max_area=float(self.cfg.max_area),
        num_objects=count)
