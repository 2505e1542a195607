"""Tests of jaxl2i.metrics: FID stats, KID, SceneFID crops, mask entropy, DS."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jaxl2i.metrics import diversity
from jaxl2i.metrics import fid
from jaxl2i.metrics import mask_entropy
from jaxl2i.metrics import scene_fid


def _features(seed, n, d, shift=0.0):
  scales = np.random.default_rng(1234).uniform(0.5, 2.0, size=(d,))
  return np.random.default_rng(seed).normal(size=(n, d)) * scales + shift


# ------------------------------------------------------------------ FID stats
def test_feature_stats_batch_invariance_and_np_cov():
  x = _features(0, 103, 7, shift=3.0)
  one = fid.FeatureStats(7)
  one.update(x)
  many = fid.FeatureStats(7)
  for lo, hi in ((0, 1), (1, 2), (2, 40), (40, 41), (41, 97), (97, 103)):
    many.update(x[lo:hi].astype(np.float64))
  assert many.count == one.count == 103
  np.testing.assert_allclose(many.mu, one.mu, rtol=0, atol=1e-12)
  np.testing.assert_allclose(many.sigma, one.sigma, rtol=0, atol=1e-12)
  np.testing.assert_allclose(one.mu, x.mean(0), rtol=0, atol=1e-12)
  np.testing.assert_allclose(one.sigma, np.cov(x, rowvar=False), rtol=0,
                             atol=1e-12)


def test_feature_stats_mask_merge_and_dict_round_trip():
  x = _features(1, 40, 5)
  keep = np.arange(40) % 3 != 0
  masked = fid.FeatureStats(5, keep_features=True)
  masked.update(x[:25], mask=keep[:25])
  part = fid.FeatureStats(5, keep_features=True)
  part.update(jnp.asarray(x[25:], jnp.float32), mask=keep[25:])
  masked.merge(fid.FeatureStats.from_dict(part.to_dict()))
  ref = x[keep]
  assert masked.count == ref.shape[0]
  np.testing.assert_allclose(masked.mu, ref.mean(0), atol=1e-6)
  np.testing.assert_allclose(masked.sigma, np.cov(ref, rowvar=False),
                             atol=1e-5)
  masked.features.extend(part.features)
  assert masked.all_features().shape == (ref.shape[0], 5)
  with pytest.raises(ValueError):
    fid.FeatureStats(5).sigma  # pylint: disable=expression-not-assigned


def test_npz_round_trip_and_pytorch_fid_format(tmp_path):
  x = _features(2, 30, 6)
  mu, sigma = x.mean(0), np.cov(x, rowvar=False)
  path = tmp_path / 'stats.npz'
  fid.save_stats(path, mu, sigma)
  with np.load(path) as f:  # pytorch-fid reads exactly these keys.
    assert sorted(f.files) == ['mu', 'sigma']
  mu2, sigma2 = fid.load_stats(path)
  np.testing.assert_array_equal(mu2, mu)
  np.testing.assert_array_equal(sigma2, sigma)


def test_frechet_identical_zero_and_closed_form():
  x = _features(3, 200, 8)
  s = fid.FeatureStats(8)
  s.update(x)
  assert abs(fid.frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-8
  # Commuting (diagonal) covariances: FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  want = 5.0 + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert got == pytest.approx(want, abs=1e-10)
  assert fid.fid_from_features(x, x + 1.0) == pytest.approx(8.0, abs=1e-8)


def test_frechet_eps_retry_when_sqrtm_not_finite(monkeypatch):
  x, y = _features(12, 6, 10), _features(13, 6, 10, shift=0.3)
  sa, sb = fid.FeatureStats(10), fid.FeatureStats(10)
  sa.update(x)
  sb.update(y)
  real_sqrtm = fid._sqrtm  # pylint: disable=protected-access
  calls = []

  def first_call_fails(a):
    calls.append(a)
    return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

  monkeypatch.setattr(fid, '_sqrtm', first_call_fails)
  got = fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma, eps=1e-3)
  assert len(calls) == 2
  off = np.eye(10) * 1e-3
  np.testing.assert_allclose(calls[1], (sa.sigma + off) @ (sb.sigma + off))
  # Traces of the unshifted covariances, root of the shifted product.
  want = (np.sum((sa.mu - sb.mu)**2) + np.trace(sa.sigma) +
          np.trace(sb.sigma) - 2 * np.trace(np.real(real_sqrtm(calls[1]))))
  assert got == pytest.approx(want, rel=1e-12)


def test_frechet_imaginary_check():
  # sqrtm of a product with a negative eigenvalue is far from real.
  s1 = np.diag([1.0, 1.0])
  s2 = np.diag([1.0, -1.0])
  with pytest.raises(ValueError, match='Imaginary component'):
    fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2)


# ------------------------------------------------------------------------ KID
def _mmd2_loops(x, y):
  m, d = x.shape
  k = lambda a, b: (np.dot(a, b) / d + 1.0)**3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (m * m)


def test_kid_matches_direct_formula():
  x, y = _features(4, 12, 5), _features(5, 12, 5, shift=0.7)
  assert fid.mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y),
                                                  rel=1e-12)
  # A single subset of all rows is the full-sample MMD (order irrelevant).
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=1,
                                            subset_size=1000)
  assert mean == pytest.approx(_mmd2_loops(x, y), rel=1e-12) and std == 0.0
  # Subsets: mean/std of per-subset MMDs with the documented sampling order.
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=4,
                                            subset_size=6, seed=3)
  rng = np.random.default_rng(3)
  vals = []
  for _ in range(4):
    xa = x[rng.choice(12, 6, replace=False)]
    yb = y[rng.choice(12, 6, replace=False)]
    vals.append(_mmd2_loops(xa, yb))
  assert mean == pytest.approx(np.mean(vals), rel=1e-10)
  assert std == pytest.approx(np.std(vals), rel=1e-8)


def test_kid_identical_sets_near_zero():
  x = _features(6, 200, 16)
  y = _features(7, 200, 16, shift=1.0)
  # Full subsets of one set: only the diagonal terms remain, giving
  # 2 (S_off - (m - 1) S_diag) / (m² (m - 1)) = O(1/m).
  same, _ = fid.kernel_inception_distance(x, x, num_subsets=2,
                                          subset_size=200)
  k = fid.polynomial_kernel(x, x)
  m, s_diag = 200, np.trace(k)
  want = 2 * (k.sum() - s_diag - (m - 1) * s_diag) / (m * m * (m - 1))
  assert same == pytest.approx(want, rel=1e-9)
  diff, _ = fid.kernel_inception_distance(x, y, num_subsets=2,
                                          subset_size=200)
  assert abs(same) < 0.05 * diff
  # Independent samples of one distribution: zero up to the subset noise.
  # (Subsets of one identical set overlap, which biases MMD² negative.)
  z = _features(16, 200, 16)
  z_same, z_std = fid.kernel_inception_distance(x, z, num_subsets=20,
                                                subset_size=100)
  assert abs(z_same) < 3 * z_std and abs(z_same) < 0.1 * diff


# ------------------------------------------------------------- SceneFID crops
def _pil_crops(img, box_norm, rounding, mode):
  h, w = img.shape[:2]
  # float32 products, as LAMA's torch tensors (0.1f * 40 == 4 exactly).
  b = np.asarray(box_norm, np.float32) * np.array([w, h, w, h], np.float32)
  b = np.ceil(b) if rounding == 'ceil' else np.floor(b)
  b = tuple(int(v) for v in b)
  if mode == 'u8':
    im = Image.fromarray(img.astype(np.uint8))
    return np.asarray(im.crop(b).resize((224, 224), Image.BICUBIC))
  chans = [
      np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode='F')
                 .crop(b).resize((224, 224), Image.BICUBIC))
      for c in range(3)
  ]
  return np.stack(chans, axis=-1)


@pytest.mark.parametrize('rounding', ['ceil', 'floor'])
def test_crop_objects_matches_pil_bicubic(rounding):
  rng = np.random.default_rng(8)
  img = rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
  boxes = np.array([[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]],
                    [[0.33, 0.41, 0.37, 0.47], [0.5, 0.5, 0.5, 0.5]]],
                   np.float32)
  mask = np.array([[True, True], [True, False]])
  crop = jax.jit(scene_fid.crop_objects, static_argnames=('size', 'rounding'))
  cu8, valid = crop(jnp.asarray(img), jnp.asarray(boxes), jnp.asarray(mask),
                    rounding=rounding)
  cf, _ = crop(jnp.asarray(img, jnp.float32), jnp.asarray(boxes),
               jnp.asarray(mask), rounding=rounding)
  assert cu8.shape == (4, 224, 224, 3) and cu8.dtype == jnp.uint8
  assert cf.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(valid), mask.reshape(-1))
  for n in range(3):  # The 4th slot is padding (degenerate box).
    bi, oi = divmod(n, 2)
    ref_f = _pil_crops(img[bi], boxes[bi, oi], rounding, 'f')
    ref_u8 = _pil_crops(img[bi], boxes[bi, oi], rounding, 'u8').astype(int)
    np.testing.assert_allclose(np.asarray(cf[n]), ref_f, atol=3e-3)
    d = np.abs(np.asarray(cu8[n]).astype(int) - ref_u8)
    assert d.max() <= 2 and (d > 0).mean() < 0.02
  assert np.isfinite(np.asarray(cf[3])).all()


def test_crop_of_constant_region_and_pixel_boxes():
  img = np.zeros((1, 32, 32, 3), np.float32)
  img[0, 8:16, 4:20] = 5.0
  boxes = np.array([[[4 / 32, 8 / 32, 20 / 32, 16 / 32]]], np.float32)
  crops, _ = scene_fid.crop_objects(jnp.asarray(img), jnp.asarray(boxes),
                                    jnp.ones((1, 1), bool), size=16)
  np.testing.assert_allclose(np.asarray(crops), 5.0, atol=1e-5)
  px = scene_fid.pixel_boxes(jnp.array([[0.26, 0.0, 0.74, 1.0]]), 10, 10,
                             'ceil')
  np.testing.assert_array_equal(np.asarray(px), [[3, 0, 8, 10]])
  px = scene_fid.pixel_boxes(jnp.array([[0.26, 0.0, 0.74, 1.0]]), 10, 10,
                             'floor')
  np.testing.assert_array_equal(np.asarray(px), [[2, 0, 7, 10]])


def test_scene_fid_accumulates_valid_crops_only():
  def feature_fn(crops):  # Mean colour per crop, a 3-d "feature".
    return jnp.mean(crops.astype(jnp.float32), axis=(1, 2))

  rng = np.random.default_rng(9)
  imgs = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  boxes = np.tile(np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0],
                            [0.2, 0.2, 0.9, 0.6]], np.float32), (3, 1, 1))
  mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
  sfid = scene_fid.SceneFID(feature_fn, dim=3, size=16)
  sfid.update_real(imgs, boxes, mask)
  sfid.update_fake(imgs, boxes, mask)
  sfid.update_fake(imgs[::-1], boxes, mask[::-1])
  assert sfid.real.count == 6 and sfid.fake.count == 12
  assert np.isfinite(sfid.result()) and sfid.result() >= -1e-9


# --------------------------------------------------------------- mask entropy
def test_mask_entropy_one_hot_uniform_and_tainted():
  b, o, h, w = 2, 4, 6, 5
  labels = np.random.default_rng(10).integers(0, 3, (b, h, w))
  one_hot = np.moveaxis(np.eye(o)[labels], -1, 1)  # [B, O, H, W], slot 3 off
  valid = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
  np.testing.assert_allclose(
      np.asarray(mask_entropy.mask_entropy(one_hot, valid)), 0.0, atol=1e-7)
  # Uniform over the k valid objects -> log k (padded slot ignored).
  uniform = np.ones((b, o, h, w)) * 0.3
  got = mask_entropy.mask_entropy(uniform, valid)
  np.testing.assert_allclose(np.asarray(got), math.log(3), rtol=1e-6)
  # NHWC layout, unnormalised masks: the same distribution per pixel.
  got = mask_entropy.mask_entropy(np.moveaxis(uniform, 1, 3) * 7.0, valid,
                                  object_axis=3)
  np.testing.assert_allclose(np.asarray(got), math.log(3), rtol=1e-6)
  # LAMA's tainted mask (1 - tau) M + tau / m over m = 8 objects.
  m, tau = 8, 0.02
  gt = np.moveaxis(np.eye(m)[np.random.default_rng(11).integers(0, m, (1, 4,
                                                                       4))],
                   -1, 1)
  tainted = (1 - tau) * gt + tau / m
  p, q = 1 - tau + tau / m, tau / m
  want = -(p * math.log(p) + (m - 1) * q * math.log(q))
  got = mask_entropy.mask_entropy(tainted, normalize=False)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_mask_entropy_pixel_average_and_empty_pixels():
  masks = np.zeros((1, 2, 1, 4), np.float32)
  masks[0, :, 0, 0] = [1.0, 1.0]  # log 2
  masks[0, :, 0, 1] = [1.0, 0.0]  # 0
  masks[0, :, 0, 2] = [3.0, 1.0]  # H(0.75, 0.25)
  # Pixel 3 is empty: contributes 0 but counts in 1/(W*H).
  h3 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  got = mask_entropy.mask_entropy(masks)
  np.testing.assert_allclose(np.asarray(got), [(math.log(2) + h3) / 4],
                             rtol=1e-6)
  grad = jax.grad(lambda m: mask_entropy.mask_entropy(m).sum())(
      jnp.asarray(masks))
  assert np.isfinite(np.asarray(grad)).all()


# ------------------------------------------------------------ diversity score
def test_lpips_self_distance_zero_and_diversity_score():
  from jaxl2i.nets import lpips  # pylint: disable=g-import-not-at-top
  variables = lpips.init_variables(seed=0)
  shapes = jax.eval_shape(lpips.LPIPS().init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))
  assert (jax.tree.map(lambda a: a.shape, shapes) ==
          jax.tree.map(lambda a: a.shape, variables))
  fn = lpips.lpips_fn(variables)
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3), minval=-1,
                         maxval=1)
  y = jax.random.uniform(jax.random.key(2), (3, 32, 32, 3), minval=-1,
                         maxval=1)
  np.testing.assert_allclose(np.asarray(fn(x, x)), 0.0, atol=1e-7)
  d = np.asarray(fn(x, y))
  assert d.shape == (3,) and (d > 0).all()
  ds = diversity.DiversityScore(fn)
  ds.update(x, y)
  ds.update(y, x, mask=np.array([True, True, False]))
  mean, std = ds.result()
  vals = np.concatenate([d, np.asarray(fn(y, x))[:2]])
  assert ds.count == 5
  assert mean == pytest.approx(vals.mean(), rel=1e-6)
  assert std == pytest.approx(vals.std(ddof=1), rel=1e-5)
  np.testing.assert_allclose(np.asarray(fn(y, x)), d, rtol=1e-5)
