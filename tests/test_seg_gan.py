"""Segmentation-mask WGAN-GP: networks, penalty, patches, inversion, configs.

The one-hot map model with nearest upsampling (configs/synthetic_seg_gan.py:
tiny) is trained by the real loop in tests/test_two_stage.py, with the
two-stage pipeline (render, evaluate, generate, interpolate); every Table 1
variant and DCGAN* take a step here.
"""

import dataclasses
import os

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxl2i import config_lib
from jaxl2i import inversion
from jaxl2i import losses
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i.models import layers
from jaxl2i.models import seg_gan
from jaxl2i.recipes import base

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITYSCAPES = os.path.join(ROOT, 'configs', 'cityscapes_seg_gan.py')
DCGAN_IMAGES = os.path.join(ROOT, 'configs', 'cityscapes_dcgan_images.py')
SYNTHETIC = os.path.join(ROOT, 'configs', 'synthetic_seg_gan.py')
# Cityscapes labelIds 0..34 (cityscapes_maps): the one-hot channels.
CITYSCAPES_META = dataclasses.replace(
    fakes.FakeMeta(), num_classes=35,
    class_names=tuple(f'c{i}' for i in range(35)))

# Layer by layer (z 128, DIM 64; biases on every conv/linear, BN γ/β):
#   fc 128·8192 + 8192 = 1,056,768, BN 1,024; 5×5 deconvs 512→256
#   3,277,056 + BN 512, 256→128 819,328 + 256, 128→64 204,864 + 128
#   (= 5,359,936, the DCGAN to 32²); 3×3 layers 64→64 at 64² and 128²
#   2 × (36,928 + 128); 64→C at 256²: 577·C.   C = 35: 5,454,243; C = 3:
#   5,435,779.   Critic: 5×5 convs C→64 1,600·C + 64, 64→128 204,928,
#   128→256 819,456, 256→512 3,277,312, LayerNorm γ/β 2·(128+256+512),
#   Linear 8192→1 8,193: 4,311,745 + 1,600·C (C = 35: 4,367,745; 3:
#   4,316,545). Paper: 5.4 M and 4.4 M.
PAPER_COUNTS = {'onehot': (5_454_243, 4_367_745),
                'rgb': (5_435_779, 4_316_545)}


def _spec(shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype)


def _abstract_variables(config, meta, size):
  recipe = base.get_recipe(config, meta)
  batch = {'label': _spec((1, size, size), jnp.int32),
           'image': _spec((1, size, size, 3), jnp.uint8)}
  return recipe, jax.eval_shape(recipe.init, jax.random.key(0), batch)


@pytest.mark.parametrize('encoding', ['onehot', 'rgb'])
def test_paper_parameter_counts(encoding):
  c = config_lib.load(CITYSCAPES, f'encoding={encoding}')
  _, (g, d) = _abstract_variables(c, CITYSCAPES_META, 256)
  counts = (state_lib.count_params(g['params']),
            state_lib.count_params(d['params']))
  assert counts == PAPER_COUNTS[encoding]
  # DCGAN*: the RGB networks, generating photos.
  if encoding == 'rgb':
    c = config_lib.load(DCGAN_IMAGES)
    _, (g, d) = _abstract_variables(c, CITYSCAPES_META, 256)
    assert (state_lib.count_params(g['params']),
            state_lib.count_params(d['params'])) == counts


TABLE1_ARGS = [f'tiny,annot={a},encoding={e},upsample={u}'
               for a, e, u, _ in config_lib.load_module(CITYSCAPES).TABLE1]


@pytest.mark.parametrize('arg', TABLE1_ARGS + [
    'tiny,optim=dcgan,crop=random,flip', 'tiny,encoding=rgb,upsample=nearest'])
