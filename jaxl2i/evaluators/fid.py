"""FID (and KID) of generated images against the eval split.

  config.evals.fid = dict(type='fid', every=5000, num_samples=5000)

Protocol (recorded with every number): `num_samples` real examples of the eval
split; `samples_per_input` generated images per example (1; LAMA's test.py:
5 per layout) from its conditioning input, for each
generator in `generators` (EMA and live G); generated images quantised to
uint8 as saved PNGs; the FID Inception of pytorch-fid (jaxl2i.nets) with its
bilinear resize to 299; statistics accumulated in float64; Fréchet distance as
pytorch-fid computes it. Real statistics are computed once per run and saved
to `workdir/fid_stats/` in pytorch-fid's .npz format, or loaded from
`reference_stats` (e.g. published statistics) when given.
"""

from __future__ import annotations

from absl import logging
from etils import epath
import jax
import numpy as np

from jaxl2i import parallel
from jaxl2i.evaluators import common
from jaxl2i.metrics import fid as fid_lib



class Evaluator(common.Base):
  """FID/KID of each generator against real eval images."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.features = self.load_inception()
    self._real: fid_lib.FeatureStats | None = None
    self._real_mu_sigma = None
    if self.cfg.reference_stats:
      self._real_mu_sigma = fid_lib.load_stats(self.cfg.reference_stats)
      have = self._real_mu_sigma[0].shape[0]
      if have != self.dims:
        raise ValueError(f'reference_stats {self.cfg.reference_stats} hold '
                         f'{have}-d statistics but dims={self.dims}')

  def _feats(self, images_u8) -> np.ndarray:
    return parallel.to_host(self.features(images_u8))

  def run(self, state):
    gens = self.generators(state)
    need_real = self._real is None and self._real_mu_sigma is None
    keep = bool(self.cfg.kid)
    stats = lambda: fid_lib.FeatureStats(self.dims, keep_features=keep)
    real = stats() if need_real else None
    fakes = {w: stats() for w, _ in gens}
    for i, (mask, batch) in enumerate(self.batches()):
      if real is not None:
        real.update(self._feats(batch['image']), mask)
      for which, variables in gens:
        for images in self.fake_images(variables, batch, i):
          fakes[which].update(self._feats(images), mask)
    if real is not None:
      self._real = real
      self._save_real_stats()
    mu, sigma = (self._real_mu_sigma if self._real is None
                 else (self._real.mu, self._real.sigma))
    metrics = {}
    for which, stats in fakes.items():
      metrics[f'{self.metric_name("fid")}/{which}'] = float(
          fid_lib.frechet_distance(stats.mu, stats.sigma, mu, sigma))
      if self.cfg.kid and self._real is not None:
        m, s = fid_lib.kernel_inception_distance(
            stats.all_features(), self._real.all_features(),
            num_subsets=self.cfg.kid_subsets,
            subset_size=self.cfg.kid_subset_size, seed=self.cfg.seed)
        metrics[f'{self.metric_name("kid")}/{which}'] = float(m)
        metrics[f'{self.metric_name("kid")}_std/{which}'] = float(s)
    count = next(iter(fakes.values())).count if fakes else 0
    protocol = self.protocol(
        inception=self.inception_protocol(),
        num_generated=int(count),
        real_stats=self.cfg.reference_stats or 'computed from the eval split',
        distance='pytorch-fid calculate_frechet_distance (scipy sqrtm)')
    return metrics, protocol

  def _save_real_stats(self):
    if jax.process_index() != 0 or self.random_weights:
      return
    name = self.config.data.name.replace('/', '_')
    dims = '' if self.dims == 2048 else f'_dims{self.dims}'
    path = (epath.Path(self.workdir) / 'fid_stats' /
            f'{name}_{self.config.data.eval_split}_{self._real.count}'
            f'{dims}.npz')
    path.parent.mkdir(parents=True, exist_ok=True)
    fid_lib.save_stats(path, self._real.mu, self._real.sigma)
    logging.info('saved real FID statistics to %s', path)
