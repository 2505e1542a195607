"""Shared by the multi-host test and its worker processes."""

import os
import types

import jax

from jaxl2i import config_lib
from jaxl2i import parallel
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i.recipes import base

import fakes

CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs', 'synthetic_pix2pix.py')


def setup(mesh):
  config = config_lib.load(CONFIG, 'tiny')
  recipe = base.get_recipe(config, fakes.FakeMeta())
  tx_g, _ = state_lib.make_optimizer(config, 'g')
  tx_d, _ = state_lib.make_optimizer(config, 'd')
  rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
  init = jax.jit(lambda b: state_lib.init_state(
      jax.random.key(config.seed), recipe, b, tx_g, tx_d, config.ema.decay),
                 out_shardings=rep)
  step = jax.jit(step_lib.make_train_step(recipe, tx_g, tx_d, config.ema.decay),
                 in_shardings=(rep, dat, rep), out_shardings=(rep, rep),
                 donate_argnums=0)
  frozen = jax.device_put(recipe.frozen_params(), rep)
  return types.SimpleNamespace(config=config, mesh=mesh, init=init, step=step,
                               frozen=frozen)


def global_batch(s, i):
  return fakes.batch(s.config.batch_size, 32, seed=100 + i)
