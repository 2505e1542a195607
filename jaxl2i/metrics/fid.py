"""Fréchet Inception Distance and Kernel Inception Distance on host.

The feature extractor (`jaxl2i.nets.inception_fid`) runs on device; this
module only sees its [N, D] features. Everything here is numpy float64:

- `FeatureStats`: streaming mean / covariance. Batches are merged with the
  parallel (Chan et al.) update of centred moments, so the result does not
  depend on how the features were batched (up to float64 rounding) and partial
  statistics of several hosts can be merged.
- `frechet_distance`: the formula and the numerical safeguards of
  pytorch-fid's `calculate_frechet_distance` (see
  `shared/reference/metrics.md` §1.1): `scipy.linalg.sqrtm` of Σ1·Σ2 in
  float64, a retry with 1e-6·I added to both covariances when the root is not
  finite, and a ValueError when an imaginary diagonal component exceeds 1e-3.
- `save_stats` / `load_stats`: pytorch-fid's `.npz` format (keys `mu`,
  `sigma`), so published reference statistics can be used directly.
- `kernel_inception_distance`: unbiased MMD² with the cubic polynomial kernel
  over random subsets, as in torch-fidelity / clean-fid.

FID values depend on the input pipeline (resize, value mapping): see
`shared/reference/metrics.md` §1.3 before comparing numbers across papers.
"""
import os
from typing import Any
import warnings

from absl import logging
from etils import epath
import numpy as np
from scipy import linalg

# pytorch-fid: offset added to the covariance diagonals when sqrtm fails.
FID_EPS = 1e-6
# pytorch-fid: largest tolerated |imag| on the diagonal of sqrtm(Σ1 Σ2).
IMAG_ATOL = 1e-3
# KID defaults of torch-fidelity / clean-fid.
KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _as_2d_float64(features: Any) -> np.ndarray:
  x = np.asarray(features, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f'features must be [N, D], got shape {x.shape}')
  return x


class FeatureStats:
  """Streaming mean and covariance of feature vectors (float64, on host).

  Attributes:
    dim: feature dimension D.
    count: number of feature vectors seen.
    mean: [D] float64 running mean.
    m2: [D, D] float64 sum of outer products of centred features.
    features: list of [n, D] float32 blocks when `keep_features` (for KID).
  """

  def __init__(self, dim: int, keep_features: bool = False):
    self.dim = int(dim)
    self.count = 0
    self.mean = np.zeros((self.dim,), np.float64)
    self.m2 = np.zeros((self.dim, self.dim), np.float64)
    self.keep_features = keep_features
    self.features: list[np.ndarray] = []

  def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
    """Merges centred moments (n_b, mean_b, m2_b) into this object."""
    if n_b == 0:
      return
    n_a = self.count
    n = n_a + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * (n_b / n)
    self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
    self.count = n

  def update(self, features: Any, mask: Any = None) -> None:
    """Adds a batch of features.

    Args:
      features: [N, D] array (numpy or jax, any float dtype).
      mask: optional [N] bool/0-1 array; rows where it is false are ignored
        (padding of the last evaluation batch).
    """
    x = _as_2d_float64(features)
    if x.shape[1] != self.dim:
      raise ValueError(f'expected {self.dim} features, got {x.shape[1]}')
    if mask is not None:
      mask = np.asarray(mask).astype(bool).reshape(-1)
      if mask.shape[0] != x.shape[0]:
        raise ValueError(f'mask has {mask.shape[0]} rows, features '
                         f'{x.shape[0]}')
      x = x[mask]
    if x.shape[0] == 0:
      return
    mean_b = x.mean(axis=0)
    xc = x - mean_b
    self._combine(x.shape[0], mean_b, xc.T @ xc)
    if self.keep_features:
      self.features.append(x.astype(np.float32))

  def merge(self, other: 'FeatureStats') -> 'FeatureStats':
    """Adds the statistics of `other` (e.g. another host's); returns self."""
    if other.dim != self.dim:
      raise ValueError(f'dims differ: {self.dim} vs {other.dim}')
    self._combine(other.count, other.mean, other.m2)
    if self.keep_features:
      self.features.extend(other.features)
    return self

  def to_dict(self) -> dict[str, np.ndarray]:
    """Arrays for transport (e.g. a multi-host all-gather)."""
    return {'count': np.asarray(self.count, np.int64), 'mean': self.mean,
            'm2': self.m2}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'FeatureStats':
    mean = np.asarray(d['mean'], np.float64)
    stats = cls(mean.shape[0])
    stats.count = int(d['count'])
    stats.mean = mean
    stats.m2 = np.asarray(d['m2'], np.float64)
    return stats

  @property
  def mu(self) -> np.ndarray:
    """[D] float64 mean."""
    if self.count < 1:
      raise ValueError('no features accumulated')
    return self.mean.copy()

  @property
  def sigma(self) -> np.ndarray:
    """[D, D] float64 unbiased covariance (ddof=1, like np.cov)."""
    if self.count < 2:
      raise ValueError(f'covariance needs >= 2 features, have {self.count}')
    return self.m2 / (self.count - 1)

  def all_features(self) -> np.ndarray:
    """[count, D] float32 features kept when `keep_features` was set."""
    if not self.keep_features:
      raise ValueError('FeatureStats was built with keep_features=False')
    if not self.features:
      return np.zeros((0, self.dim), np.float32)
    return np.concatenate(self.features, axis=0)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  # scipy warns (LinAlgWarning) on singular / ill-conditioned input; the
  # caller handles non-finite results, so log instead of warning.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', linalg.LinAlgWarning)
    root = linalg.sqrtm(a)
  for w in caught:
    logging.info('sqrtm: %s', w.message)
  return root


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = FID_EPS) -> float:
  """Fréchet distance ‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr sqrtm(Σ1 Σ2).

  Computed as pytorch-fid's `calculate_frechet_distance` does.

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances.
    eps: diagonal offset of the retry when sqrtm(Σ1 Σ2) is not finite.

  Returns:
    The distance as a Python float.

  Raises:
    ValueError: on shape mismatch, or when sqrtm has a diagonal imaginary
      component larger than 1e-3 (message gives the largest |imag| of the
      whole matrix, as pytorch-fid does).
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape:
    raise ValueError(f'mean shapes differ: {mu1.shape} vs {mu2.shape}')
  if sigma1.shape != sigma2.shape:
    raise ValueError(f'covariance shapes differ: {sigma1.shape} vs '
                     f'{sigma2.shape}')
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning('FID: singular product; adding %g to the diagonal of '
                    'both covariances', eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    # Written as not(<=) so that NaN also fails, like np.allclose.
    if not np.all(np.abs(np.diagonal(covmean).imag) <= IMAG_ATOL):
      raise ValueError(
          f'Imaginary component {np.max(np.abs(covmean.imag))}')
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) -
               2.0 * np.trace(covmean))


def fid_from_stats(a: FeatureStats, b: FeatureStats,
                   eps: float = FID_EPS) -> float:
  """FID between two accumulated `FeatureStats`."""
  return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, eps=eps)


def fid_from_features(feats_a: Any, feats_b: Any,
                      eps: float = FID_EPS) -> float:
  """FID between two [N, D] feature arrays (N may differ)."""
  a, b = _as_2d_float64(feats_a), _as_2d_float64(feats_b)
  sa, sb = FeatureStats(a.shape[1]), FeatureStats(b.shape[1])
  sa.update(a)
  sb.update(b)
  return fid_from_stats(sa, sb, eps=eps)


def save_stats(path: str | os.PathLike[str], mu: np.ndarray,
               sigma: np.ndarray) -> None:
  """Writes pytorch-fid's statistics file: `.npz` with `mu` and `sigma`."""
  with epath.Path(path).open('wb') as f:
    np.savez(f, mu=np.asarray(mu), sigma=np.asarray(sigma))


