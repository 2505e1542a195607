"""FID parity with pytorch-fid: the distance function and end to end.

1. `jaxl2i.metrics.fid` (FeatureStats + frechet_distance) against
   `pytorch_fid.fid_score.calculate_frechet_distance` fed with np.mean/np.cov,
   on the same features: full-rank, singular (N < D) and commuting cases.
2. End to end: the same uint8 images through pytorch-fid's InceptionV3([3])
   (its weight download monkeypatched to a random state_dict) with its own
   statistics, and through jaxl2i's Flax Inception + FeatureStats; the FIDs
   must agree.
"""

from absl import logging
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from jaxl2i.metrics import fid  # pylint: disable=g-import-not-at-top

torchvision = pytest.importorskip('torchvision')
fid_score = pytest.importorskip('pytorch_fid.fid_score')
pi = pytest.importorskip('pytorch_fid.inception')

FD_TOL = 1e-6  # |Δ| of the Fréchet distance on identical features.
FID_TOL = 1e-3  # |Δ| of the end-to-end FID.


def _reference_fd(a, b):
  return float(fid_score.calculate_frechet_distance(
      np.mean(a, axis=0), np.cov(a, rowvar=False),
      np.mean(b, axis=0), np.cov(b, rowvar=False)))


def _ours_fd(a, b, batch=7):
  sa, sb = fid.FeatureStats(a.shape[1]), fid.FeatureStats(b.shape[1])
  for i in range(0, a.shape[0], batch):
    sa.update(a[i:i + batch])
  for i in range(0, b.shape[0], batch):
    sb.update(b[i:i + batch])
  return fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


@pytest.mark.parametrize('n,d', [(200, 16), (10, 32), (24, 64)])
def test_frechet_distance_matches_pytorch_fid(n, d):
  rng = np.random.default_rng(n * 1000 + d)
  # Non-negative, correlated features like pool3 activations.
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  a = np.abs(rng.normal(size=(n, d)) @ mix)
  b = np.abs(rng.normal(0.2, 1.1, size=(n + 3, d)) @ mix)
  ref, ours = _reference_fd(a, b), _ours_fd(a, b)
  logging.info('FD n=%d d=%d: pytorch-fid %.9f jaxl2i %.9f |diff| %.2e', n,
               d, ref, ours, abs(ref - ours))
  assert np.isfinite(ref)
  assert abs(ref - ours) <= FD_TOL * max(1.0, abs(ref))
  # The same statistics straight into pytorch-fid's function.
  sa, sb = fid.FeatureStats(d), fid.FeatureStats(d)
  sa.update(a)
  sb.update(b)
  direct = float(fid_score.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu,
                                                      sb.sigma))
  assert abs(direct - fid.fid_from_stats(sa, sb)) <= 1e-9 * max(1.0, direct)


def test_eps_retry_path_matches_pytorch_fid(monkeypatch):
  # scipy >= 1.16 returns finite (inaccurate) roots of singular products, so
  # the retry is forced: every first sqrtm of a distance returns NaNs, in
  # both implementations (they share scipy.linalg).
  real = fid_score.linalg.sqrtm
  count = [0]

  def flaky_sqrtm(a, disp=True):
    count[0] += 1
    root = real(a) if count[0] % 2 == 0 else np.full(a.shape, np.nan)
    return root if disp else (root, 0.0)

  monkeypatch.setattr(fid_score.linalg, 'sqrtm', flaky_sqrtm)
  rng = np.random.default_rng(5)
  a, b = np.abs(rng.normal(size=(10, 32))), np.abs(rng.normal(size=(9, 32)))
  ref, ours = _reference_fd(a, b), _ours_fd(a, b)
  assert count[0] == 4
  logging.info('FD eps path: pytorch-fid %.9f jaxl2i %.9f', ref, ours)
  assert abs(ref - ours) <= FD_TOL * max(1.0, abs(ref))


def _randomised(state_dict, rng):
  """Random weights for pytorch-fid's Inception keeping pool3 O(1)."""
  out = {}
  for key, value in state_dict.items():
    shape = tuple(value.shape)
    if key.endswith('num_batches_tracked'):
      out[key] = value
      continue
    if key.endswith('conv.weight'):  # He-normal.
      a = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith('bn.weight'):
      a = rng.uniform(0.8, 1.2, shape)
    elif key.endswith(('bn.bias', 'bn.running_mean')):
      a = rng.normal(0.0, 0.1, shape)
    elif key.endswith('bn.running_var'):
      a = rng.uniform(0.7, 1.5, shape)
    else:  # fc.weight / fc.bias (unused by pool3).
      a = rng.normal(0.0, 0.01, shape)
    out[key] = torch.from_numpy(a.astype(np.float32))
  return out


