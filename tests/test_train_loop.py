"""The training loop's guards: NaN stop, SIGTERM save, per-group rates."""

import logging
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxl2i import config_lib
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
  c = config_lib.load(os.path.join(ROOT, 'configs', 'synthetic_pix2pix.py'),
                      'tiny')
  c.data.data_dir = data_dir
  c.evals = ml_collections.ConfigDict()
  c.update(overrides)
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _wrap_step(monkeypatch, after):
  """Makes every built train step call `after(state, metrics)` inside jit."""
  make = step_lib.make_train_step

  def patched(*args, **kwargs):
    step = make(*args, **kwargs)
    return lambda s, batch, frozen: after(*step(s, batch, frozen))

  monkeypatch.setattr(step_lib, 'make_train_step', patched)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch):
  def poison(state, metrics):   # g/loss becomes NaN from step 3 on
    bad = jnp.where(state.step >= 3, jnp.nan, 0.0)
    return state, {**metrics, 'g/loss': metrics['g/loss'] + bad}

  _wrap_step(monkeypatch, poison)
  c = _config(data_dir, total_steps=6, ckpt_every=2, log_every=2)
  with pytest.raises(train.NonFiniteLossError,
                     match=r'between steps 3 and 4.*last good checkpoint is '
                     r'step 2'):
    train.train_and_evaluate(c, str(tmp_path))
  assert os.listdir(tmp_path / 'checkpoints') == ['2']


def test_sigterm_saves_and_stops_and_a_rerun_resumes(data_dir, tmp_path,
                                                     monkeypatch, caplog):
  def preempt_at_3(state, metrics):
    jax.debug.callback(
        lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 3 else None,
        state.step)
    return state, metrics

  _wrap_step(monkeypatch, preempt_at_3)
  c = _config(data_dir, total_steps=50, ckpt_every=20, log_every=10,
              image_every=20)
  train.train_and_evaluate(c, str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert steps and 3 <= steps[-1] < 10, steps   # stopped early, saved

  # Run again, as a user reruns the command: it continues from that
  # checkpoint instead of starting over, up to total_steps. The last step's
  # image grid fails: its checkpoint is written before grids and evals.
  c.total_steps = steps[-1] + 2

  def failing_grid(self, step, state):
    del self, state
    if step == c.total_steps:
      raise RuntimeError('grid failed')

  monkeypatch.setattr(train._Grids, '__call__', failing_grid)  # pylint: disable=protected-access
  with caplog.at_level(logging.INFO), pytest.raises(RuntimeError,
                                                    match='grid failed'):
    train.train_and_evaluate(c, str(tmp_path))
  assert f'resumed from step {steps[-1]}' in caplog.text
  assert str(steps[-1] + 2) in os.listdir(tmp_path / 'checkpoints')


def test_parameter_groups_get_their_own_rate():
  c = ml_collections.ConfigDict(dict(
      total_steps=10,
      optim=dict(g=dict(lr=1e-2, b1=0.5, b2=0.999, eps=1e-8,
                        groups=(('frozen', 0.0), ('slow', 0.1))),
                 schedule='constant', decay_start=0, decay_to=0.0)))
  tx, _ = state_lib.make_optimizer(c, 'g')
  params = {'frozen': {'w': jnp.ones(3)}, 'slow': {'w': jnp.ones(3)},
            'fast': {'w': jnp.ones(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  delta = {k: float(1.0 - new[k]['w'][0]) for k in params}
  assert delta['frozen'] == 0.0
  np.testing.assert_allclose(delta['fast'], 1e-2, rtol=1e-3)   # Adam step = lr
  np.testing.assert_allclose(delta['slow'], 1e-3, rtol=1e-3)


def test_linear_decay_schedule():
  c = ml_collections.ConfigDict(dict(
      total_steps=10, optim=dict(schedule='linear_decay', decay_start=4,
                                 decay_to=0.0)))
  s = state_lib.make_schedule(c, 1.0)
  assert float(s(0)) == 1.0 and float(s(4)) == 1.0
  np.testing.assert_allclose(float(s(7)), 0.5)
  assert float(s(10)) == 0.0
