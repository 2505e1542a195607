"""Diversity score (DS): LPIPS between samples of the same layout.

Protocol (LAMA `test.py --DS` with `compute_dists_dirs.DSscore`, LostGAN;
`shared/reference/metrics.md` §4): for every validation layout generate two
images with independent latents, take LPIPS (AlexNet, v0.1, linear heads)
between them at the generation resolution, with the generator output in
[-1, 1] as is (no uint8 round trip), and report the mean and the standard
deviation over layouts. DSscore uses `torch.std`, i.e. ddof=1. Higher means
more diverse.
"""
from collections.abc import Callable

import jax
import numpy as np

from jaxl2i import parallel

LpipsFn = Callable[[jax.Array, jax.Array], jax.Array]


class DiversityScore:
  """Accumulates per-layout LPIPS distances between two samples.

  `lpips` is e.g. `jaxl2i.nets.lpips.lpips_fn(variables)`:
  (x0, x1) [B, H, W, 3] in [-1, 1] -> [B] distances.
  """

  def __init__(self, lpips: LpipsFn):
    self.lpips = lpips
    self.values: list[np.ndarray] = []

  def update(self, samples_a: jax.Array, samples_b: jax.Array,
             mask: jax.Array | None = None) -> jax.Array:
    """Adds one batch of layouts.

    Args:
      samples_a, samples_b: [B, H, W, 3] float in [-1, 1], two samples of
        the same B layouts with different noise.
      mask: optional [B] bool; False rows (padding) are not counted.

    Returns:
      [B] distances of this batch (padded rows included).
    """
    d = self.lpips(samples_a, samples_b)
    v = np.asarray(parallel.to_host(d), np.float64).reshape(-1)
    if mask is not None:
      v = v[np.asarray(mask).astype(bool).reshape(-1)]
    self.values.append(v)
    return d

  @property
  def count(self) -> int:
    return int(sum(v.shape[0] for v in self.values))

  def result(self) -> tuple[float, float]:
    """(mean, std with ddof=1) over all accumulated layouts."""
    v = np.concatenate(self.values) if self.values else np.zeros((0,))
    if v.shape[0] < 2:
      raise ValueError(f'need >= 2 layouts for mean/std, have {v.shape[0]}')
    return float(v.mean()), float(v.std(ddof=1))


def diversity_score(lpips: LpipsFn, samples_a: jax.Array,
                    samples_b: jax.Array) -> tuple[float, float]:
  """DS of one array of sample pairs [N, H, W, 3] -> (mean, std ddof=1)."""
  ds = DiversityScore(lpips)
  ds.update(samples_a, samples_b)
  return ds.result()
