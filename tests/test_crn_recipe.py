"""CRN's losses, λ tables, automatic λ rule, grids and progressive init.

The one-step test of configs/synthetic_crn.py:tiny is in test_train_step.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import losses
from jaxl2i import train
from jaxl2i.recipes import crn as crn_recipe

import fakes

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs')


def _config(name, arg=None):
  return config_lib.load(os.path.join(CONFIGS, name), arg)


def test_lambda_tables_are_the_references():
  """reference/crn.md §5 (demo_256p.py, demo_512p.py, demo_1024p.py,
  GTA_Diversity_256p.py): p0 … p5 = pixels, conv1_2 … conv5_2."""
  t = crn_recipe.LAMBDA_TABLES
  np.testing.assert_allclose(t['cityscapes_256p'],
                             [1, 1 / 1.6, 1 / 2.3, 1 / 1.8, 1 / 2.8, 12.5])
  for res in (512, 1024):
    np.testing.assert_allclose(
        t[f'cityscapes_{res}p'],
        [1, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5])
  np.testing.assert_allclose(t['gta_256p'],
                             [1, 1 / 1.4, 1 / 1.8, 1 / 1.3, 1 / 2.2, 10 / 0.62])
  assert crn_recipe.TAPS == ('input', 'relu1_2', 'relu2_2', 'relu3_2',
                             'relu4_2', 'relu5_2')
  for res, k in ((256, 9), (512, 1), (1024, 1)):
    c = _config('cityscapes_crn.py', f'res={res}')
    assert c.loss.lambda_table == f'cityscapes_{res}p'
    assert tuple(c.loss.taps) == crn_recipe.TAPS
    assert c.model.num_images == k and c.loss.class_masks == (k > 1)
    assert (c.loss.min_weight, c.loss.mean_weight) == (0.999, 0.001)
  assert tuple(_config('cityscapes_crn_imagespace.py').loss.taps) == (
      'input',)


def _resize_area(x, factor):
  """tf.image.resize_area by an integer factor on [B,h,w,P] (numpy)."""
  b, h, w, p = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, p).mean(
      (2, 4))


def _reference_g_loss(reals, fakes_, label, lambdas):
  """demo_256p.py, literally: compute_error per layer, × λ, 0.999/0.001."""
  content = 0.0
  for real, fake, lam in zip(reals, fakes_, lambdas):
    mask = _resize_area(label, label.shape[1] // real.shape[1])
    err = np.mean(np.abs(fake - real), axis=3)[..., None]      # [9,h,w,1]
    content = content + lam * np.mean(mask * err, axis=(1, 2))   # [9,20]
  return (np.sum(np.min(content, axis=0)) * 0.999 +
          np.sum(np.mean(content, axis=0)) * 0.001)


def test_diversity_loss_matches_a_direct_numpy_implementation():
  rng = np.random.default_rng(0)
  k, h, w, p = 9, 16, 32, 20
  label = np.eye(p)[rng.integers(0, p, (1, h, w))].astype(np.float32)
  shapes = [(h, w, 3), (h, w, 4), (h // 2, w // 2, 6), (h // 4, w // 4, 5)]
  reals = [rng.normal(size=(1, *s)).astype(np.float32) for s in shapes]
  fakes_ = [rng.normal(size=(k, *s)).astype(np.float32) for s in shapes]
  lambdas = (1.0, 1 / 1.6, 1 / 2.3, 12.5)
  want = _reference_g_loss(reals, fakes_, label, lambdas)

  @jax.jit
  def ours(reals, fakes_, label):
    total = 0.0
    for real, fake, lam in zip(reals, fakes_, lambdas):
      mask = _jax_area(label, label.shape[1] // real.shape[1])
      total += lam * losses.masked_feature_errors(real, fake[None], mask)
    return losses.hindsight_loss(total)

  got = ours(reals, fakes_, label)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # One output, no masks: Σ_l λ_l mean|Φ_l(I) − Φ_l(g)| (demo_512p.py).
  plain = sum(lam * np.mean(np.abs(f[:1] - r))
              for r, f, lam in zip(reals, fakes_, lambdas))
  e = sum(lam * losses.masked_feature_errors(r, f[None, :1])
          for r, f, lam in zip(reals, fakes_, lambdas))
  np.testing.assert_allclose(losses.hindsight_loss(e), plain, rtol=1e-5)


def _jax_area(x, factor):
  from jaxl2i.models import crn  # pylint: disable=g-import-not-at-top
  for _ in range(int(np.log2(factor))):
    x = crn.area_downsample(x)
  return x


def test_automatic_lambda_rule():
  """λ = 1 (1/#elements on sums) for `auto_lambda_epochs`, then
  1 / mean of the term over the epoch before, fixed from then on."""
  c = _config('synthetic_crn.py', 'tiny')
  c.batch_size = 1
  c.loss.auto_lambda_epochs = 3.0
  meta = fakes.FakeMeta(num_examples={'train': 2})   # 2 steps per epoch
  r = crn_recipe.Recipe(c, meta)
  assert (r.auto_switch, r.auto_window) == (6, 2)
  n = len(c.loss.taps)
  state = {crn_recipe.STATS: {'step': jnp.zeros((), jnp.int32),
                              'sum': jnp.zeros((n,)), 'count': jnp.zeros(())}}
  for step in range(1, 9):
    lam = np.asarray(r.lambdas(state))
    if step <= 6:
      np.testing.assert_array_equal(lam, 1.0)
    else:   # steps 5 and 6 had terms 5·(l+1)·2 and 6·(l+1)·2
      np.testing.assert_allclose(lam, 2 / (11 * (np.arange(n) + 1)),
                                 rtol=1e-6)
    errors = tuple(jnp.full((1, 2, 2), step * (l + 1) / 2.0)
                   for l in range(n))   # Σ_p E_l = step·(l+1)
    state = r._stats_update(state, errors)  # pylint: disable=protected-access


def test_grid_shows_every_output_of_a_label_map():
  c = _config('synthetic_crn.py', 'tiny')
  r = crn_recipe.Recipe(c, fakes.FakeMeta())
  assert r.grid_column_names() == ('_0', '_1')
  batch = {k: v[:1] for k, v in fakes.batch(2, 32).items()}
  v = jax.eval_shape(r.init, jax.random.key(0), batch)[0]
  cols = jax.eval_shape(r.grid_samples, v, batch, jax.random.key(1))
  assert [x.shape for x in cols] == [(1, 32, 32, 3)] * 2
  single = _config('cityscapes_crn.py', 'res=512,tiny')
  assert crn_recipe.Recipe(single, fakes.FakeMeta()).grid_column_names() == (
      '',)


def _setup(resolution, channels, workdir=''):
  c = _config('synthetic_crn.py', 'tiny')
  c.batch_size = 8
  c.model.resolution, c.model.channels = resolution, channels
  c.loss.taps, c.loss.lambdas = ('input',), (1.0,)
  c.loss.auto_lambda_epochs = 0.0
  c.init_from.workdir = workdir
  c.init_from.exclude = f'^g_{resolution}'
  setup = train.Setup(c, fakes.FakeMeta())
  batch = jax.device_put(fakes.batch(8, resolution), setup.dat)
  return setup, batch


def test_progressive_init_restores_all_but_the_new_module(tmp_path):
  """512p from 256p, in small: a 16² cascade's checkpoint initialises a 32²
  one except '^g_32' (the new module and its head); the 16² head is ignored.
  Through the trainer's Setup.init (config.init_from)."""
  small, batch = _setup(16, (8, 8, 8))
  rng = np.random.default_rng(0)   # a "trained" state, without a compile
  source = jax.tree.map(
      lambda x: rng.normal(size=x.shape).astype(x.dtype),
      jax.eval_shape(small.init_fn, jax.random.key(0), batch))
  src = str(tmp_path / 'small')
  ckpt = checkpointing.Checkpointer(src, every=1, keep=1, asynchronous=False)
  ckpt.save(1, source, force=True)
  ckpt.close()
  big, batch = _setup(32, (8, 8, 8, 8))
  fresh = jax.device_get(big.init(batch).g.params)
  big.config.init_from.workdir = src
  state = big.init(batch)
  got, source = jax.device_get(state.g.params), source.g.params
  for name in ('g_4', 'g_8', 'g_16'):
    for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(source[name])):
      np.testing.assert_array_equal(a, b)
  for name in ('g_32', 'g_32_head'):
    for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(fresh[name])):
      np.testing.assert_array_equal(a, b)
  assert int(state.step) == 0
  # Nothing excluded: the new module is missing from the source.
  big.config.init_from.exclude = ''
  with pytest.raises(config_lib.ConfigError, match='g_32/conv1/kernel'):
    big.init(batch)
  # Other widths: same paths, other shapes.
  other, batch = _setup(32, (8, 8, 4, 8))
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(
      other.init_fn, jax.random.key(0), batch))
  with pytest.raises(ValueError, match=r'g_16/conv1/kernel \(3, 3, 19, 8\)'):
    checkpointing.init_from(zeros, src, exclude='^g_32')