def _pytorch_fid_model(monkeypatch, rng, dims):
  """pytorch-fid's InceptionV3 for `dims` features with its download replaced
  by random weights (drawn with the shapes of the model it just built)."""
  built = []
  make = pi._inception_v3  # pylint: disable=protected-access

  def recording_make(*args, **kwargs):
    built.append(make(*args, **kwargs))
    return built[-1]

  def fake_download(*unused_args, **unused_kwargs):
    return _randomised(built[-1].state_dict(), rng)

  monkeypatch.setattr(pi, '_inception_v3', recording_make)
  monkeypatch.setattr(pi, 'load_state_dict_from_url', fake_download)
  model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
  assert len(built) == 1
  return model.eval(), built[0]


def _images(rng, n, kind):
  if kind == 'noise':
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
  # Smooth colour gradients plus mild noise.
  yy, xx = np.mgrid[0:64, 0:64] / 63.0
  out = []
  for _ in range(n):
    c = rng.uniform(0, 255, (3, 3))
    img = c[0] * xx[..., None] + c[1] * yy[..., None] + c[2] * (1 - xx)[...,
                                                                       None]
    img = img / 2 + rng.normal(0, 10, (64, 64, 3))
    out.append(np.clip(img, 0, 255).astype(np.uint8))
  return np.stack(out)


# End to end at pytorch-fid's `--dims 768` (Mixed_6e, average-pooled): the
# same statistics and Fréchet code as at 2048, with 768² instead of 2048²
# sqrtm (each of the two took ~20 s on 2 cores). The 2048-d pool3 features
# are compared with pytorch-fid's in test_inception_parity.py, the Fréchet
# distance on identical statistics above.
@pytest.mark.slow
@pytest.mark.usefixtures('xla_optimized')
def test_fid_end_to_end_matches_pytorch_fid(monkeypatch):
  inception_fid = pytest.importorskip('jaxl2i.nets.inception_fid')
  rng = np.random.default_rng(0)
  dims = 768
  model, net = _pytorch_fid_model(monkeypatch, rng, dims)
  # `net` is the torchvision-style network pytorch-fid built and loaded; its
  # modules are the ones in model.blocks, so its state_dict holds the weights
  # used below, under the names the converter expects.
  renamed = {k: v.numpy() for k, v in net.state_dict().items()}
  variables = inception_fid.convert_inception(renamed)
  features = inception_fid.inception_fn(variables, dims)

  n = 12  # Per set; N < dims, so both covariances are singular.
  imgs = np.concatenate([_images(rng, n, 'noise'), _images(rng, n, 'smooth')])
  with torch.no_grad():  # pytorch-fid's get_activations on [0, 1] tensors.
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).astype(np.float32) /
                         255.0)
    pred = model(x)[0]   # [N, 768, 17, 17]: get_activations pools it
    pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
    act = pred.squeeze(3).squeeze(2).numpy().astype(np.float64)
  ours = np.asarray(features(imgs))  # One batch: the network compiles once.
  logging.info('%d-d features max |diff| %.2e (max |feature| %.2f)', dims,
               np.abs(ours - act).max(), np.abs(act).max())
  ref_stats, our_stats = [], []
  for lo in (0, n):
    a = act[lo:lo + n]
    ref_stats += [np.mean(a, axis=0), np.cov(a, rowvar=False)]
    stats = fid.FeatureStats(dims)
    for i, j in ((0, 5), (5, 6), (6, n)):  # Uneven batches.
      stats.update(ours[lo + i:lo + j])
    our_stats.append(stats)
  ref = float(fid_score.calculate_frechet_distance(*ref_stats))
  got = fid.fid_from_stats(*our_stats)
  logging.info('end-to-end FID (%d vs %d images, %d-d): pytorch-fid %.6f '
               'jaxl2i %.6f |diff| %.2e', n, n, dims, ref, got, abs(ref - got))
  assert ref > 0.0
  assert abs(got - ref) <= FID_TOL