def test_every_paper_variant_builds(arg):
  """The six Table-1 variants (and the other options) initialise."""
  c = config_lib.load(CITYSCAPES, arg)
  c.lock()
  recipe, (g, d) = _abstract_variables(c, CITYSCAPES_META, 32)
  assert recipe.n_critic == 5 and c.loss.gp == 10.0
  annot = 'fine' if 'fine' in arg else 'coarse'
  assert c.data.name == f'cityscapes_maps/{annot}'
  assert c.data.pp_train[1].endswith('crop(1024)')
  up = jax.tree.leaves(g['params']['up_2'])
  # The transposed conv's kernel is [k, k, out, in]; the conv's [k, k, in,
  # out].
  kernel = g['params']['up_2']['kernel'].shape
  nearest = 'nearest' in arg
  channels = 3 if 'rgb' in arg else 35
  assert kernel[-1 if nearest else -2] == channels and len(up) == 2
  assert 'norm_1' in d['params']['critic'] and 'norm_0' not in (
      d['params']['critic'])


def test_optimiser_choices():
  w = config_lib.load(CITYSCAPES)
  d = config_lib.load(CITYSCAPES, 'optim=dcgan')
  assert (w.optim.g.lr, w.optim.g.b1, w.optim.g.b2, w.batch_size) == (
      1e-4, 0.0, 0.9, 64)
  assert (d.optim.d.lr, d.optim.d.b1, d.optim.d.b2, d.batch_size) == (
      2e-4, 0.5, 0.999, 128)
  assert config_lib.load(DCGAN_IMAGES).optim.g.lr == 2e-5
  with pytest.raises(config_lib.ConfigError, match='optim='):
    config_lib.load(CITYSCAPES, 'optim=sgd')


def test_gradient_penalty_against_a_direct_computation():
  key = jax.random.key(0)
  real = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))
  fake = jax.random.normal(jax.random.key(2), (3, 8, 8, 2))
  # A linear critic has gradient w everywhere: GP = (‖w‖ − 1)².
  w = jax.random.normal(jax.random.key(3), (8, 8, 2)) * 0.1
  gp = losses.gradient_penalty(lambda x: jnp.sum(x * w, (1, 2, 3)), real,
                               fake, key)
  np.testing.assert_allclose(gp, (np.linalg.norm(w) - 1.0)**2, rtol=1e-5)
  # A nonlinear, per-sample critic: each sample's gradient by itself, with
  # the penalty's own ε (one per sample).
  v = jax.random.normal(jax.random.key(4), (8 * 8 * 2,))
  critic = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ v) ** 2
  eps = np.asarray(jax.random.uniform(key, (3, 1, 1, 1)))
  grad_one = jax.jit(jax.grad(lambda x: critic(x[None])[0]))
  want = []
  for i in range(3):
    x_hat = real[i] + eps[i] * (fake[i] - real[i])
    want.append((np.linalg.norm(np.asarray(grad_one(x_hat))) - 1.0)**2)
  np.testing.assert_allclose(
      losses.gradient_penalty(critic, real, fake, key), np.mean(want),
      rtol=1e-4)


def test_grid_patches_and_patch_critic_on_a_known_map():
  # Tile (r, c) of image b holds the value 100·b + 4·r + c.
  b, size, tiles = 2, 16, 4
  value = (100 * np.arange(b)[:, None, None] + 4 * np.arange(tiles)[:, None]
           + np.arange(tiles))
  x = np.repeat(np.repeat(value, size, 1), size, 2)[..., None].astype(
      np.float32)
  patches = np.asarray(seg_gan.grid_patches(jnp.asarray(x), size))
  assert patches.shape == (b * tiles * tiles, size, size, 1)
  np.testing.assert_array_equal(patches[:, 0, 0, 0], value.reshape(-1))
  assert all(np.all(p == p[0, 0]) for p in patches)   # whole tiles
  # PatchCritic = mean of the DCGAN critic over the 16 tiles of each map.
  critic = seg_gan.DCGANCritic(widths=(4, 8))
  pc = seg_gan.PatchCritic(critic=critic)
  xj = jnp.asarray(x / 100.0)
  variables = pc.init(jax.random.key(0), xj)
  got = pc.apply(variables, xj)
  per_tile = critic.apply({'params': variables['params']['critic']},
                          seg_gan.grid_patches(xj, size))
  np.testing.assert_allclose(got, per_tile.reshape(b, -1).mean(1), rtol=1e-6)
  assert np.ptp(np.asarray(per_tile)) > 0   # the tiles do differ
  crops = seg_gan.random_patches(xj, size, 3, jax.random.key(1))
  assert crops.shape == (b * 3, size, size, 1)


