"""Mask entropy of raw and adapted object masks (LAMA Table 4).

  config.evals.mask_entropy = dict(type='mask_entropy', every=5000,
                                   num_samples=3097)

For every eval layout one sample (eval mode, the recipe's truncation) gives
the raw masks M̃ (mask net placed in the boxes) and the adapted masks M
(after LAMA's module); their Eq. 5 entropies (jaxl2i.metrics.mask_entropy,
nats, valid object slots only) are averaged over layouts. Also reports the
learnt adaption strength |clamp(α_mask, −1, 1)| (paper: 0.73 / 0.55 / 0.56 at
64 / 128 / 256; 0 at initialisation). Needs a recipe with `sample_outputs`
(layout-to-image models).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import parallel
from jaxl2i.evaluators import common
from jaxl2i.metrics import mask_entropy as entropy_lib


def adaption_strength(params) -> float | None:
  """|clamp(α_mask, −1, 1)| from G's params (None without a LAMA module)."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  values = [v for k, v in flat.items() if k.endswith('mask_adjust_alpha')]
  if not values:
    return None
  return float(np.abs(np.clip(np.asarray(jax.device_get(values[0])), -1, 1)))


class Evaluator(common.Base):
  """Mean entropy of each generator's raw and adapted masks."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.require_recipe('sample_outputs', 'produces no object masks')

    def entropies(variables, batch, key):
      _, adapted, raw = self.recipe.sample_outputs(variables, batch, key)
      valid = batch['objects_mask']
      return (entropy_lib.mask_entropy(raw, valid),
              entropy_lib.mask_entropy(adapted, valid))

    self.entropies = jax.jit(entropies)

  def run(self, state):
    gens = self.generators(state)
    sums = {w: np.zeros(2) for w, _ in gens}
    count = 0
    for i, (mask, batch) in enumerate(self.batches()):
      count += int(mask.sum())
      for which, variables in gens:
        raw, adapted = parallel.to_host(
            self.entropies(variables, batch, self.sample_key(i)))
        sums[which] += [raw[mask].sum(), adapted[mask].sum()]
    metrics = {}
    for which, variables in gens:
      raw, adapted = sums[which] / max(count, 1)
      metrics[f'mask_entropy_raw/{which}'] = float(raw)
      metrics[f'mask_entropy/{which}'] = float(adapted)
      alpha = adaption_strength(variables['params'])
      if alpha is not None:
        metrics[f'mask_alpha/{which}'] = alpha
    return metrics, self.protocol(
        entropy='LAMA Eq. 5, natural log, masks normalised over the valid '
                'object slots at each pixel, mean over H·W and layouts',
        num_layouts=count)