def load_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """Reads an `.npz` statistics file (pytorch-fid format) -> (mu, sigma)."""
  with epath.Path(path).open('rb') as fh, np.load(fh) as f:
    return f['mu'][:], f['sigma'][:]


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x·y / d + 1)^3 for rows of x [n, d] and y [m, d] -> [n, m]."""
  d = x.shape[1]
  return (x @ y.T / d + 1.0)**3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD² between equally sized samples x, y [m, d] (cubic kernel).

  Σ_{i≠j} k(x_i,x_j)/(m(m−1)) + Σ_{i≠j} k(y_i,y_j)/(m(m−1))
  − 2 Σ_{i,j} k(x_i,y_j)/m².
  """
  m = x.shape[0]
  if y.shape[0] != m or m < 2:
    raise ValueError(f'need two samples of equal size >= 2, got {x.shape} and '
                     f'{y.shape}')
  kxx = polynomial_kernel(x, x)
  kyy = polynomial_kernel(y, y)
  kxy = polynomial_kernel(x, y)
  off_xx = kxx.sum() - np.trace(kxx)
  off_yy = kyy.sum() - np.trace(kyy)
  return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    feats_a: Any,
    feats_b: Any,
    num_subsets: int = KID_NUM_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0) -> tuple[float, float]:
  """KID: mean and std of the unbiased MMD² over random subsets.

  Each subset draws `min(subset_size, N_a, N_b)` rows of each set without
  replacement (numpy Generator seeded with `seed`; a's rows first, then b's).
  The std is over subsets with ddof=0, as torch-fidelity reports it.

  Args:
    feats_a, feats_b: [N_a, D] and [N_b, D] features.
    num_subsets: number of random subsets.
    subset_size: rows per subset, capped at the smaller set size.
    seed: seed of the numpy Generator.

  Returns:
    (kid_mean, kid_std) as Python floats.
  """
  a, b = _as_2d_float64(feats_a), _as_2d_float64(feats_b)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f'feature dims differ: {a.shape[1]} vs {b.shape[1]}')
  m = min(subset_size, a.shape[0], b.shape[0])
  rng = np.random.default_rng(seed)
  values = np.empty((num_subsets,), np.float64)
  for i in range(num_subsets):
    xa = a[rng.choice(a.shape[0], m, replace=False)]
    xb = b[rng.choice(b.shape[0], m, replace=False)]
    values[i] = mmd2_unbiased(xa, xb)
  return float(values.mean()), float(values.std())