def test_transposed_conv_is_tf_conv2d_transpose():
  """SAME stride-2 transposed conv = the VJP of the SAME stride-2 conv with
  the same kernel (TF conv2d_transpose's definition; pitfall 5)."""
  g = seg_gan.SegGenerator(out_channels=2, widths=(4,), kernels=(5,))
  z = jnp.zeros((1, 3))
  variables = jax.jit(lambda: g.init(jax.random.key(0), z, train=False))()
  p = variables['params']['up_0']   # kernel [k, k, out, in]
  assert p['kernel'].shape == (5, 5, 2, 4)
  # The layer SegGenerator builds (seg_gan.py: ConvTranspose, SAME,
  # transpose_kernel) with the generator's parameters, on a 4×4×4 map.
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  got = nn.ConvTranspose(2, (5, 5), strides=(2, 2), padding='SAME',
                         transpose_kernel=True).apply({'params': p}, x)
  conv = lambda y: jax.lax.conv_general_dilated(
      y, p['kernel'], (2, 2), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _, vjp = jax.vjp(conv, jnp.zeros((2, 8, 8, 2)))
  (want,) = vjp(x)
  np.testing.assert_allclose(got, want + p['bias'], atol=1e-5)
  assert got.shape == (2, 8, 8, 2)


def test_rgb_maps_decode_by_nearest_palette_colour():
  c = config_lib.load(SYNTHETIC, 'tiny,encoding=rgb')
  recipe = base.get_recipe(c, fakes.FakeMeta())
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 8, 8)))
  noisy = recipe.colorize(labels) + 0.05 * jax.random.normal(
      jax.random.key(0), (2, 8, 8, 3))
  np.testing.assert_array_equal(recipe.decode(noisy), labels)
  onehot = base.get_recipe(config_lib.load(SYNTHETIC, 'tiny'),
                           fakes.FakeMeta())
  probs = jax.nn.softmax(5.0 * jax.nn.one_hot(labels, 11))
  np.testing.assert_array_equal(onehot.decode(probs), labels)


CONFIDENT = 300.0   # last-layer gain: softmax maps near one-hot


@pytest.fixture(scope='module')
def tiny_generator():
  """A random tiny G made to look trained: BN running statistics set to the
  batch statistics of 256 samples, and its last layer scaled so the softmax
  is confident (a random G's probabilities are all ≈ 1/C: near-ties)."""
  # Transposed convs here; the trained tiny run (test_two_stage.py) has the
  # demo's nearest upsampling.
  c = config_lib.load(SYNTHETIC, 'tiny,upsample=transposed')
  recipe = base.get_recipe(c, fakes.FakeMeta())
  variables = recipe.g.init(jax.random.key(0), jnp.zeros((1, 8)),
                            train=False)
  z = recipe.latents(jax.random.key(1), 256)
  _, new = jax.jit(lambda v: recipe.g.apply(v, z, train=True,
                                            mutable=['batch_stats']))(
                                                variables)
  m = layers.BN_MOMENTUM   # new = m·old + (1 − m)·batch statistics
  stats = jax.tree.map(lambda n, o: (n - m * o) / (1 - m),
                       new['batch_stats'], variables['batch_stats'])
  last = f'up_{len(c.model.g_widths) - 1}'
  params = dict(variables['params'])
  params[last] = {**params[last], 'kernel': params[last]['kernel'] * CONFIDENT}
  return recipe, {'params': params, 'batch_stats': stats}


