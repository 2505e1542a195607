"""The shared step on every recipe's tiny config: one step, devices, resume."""

import glob
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import parallel
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i.recipes import base

import fakes

ROOT = os.path.dirname(os.path.dirname(__file__))
# One synthetic config per recipe: configs/synthetic_<recipe>.py (others,
# such as synthetic_depth_spade.py, are trained in their recipe's tests).
# SPADE's step is compiled once, in tests/test_spade_recipe.py (stage 2 of
# the depth model: plain SPADE plus the depth channel), for the suite's time;
# Layout2Im's in tests/test_layout2im_recipe.py from filled variables (its
# initialisers alone take ~20 s of CPU to compile); the seg GAN's (n_critic
# stacked batches) in tests/test_two_stage.py, where the real training loop
# runs it on 8 devices.
ONE_STEP_ELSEWHERE = ('spade', 'layout2im', 'seg_gan')
RECIPE_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, 'configs', 'synthetic_*.py'))
    if os.path.basename(p)[len('synthetic_'):-3] in base.available() and
    os.path.basename(p)[len('synthetic_'):-3] not in ONE_STEP_ELSEWHERE)
# The trainer-generic properties (8 devices, 1 vs 8 devices, bitwise resume)
# are checked on one recipe; other recipes run on one device. Compiling every
# recipe's step several times more on 8 simulated devices would not fit the
# suite's time budget on 2 CPU cores (LAMA's step alone compiles in ~1 min).
GENERIC = 'synthetic_pix2pix.py'


def _config(path):
  c = config_lib.load(path, 'tiny')
  c.lock()
  return c


class Setup:
  """Recipe, optimizers and a jitted step on a given mesh."""

  def __init__(self, config, mesh, update_g=True):
    self.config, self.mesh = config, mesh
    self.size = config.model.get('resolution', 32)
    self.recipe = base.get_recipe(config, fakes.FakeMeta())
    self.tx_g, _ = state_lib.make_optimizer(config, 'g')
    self.tx_d = (state_lib.make_optimizer(config, 'd')[0]
                 if self.recipe.d is not None else None)
    self.rep = parallel.replicated(mesh)
    self.dat = parallel.data_sharded(mesh)
    self.traces = 0

    step = step_lib.make_train_step(self.recipe, self.tx_g, self.tx_d,
                                    config.ema.decay, config.ema.start,
                                    update_g=update_g)

    def counted(*args):
      self.traces += 1
      return step(*args)

    self.step = jax.jit(counted, in_shardings=(self.rep, self.dat, self.rep),
                        out_shardings=(self.rep, self.rep), donate_argnums=0)
    self.frozen = jax.device_put(self.recipe.frozen_params(), self.rep)

  def batch(self, i):
    host = fakes.batch(self.config.batch_size, self.size, seed=i)
    return jax.device_put(host, self.dat)

  def init_fn(self, key, batch):
    return state_lib.init_state(key, self.recipe, batch, self.tx_g, self.tx_d,
                                self.config.ema.decay)

  def init(self):
    """A step-0 state of filled variables (fakes.filled_state): compiling
    the recipes' initialisers would cost more than their steps; the real
    init runs in the trainer tests (test_train_loop.py, test_main.py)."""
    state = fakes.filled_state(self.recipe, self.batch(0), self.tx_g,
                               self.tx_d, self.config.ema.decay,
                               self.config.seed)
    return jax.device_put(state, self.rep)

  def run(self, state, first, last):
    metrics = None
    for i in range(first, last):
      state, metrics = self.step(state, self.batch(i), self.frozen)
    return state, metrics


def _mesh(n):
  return jax.make_mesh((n,), ('data',), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope='module', params=RECIPE_CONFIGS, ids=os.path.basename)
def setup8(request):
  devices = 8 if os.path.basename(request.param) == GENERIC else 1
  return Setup(_config(request.param), _mesh(devices))


def test_one_step(setup8):
  s0 = setup8.init()
  before = _host(s0)
  s1, m1 = setup8.run(s0, 1, 2)
  after = _host(s1)
  m1 = _host(m1)
  assert all(np.isfinite(v) for v in m1.values()), m1
  assert {'g/loss', 'g/grad_norm'} <= set(m1)
  assert int(after.step) == 1
  assert _changed(before.g.params, after.g.params), 'G params did not move'
  if setup8.recipe.d is not None:
    assert 'd/loss' in m1
    assert _changed(before.d.params, after.d.params), 'D params did not move'
  if after.ema_g is not None:
    assert _changed(before.ema_g, after.ema_g), 'EMA did not move'
  if before.g.state:
    assert _changed(before.g.state, after.g.state), 'G collections unchanged'
  setup8.run(s1, 2, 3)
  assert setup8.traces == 1, 'the step retraced on step 2'


@pytest.fixture(scope='module')
def generic8():
  return Setup(_config(os.path.join(ROOT, 'configs', GENERIC)), _mesh(8))


