"""THE training loop, shared by every model.

`train_and_evaluate(config, workdir)` builds the recipe, the data pipeline,
the state (fresh or restored), jits the one step, and runs it with summaries,
image grids, evaluations and checkpoints. Models never copy this loop: what
differs between them lives in jaxl2i/recipes/.
"""

from __future__ import annotations

import math
import os
from typing import Any

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import evaluators
from jaxl2i import parallel
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i import visualize
from jaxl2i.data import pipeline
from jaxl2i.recipes import base

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN/inf; the run stopped without saving the bad state."""


def _optimizers(config, recipe, steps_per_epoch):
  tx_g, sched_g = state_lib.make_optimizer(config, 'g', steps_per_epoch)
  tx_d, sched_d = (state_lib.make_optimizer(config, 'd', steps_per_epoch)
                   if recipe.d is not None else (None, None))
  return tx_g, tx_d, {'g/lr': sched_g, 'd/lr': sched_d}


def train_batches(config, start_step: int, stack: int = 1):
  """Host batches; the data seed is folded with the step after a resume.

  stack: the recipe's n_critic; > 1 yields [stack, B_host, ...] batches (a
  fresh real batch for every critic update of a step).
  """
  seed = int(np.random.SeedSequence([config.seed, start_step]).generate_state(1)[0])
  ds = pipeline.train_dataset(
      config.data, host_batch_size=parallel.host_batch_size(config.batch_size),
      seed=seed, process_index=jax.process_index(),
      process_count=jax.process_count(), stack=stack)
  return ds.as_numpy_iterator()


def _grid_batch(config, mesh) -> dict[str, np.ndarray]:
  """A fixed batch of the eval split for image grids (host part)."""
  n = config.num_grid_samples
  n = math.ceil(n / jax.device_count()) * jax.device_count()
  ds = pipeline.eval_dataset(
      config.data, host_batch_size=n // jax.process_count(),
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_examples=n)
  host = next(ds.as_numpy_iterator())
  host.pop('_mask', None)
  return host, parallel.to_global(host, mesh)


class _Grids:
  """Writes input | EMA G | live G | real grids to TensorBoard and PNG."""

  def __init__(self, config, recipe, mesh, writer, workdir):
    self.recipe, self.writer = recipe, writer
    self.n = config.num_grid_samples
    self.dir = os.path.join(workdir, 'images')
    self.host, self.batch = _grid_batch(config, mesh)
    self.key = jax.random.key(config.seed + 1)   # fixed: comparable over time
    self.sample = jax.jit(recipe.grid_samples)

  def __call__(self, step: int, state: state_lib.GanState) -> None:
    g = state.g
    inputs = self.recipe.grid_inputs(self.host)   # None: unconditional
    columns = [] if inputs is None else [('input', inputs)]
    generators = [('live', {'params': g.params, **g.state})]
    if state.ema_g is not None:
      generators.insert(0, ('ema', {'params': state.ema_g, **g.state}))
    for which, variables in generators:
      images = self.sample(variables, self.batch, self.key)
      columns += [(f'{which}{suffix}', im) for suffix, im in
                  zip(self.recipe.grid_column_names(), images)]
    columns.append(('real', self.recipe.grid_real(self.host)))
    columns = [(name, parallel.to_host(c)[:self.n]) for name, c in columns]
    picture = visualize.grid([c for _, c in columns])
    if jax.process_index() == 0:
      self.writer.write_images(step, {'samples': picture[None]})
      visualize.save_png(f'{self.dir}/step_{step:07d}.png', picture)
      logging.info('wrote image grid of step %d (columns: %s)', step,
                   ' | '.join(name for name, _ in columns))


def is_d_only(step: int, steps_per_epoch: int, d_only_steps: int) -> bool:
  """Whether 1-based `step` is one of the first `d_only_steps` iterations of
  its epoch (LAMA/LostGAN train.py: G is stepped only when idx > 30)."""
  return (step - 1) % steps_per_epoch < d_only_steps


def _mean_metrics(pending: list[PyTree]) -> dict[str, float]:
  values = jax.device_get(pending)
  return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


def _check_finite(metrics: dict[str, float], first: int, last: int,
                  ckpt: checkpointing.Checkpointer) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
        f'non-finite metrics between steps {first} and {last}: {bad}. The '
        f'last good checkpoint is step {ckpt.latest_step} in '
        f'{ckpt.directory}; lower the learning rates or check the data.')


class Setup:
  """Mesh, recipe, optimizers and state initialisation for a config.

  Shared by the training loop and jaxl2i.evaluate, so both restore the same
  state structure.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               meta: pipeline.DatasetMeta | None = None):
    """meta: the dataset's facts; None reads them from the dataset."""
    self.config = config
    self.mesh = parallel.make_mesh()
    config_lib.validate(config, jax.device_count())
    self.meta = meta or pipeline.dataset_meta(config.data)
    self.recipe = base.get_recipe(config, self.meta)
    # A step of an n_critic recipe reads n_critic batches.
    split = config.data.train_split.split('[')[0]
    self.steps_per_epoch = config_lib.resolve_epochs(
        config, self.meta.num_examples.get(split, 0) // self.recipe.n_critic)
    self.tx_g, self.tx_d, self.schedules = _optimizers(
        config, self.recipe, self.steps_per_epoch)
    self.rep = parallel.replicated(self.mesh)
    self.dat = parallel.data_sharded(self.mesh)

  @property
  def stacked(self) -> bool:
    """Training batches are [n_critic, B, ...] (see parallel.data_sharded)."""
    return self.recipe.n_critic > 1

  def init_fn(self, key: jax.Array, batch: PyTree) -> state_lib.GanState:
    """batch: one [B, ...] batch of the training shape (not stacked)."""
    return state_lib.init_state(key, self.recipe, batch, self.tx_g, self.tx_d,
                                self.config.ema.decay)

  def init(self, batch: PyTree) -> state_lib.GanState:
    """A fresh state: initialised, the recipe's `after_init`, then the G
    parameters of `config.init_from` (if its workdir is set)."""
    state = jax.jit(self.init_fn, out_shardings=self.rep)(
        jax.random.key(self.config.seed), batch)
    state = self.recipe.after_init(state)
    source = self.config.get('init_from')
    if source is None or not source.workdir:
      return state
    try:
      return checkpointing.init_from(state, **source.to_dict())
    except ValueError as e:
      raise config_lib.ConfigError(str(e)) from e

  def abstract_state(self, batch: PyTree) -> PyTree:
    """ShapeDtypeStructs (replicated) of the state, for restoring."""
    abstract = jax.eval_shape(self.init_fn, jax.random.key(self.config.seed),
                              batch)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.rep),
        abstract)