def test_inversion_recovers_a_map_of_a_known_latent(tiny_generator):
  """The paper's procedure (extra softmax, Adam, best of the restarts; here
  4 restarts at lr 0.05, for the suite's time) finds the latent of a
  generated map again."""
  recipe, variables = tiny_generator
  assert recipe.config.inversion.extra_softmax
  z_true = recipe.latents(jax.random.key(5), 2)
  targets = recipe.decode(recipe.g_apply(variables, z_true))
  assert len(np.unique(np.asarray(targets))) > 5   # not a constant map
  out = inversion.invert(recipe, variables, targets, jax.random.key(6),
                         restarts=4, steps=100, lr=0.05)
  chance = np.mean(np.asarray(recipe.decode(recipe.g_apply(
      variables, recipe.latents(jax.random.key(7), 2)))) == np.asarray(
          targets))
  agreement = np.asarray(out['agreement'])
  z_error = np.linalg.norm(np.asarray(out['z'] - z_true), axis=1)
  assert np.all(agreement > 0.93), (agreement, chance, z_error)
  print(f'inversion: agreement {agreement}, latent error {z_error}, '
        f'chance {chance}')
  assert chance < 0.6, chance
  assert np.all(z_error < 0.5), z_error   # |z| ≈ √8: the latent itself
  assert np.all(np.asarray(out['loss']) < np.asarray(out['initial_loss']))
  path = inversion.interpolate(out['z'][0], out['z'][1], 5)
  np.testing.assert_allclose(path[0], out['z'][0])
  np.testing.assert_allclose(path[-1], out['z'][1], atol=1e-6)


# --- the shared step with n_critic > 1, on a toy recipe -----------------


class _ToyRecipe(base.Recipe):
  """z -> Dense G, Dense critic; WGAN losses; 3 critic steps."""
  n_critic = 3

  def build(self):
    return nn.Dense(4), nn.Dense(1)

  def init(self, key, batch):
    kg, kd = jax.random.split(key)
    return (self.g.init(kg, jnp.zeros((1, 2))),
            self.d.init(kd, jnp.zeros((1, 4))))

  def generate(self, g_params, nets, batch, key):
    z = jax.random.normal(key, (batch['x'].shape[0], 2))
    return {'x': self.g.apply({'params': g_params}, z)}, {}

  def d_loss(self, d_params, nets, batch, out, key):
    d = lambda x: self.d.apply({'params': d_params}, x)
    return jnp.mean(d(out['x'])) - jnp.mean(d(batch['x'])), ({}, {})

  def g_loss(self, out, nets, batch, key):
    return -jnp.mean(self.d.apply({'params': nets.d.params}, out['x'])), (
        {}, {})


