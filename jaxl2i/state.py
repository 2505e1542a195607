"""Training state (one pytree of arrays) and the optimizers that update it.

The state holds arrays only, so orbax saves it as is; optimizers and modules
live in closures (STYLE.md §4).
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any


@flax.struct.dataclass
class Net:
  """One network's trainable state."""
  params: PyTree   # the 'params' collection, float32
  state: PyTree    # every other collection (batch_stats, spectral norm u/σ)
  opt: PyTree      # optax state


@flax.struct.dataclass
class GanState:
  """Everything a run needs to continue exactly.

  `key` holds raw key data (uint32[2]) rather than a typed key, because orbax
  checkpoints plain arrays; the step wraps it with `jax.random.wrap_key_data`.
  """
  step: jax.Array
  key: jax.Array
  g: Net
  d: Net | None
  ema_g: PyTree | None   # EMA of g.params; None when config.ema.decay == 0


def path_name(path) -> str:
  """A pytree key path as 'a/b/c' (the parameter paths config regexes see)."""
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def split_variables(variables: PyTree) -> tuple[PyTree, PyTree]:
  """{'params': p, 'batch_stats': s, ...} -> (p, {'batch_stats': s, ...})."""
  variables = dict(variables)
  params = variables.pop('params', {})
  return params, variables


def make_schedule(config: ml_collections.ConfigDict, peak: float,
                  steps_per_epoch: int = 1) -> optax.Schedule:
  """The learning-rate schedule of config.optim for a peak rate."""
  o = config.optim
  if o.schedule == 'constant':
    return optax.constant_schedule(peak)
  if o.schedule == 'step':
    # MultiStepLR(milestones=decay_epochs, gamma=decay_factor), stepped per
    # epoch in the references; here at the first update of that epoch.
    # Boundaries count this optimizer's updates: with d_only_steps G makes
    # d_only_steps fewer updates per epoch than D, so its decays come that
    # many iterations per epoch later (31 of ~4,700 per COCO epoch at 128²).
    return optax.piecewise_constant_schedule(
        peak, {int(round(e * steps_per_epoch)): o.decay_factor
               for e in o.decay_epochs})
  # 'linear_decay' (pix2pix, SPADE): constant, then linear to decay_to·peak.
  # The references step the rate once per epoch; we step it every iteration,
  # which follows the same line without the staircase.
  decay_steps = max(1, config.total_steps - o.decay_start)
  return optax.join_schedules(
      [optax.constant_schedule(peak),
       optax.linear_schedule(peak, peak * o.decay_to, decay_steps)],
      [o.decay_start])


def _adam(cfg: ml_collections.ConfigDict,
          schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


def make_optimizer(config: ml_collections.ConfigDict, net: str,
                   steps_per_epoch: int = 1
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam for network `net` ('g' or 'd'), with per-parameter-group rates.

  `config.optim.<net>.groups` is a sequence of (regex, lr_multiplier): a
  parameter whose '/'-joined path matches a regex (first match wins) trains at
  lr·multiplier (LAMA's mapping/rho/alpha groups); others at lr.

  Returns:
    (transformation, schedule of the base group) — the schedule is for logs.
  """
  cfg = config.optim[net]
  base = make_schedule(config, cfg.lr, steps_per_epoch)
  groups = tuple(cfg.groups)
  if not groups:
    return _adam(cfg, base), base
  transforms = {'base': _adam(cfg, base)}
  for i, (_, mult) in enumerate(groups):
    transforms[f'group{i}'] = _adam(
        cfg, make_schedule(config, cfg.lr * mult, steps_per_epoch))
  patterns = [re.compile(p) for p, _ in groups]

  def label(path, _):
    name = path_name(path)
    for i, pattern in enumerate(patterns):
      if pattern.search(name):
        return f'group{i}'
    return 'base'

  labels = lambda params: jax.tree_util.tree_map_with_path(label, params)
  return optax.multi_transform(transforms, labels), base


def init_state(key: jax.Array, recipe, batch: PyTree,
               tx_g: optax.GradientTransformation,
               tx_d: optax.GradientTransformation | None,
               ema_decay: float) -> GanState:
  """Builds the initial state from a (global) batch; pure, jit-able.

  Args:
    key: typed PRNG key (jax.random.key(seed)).
    recipe: the model's recipe (jaxl2i.recipes.base.Recipe).
    batch: a batch (or its ShapeDtypeStructs under eval_shape).
    tx_g, tx_d: optimizers (tx_d None when the recipe has no D).
    ema_decay: 0 disables the EMA copy of G.
  """
  k_init, k_run = jax.random.split(key)
  g_vars, d_vars = recipe.init(k_init, batch)
  return state_from_variables(k_run, g_vars, d_vars, tx_g, tx_d, ema_decay)


def state_from_variables(key: jax.Array, g_vars: PyTree, d_vars: PyTree | None,
                         tx_g: optax.GradientTransformation,
                         tx_d: optax.GradientTransformation | None,
                         ema_decay: float) -> GanState:
  """A step-0 state around given G / D variables (fresh optimizer states).

  key: the typed key the training steps draw from (stored as key data).
  """
  g_params, g_state = split_variables(g_vars)
  g = Net(g_params, g_state, tx_g.init(g_params))
  d = None
  if d_vars is not None:
    d_params, d_state = split_variables(d_vars)
    d = Net(d_params, d_state, tx_d.init(d_params))
  ema = jax.tree.map(jnp.copy, g_params) if ema_decay > 0 else None
  return GanState(step=jnp.zeros((), jnp.int32),
                  key=jax.random.key_data(key), g=g, d=d, ema_g=ema)


def count_params(tree: PyTree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))