def test_one_vs_eight_devices(generic8):
  """Same global batch on 1 and 8 devices: same metrics and params."""
  setup8 = generic8
  setup1 = Setup(setup8.config, _mesh(1))
  s8, m8 = setup8.run(setup8.init(), 1, 3)
  s1, m1 = setup1.run(setup1.init(), 1, 3)
  m8, m1 = _host(m8), _host(m1)
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-4, atol=1e-5, err_msg=k)
  for a, b in zip(jax.tree.leaves(_host(s8.g.params)),
                  jax.tree.leaves(_host(s1.g.params))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_bitwise_resume(generic8, tmp_path):
  """2 steps + save + restore + 2 steps == 4 steps, bit for bit."""
  setup8 = generic8
  straight, _ = setup8.run(setup8.init(), 1, 5)
  straight = _host(straight)

  first, _ = setup8.run(setup8.init(), 1, 3)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(2, first)
  ckpt.close()
  del first
  abstract = jax.eval_shape(setup8.init_fn, jax.random.key(0), setup8.batch(0))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=setup8.rep),
      abstract)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.latest_step == 2
  restored = ckpt.restore(abstract)
  ckpt.close()
  resumed, _ = setup8.run(restored, 3, 5)
  resumed = _host(resumed)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_bfloat16_step(generic8):
  """bf16 compute: finite losses, params/EMA/optimizer stay float32.

  (Each model's bf16 forward is tested with its modules, e.g.
  test_models_lama.py::test_generator_bfloat16_compute.)
  """
  setup8 = generic8
  config = ml_collections.ConfigDict(setup8.config.to_dict())
  config.dtype = 'bfloat16'
  setup = Setup(config, _mesh(1))   # dtypes do not depend on the mesh
  state, metrics = setup.run(setup.init(), 1, 2)
  assert all(np.isfinite(v) for v in _host(metrics).values())
  for leaf in jax.tree.leaves((state.g.params, state.g.opt, state.ema_g)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


def test_d_only_warmup_step(generic8):
  """The D-only iterations (LAMA's first 31 of every epoch): D moves, G not.

  A property of the shared step (make_train_step(update_g=False)), checked on
  the generic recipe; configs/synthetic_lama.py sets optim.d_only_steps.
  """
  setup = Setup(generic8.config, _mesh(1), update_g=False)
  s0 = setup.init()
  before = _host(s0)
  s1, metrics = setup.run(s0, 1, 2)
  after, metrics = _host(s1), _host(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert metrics['g/grad_norm'] == 0.0 and 'g/loss' in metrics
  assert _changed(before.d.params, after.d.params)
  for a, b in zip(jax.tree.leaves((before.g.params, before.g.opt)),
                  jax.tree.leaves((after.g.params, after.g.opt))):
    np.testing.assert_array_equal(a, b)
  # G ran forward in train mode: its batch statistics moved.
  assert _changed(before.g.state, after.g.state)


def test_d_only_iterations_start_every_epoch():
  from jaxl2i import train
  picked = [s for s in range(1, 301) if train.is_d_only(s, 100, 31)]
  assert picked == [*range(1, 32), *range(101, 132), *range(201, 232)]
  assert not any(train.is_d_only(s, 100, 0) for s in range(1, 301))


class _NoiseRecipe(base.Recipe):
  """Scalar 'networks' whose outputs are the draws of the keys they get."""
  order = ('d', 'g')
  share_fake = False

  def build(self):
    return None, None

  def generate(self, g_params, nets, batch, key):
    return {'x': g_params['w'] * jax.random.normal(key, ())}, {}

  def regenerate(self, g_params, nets, batch, key, fresh_key):
    out, g_state = self.generate(g_params, nets, batch, key)
    return {**out, 'fresh': jax.random.normal(fresh_key, ())}, g_state

  def d_loss(self, d_params, nets, batch, out, key):
    return d_params['v'] * out['x'], ({'d/x': out['x']}, {})

  def g_loss(self, out, nets, batch, key):
    return out['x'], ({'g/x': out['x'], 'g/fresh': out['fresh']}, {})


def test_d_then_g_rerun_gets_the_same_key_and_a_fresh_one():
  """Without share_fake, a ('d', 'g') step reruns G through `regenerate`
  with the key of the D update's forward (Layout2Im's same z) and an unused
  key for noise drawn anew."""
  import optax  # pylint: disable=g-import-not-at-top
  recipe = _NoiseRecipe(ml_collections.ConfigDict({'dtype': 'float32'}),
                        fakes.FakeMeta())
  tx = optax.sgd(0.1)
  state = state_lib.state_from_variables(
      jax.random.key(0), {'params': {'w': jnp.ones(())}},
      {'params': {'v': jnp.ones(())}}, tx, tx, 0.0)
  _, m = jax.jit(step_lib.make_train_step(recipe, tx, tx, 0.0))(state, {}, {})
  assert float(m['d/x']) == float(m['g/x']) != 0.0
  assert float(m['g/fresh']) != float(m['g/x'])