def test_n_critic_step_is_n_critic_d_updates_then_g():
  """One step = D updated on batch[0], batch[1], batch[2] (fresh fakes),
  then G on a fresh fake: replayed by hand with the step's keys."""
  c = config_lib.base_config()
  recipe = _ToyRecipe(c, fakes.FakeMeta())
  tx = optax.sgd(0.1)
  s = state_lib.init_state(jax.random.key(0), recipe, {'x': jnp.zeros((5, 4))},
                           tx, tx, 0.0)
  batch = {'x': jax.random.normal(jax.random.key(1), (3, 5, 4))}
  make = lambda **kw: jax.jit(step_lib.make_train_step(
      recipe, tx, tx, 0.0, unroll_critic=False, **kw))
  new, metrics = make()(s, batch, {})
  key = jax.random.fold_in(jax.random.wrap_key_data(s.key), s.step)
  k_gen, k_d, k_g, _ = jax.random.split(key, 4)
  d_params, g_params = s.d.params, s.g.params
  nets = lambda: base.Nets(s.g.replace(params=g_params),
                           s.d.replace(params=d_params), {})
  for i, k in enumerate(jax.random.split(k_d, 3)):
    kg, kd = jax.random.split(k)
    b = {'x': batch['x'][i]}
    out, _ = recipe.generate(g_params, nets(), b, kg)
    grads = jax.grad(lambda p: recipe.d_loss(p, nets(), b, out, kd)[0])(
        d_params)
    d_params = jax.tree.map(lambda p, g: p - 0.1 * g, d_params, grads)
  b = {'x': batch['x'][-1]}
  grads = jax.grad(lambda p: recipe.g_loss(
      recipe.generate(p, nets(), b, k_gen)[0], nets(), b, k_g)[0])(g_params)
  g_params = jax.tree.map(lambda p, g: p - 0.1 * g, g_params, grads)
  for got, want in ((new.d.params, d_params), (new.g.params, g_params)):
    for a, b_ in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1 and 'd/loss' in metrics
  # The D-only variant moves D only.
  d_only, _ = make(update_g=False)(s, batch, {})
  for a, b_ in zip(jax.tree.leaves(d_only.g.params),
                   jax.tree.leaves(s.g.params)):
    np.testing.assert_array_equal(a, b_)
  for a, b_ in zip(jax.tree.leaves(d_only.d.params),
                   jax.tree.leaves(new.d.params)):
    np.testing.assert_allclose(a, b_, rtol=1e-6)


# Table 1's (encoding, upsampling) pairs; coarse and fine differ in data only.
TABLE1_MODELS = sorted({(e, u) for _, e, u, _ in
                        config_lib.load_module(CITYSCAPES).TABLE1})


@pytest.mark.parametrize('path,arg', [
    (CITYSCAPES, f'tiny,encoding={e},upsample={u}') for e, u in TABLE1_MODELS
] + [(DCGAN_IMAGES, 'tiny')], ids=[f'{e}_{u}' for e, u in TABLE1_MODELS] + [
    'dcgan_images'])
def test_every_paper_variant_takes_a_wgan_gp_step(path, arg):
  """Table 1's six variants and DCGAN* through the shared step: a WGAN-GP
  step on a real batch, finite losses, G and D move. A fine variant
  is its coarse variant on other data (checked), so each pair steps once.
  One critic update per step here (the configs' 5 would compile 5 unrolled
  critic updates per variant; the n_critic sequence is tested above), from
  filled variables (fakes.filled_state: no initialiser compiles)."""
  c = config_lib.load(path, arg)
  if path == CITYSCAPES:
    fine = config_lib.load(path, arg + ',annot=fine')
    assert fine.data.name == 'cityscapes_maps/fine'
    fine.data, coarse = c.data, c.copy_and_resolve_references()
    assert fine.to_dict() == coarse.to_dict()
  assert c.loss.n_critic == 5
  c.loss.n_critic = 1
  recipe = base.get_recipe(c, CITYSCAPES_META)
  tx_g, tx_d = (state_lib.make_optimizer(c, n)[0] for n in ('g', 'd'))
  host = fakes.batch(c.batch_size, c.model.resolution)
  one = {k: host[k] for k in ('label', 'image')}
  s = fakes.filled_state(recipe, one, tx_g, tx_d, c.ema.decay)
  step = jax.jit(step_lib.make_train_step(
      recipe, tx_g, tx_d, c.ema.decay,
      unroll_critic=c.optim.unroll_critic))
  new, metrics = step(s, one, {})
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert {'d/loss', 'g/loss'} <= set(metrics)
  for before, after in ((s.g.params, new.g.params), (s.d.params, new.d.params)):
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_n_critic_needs_order_d_g_without_shared_fake():
  recipe = _ToyRecipe(config_lib.base_config(), fakes.FakeMeta())
  recipe.share_fake = True
  with pytest.raises(ValueError, match='n_critic=3'):
    step_lib.make_train_step(recipe, optax.sgd(0.1), optax.sgd(0.1), 0.0)
