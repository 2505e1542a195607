"""Diversity score: LPIPS between two samples of the same input.

  config.evals.diversity = dict(type='diversity', every=5000, num_samples=2048)

For every eval example two images are generated with independent noise keys
and compared with LPIPS v0.1 (AlexNet, linear heads) at the generation
resolution, generator output in [-1, 1] (LAMA/LostGAN protocol,
jaxl2i.metrics.diversity). Reports mean and std (ddof=1) over examples.
"""

from __future__ import annotations

from absl import logging
import jax

from jaxl2i import parallel
from jaxl2i.evaluators import common
from jaxl2i.metrics import diversity as diversity_lib
from jaxl2i.nets import lpips as lpips_lib
from jaxl2i.nets import weights


class Evaluator(common.Base):
  """Mean LPIPS distance between sample pairs of each generator."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    try:
      variables = lpips_lib.load_lpips(download=self.cfg.download_weights)
    except weights.WeightsUnavailableError:
      if not self.cfg.allow_random_weights:
        raise
      logging.warning('evaluator %s: %s', name, common.RANDOM_WARNING)
      variables, self.random_weights = lpips_lib.init_variables(), True
    variables = jax.device_put(variables, parallel.replicated(self.mesh))
    self.lpips = lpips_lib.lpips_fn(variables)

  def run(self, state):
    gens = self.generators(state)
    scores = {w: diversity_lib.DiversityScore(self.lpips) for w, _ in gens}
    for i, (mask, batch) in enumerate(self.batches()):
      key_a, key_b = jax.random.split(self.sample_key(i))
      for which, variables in gens:
        scores[which].update(self.sample(variables, batch, key_a),
                             self.sample(variables, batch, key_b), mask)
    metrics = {}
    for which, s in scores.items():
      mean, std = s.result()
      metrics[f'{self.metric_name("diversity")}/{which}'] = mean
      metrics[f'{self.metric_name("diversity")}_std/{which}'] = std
    return metrics, self.protocol(
        lpips='LPIPS v0.1, AlexNet, linear heads; output in [-1, 1]',
        pairs='two independent noise keys per example')