def _save_on_interrupt(ckpt, state, step, pending, first_pending) -> None:
  try:
    if int(state.step) != step:   # interrupted inside the step: nothing new
      return
    if pending:
      _check_finite(_mean_metrics(pending), first_pending, step, ckpt)
    ckpt.save(step, state, force=True)
  except (RuntimeError, ValueError, NonFiniteLossError) as e:
    logging.error('could not save on interrupt: %s', e)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains (or resumes) the model of `config` in `workdir`.

  Returns:
    The last logged metrics (host floats).
  """
  setup = Setup(config)
  mesh, recipe, rep = setup.mesh, setup.recipe, setup.rep
  tx_g, tx_d = setup.tx_g, setup.tx_d
  if jax.process_index() == 0:
    config_lib.write_json(config, workdir)
    pipeline.save_meta(setup.meta, workdir)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)

  ckpt = checkpointing.Checkpointer(workdir, every=config.ckpt_every,
                                    keep=config.keep_ckpts)
  start_step = ckpt.latest_step or 0
  stacked = setup.stacked
  batches = train_batches(config, start_step, recipe.n_critic)
  host = next(batches)
  first_batch = parallel.to_global(host, mesh, stacked)
  example = (parallel.to_global(jax.tree.map(lambda x: x[0], host), mesh)
             if stacked else first_batch)   # one [B, ...] batch for init
  if start_step:
    state = ckpt.restore(setup.abstract_state(example))
    logging.info('resumed from step %d', start_step)
  else:
    state = setup.init(example)
  if jax.process_index() == 0:
    parameter_overview.log_parameter_overview(state.g.params, msg='G params')
    if state.d is not None:
      parameter_overview.log_parameter_overview(state.d.params, msg='D params')
  evals = evaluators.build(config, recipe, mesh, workdir)

  frozen = jax.device_put(recipe.frozen_params(), rep)
  make_step = lambda update_g: jax.jit(
      step_lib.make_train_step(recipe, tx_g, tx_d, config.ema.decay,
                               config.ema.start, update_g=update_g,
                               unroll_critic=config.optim.get(
                                   'unroll_critic', True)),
      in_shardings=(rep, parallel.data_sharded(mesh, stacked), rep),
      out_shardings=(rep, rep),
      donate_argnums=0)
  full_step = make_step(True)
  d_only_step = make_step(False) if config.optim.d_only_steps else None
  spe = setup.steps_per_epoch
  grids = _Grids(config, recipe, mesh, writer, workdir)
  progress = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer,
      every_secs=None, every_steps=config.log_every)

  ckpt.install_sigterm_handler()
  pending, first_pending = [], start_step + 1
  last_metrics: dict[str, float] = {}
  step = start_step
  try:
    batch = first_batch
    for step in range(start_step + 1, config.total_steps + 1):
      if batch is None:
        batch = parallel.to_global(next(batches), mesh, stacked)
      d_only = d_only_step is not None and is_d_only(
          step, spe, config.optim.d_only_steps)
      with jax.transfer_guard('disallow'):
        state, metrics = (d_only_step if d_only else full_step)(
            state, batch, frozen)
      batch = None
      pending.append(metrics)
      progress(step)
      stop = ckpt.should_stop(step)
      at_ckpt = step % config.ckpt_every == 0
      if (step % config.log_every == 0 or at_ckpt or stop
          or step == config.total_steps):
        last_metrics = _mean_metrics(pending)
        _check_finite(last_metrics, first_pending, step, ckpt)
        last_metrics.update({k: float(s(step - 1))
                             for k, s in setup.schedules.items()
                             if s is not None})
        writer.write_scalars(step, last_metrics)
        pending, first_pending = [], step + 1
      # Saved (asynchronously) before the grids and evaluations of the step,
      # so that a SIGTERM or crash during a long evaluation loses nothing.
      ckpt.save(step, state, force=stop or step == config.total_steps)
      if step % config.image_every == 0 or step == config.total_steps:
        grids(step, state)
      due = {n: e for n, e in evals.items() if step % e.every == 0 or
             (e.at_end and step == config.total_steps)}
      if due:
        eval_metrics, protocols = evaluators.run(due, state, step)
        writer.write_scalars(step, eval_metrics)
        evaluators.write_json(workdir, step, eval_metrics, protocols)
      if stop:
        logging.warning('stopped at step %d after a preemption signal', step)
        break
    ckpt.save(step, state, force=True)   # the final state (no-op if saved)
  except KeyboardInterrupt:
    logging.warning('interrupted at step %d: saving a checkpoint', step)
    _save_on_interrupt(ckpt, state, step, pending, first_pending)
    raise
  finally:
    ckpt.close()
    writer.flush()
  logging.info('done at step %d: %s', step, last_metrics)
  return last_metrics
