"""Orbax checkpoints of the training state: periodic, final and on SIGTERM.

Every process calls the manager (orbax coordinates multi-host saves). Restores
go straight into the target shardings from an abstract state
(`jax.eval_shape` of the init function).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxl2i import state as state_lib

PyTree = Any


class Checkpointer:
  """A thin wrapper of ocp.CheckpointManager for GanState."""

  def __init__(self, workdir: str, *, every: int, keep: int,
               asynchronous: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.every = every
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=asynchronous))
    self._preempted = threading.Event()
    self._previous_handler = None

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, abstract_state: PyTree, step: int | None = None) -> PyTree:
    """Restores `step` (default: latest) into the abstract state's shardings."""
    step = self.latest_step if step is None else step
    logging.info('restoring checkpoint of step %d from %s', step,
                 self.directory)
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def restore_raw(self, step: int | None = None) -> PyTree:
    """Restores `step` (default: latest) as nested dicts of host arrays.

    No abstract state needed: for reading the generator of a run (or of an
    imported checkpoint) without building its dataset pipeline, on any
    number of devices (numpy targets carry no sharding, so a checkpoint of
    an 8-GPU run restores on a laptop).
    """
    step = self.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    tree = self._manager.item_metadata(step)
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Saves when `step` is a multiple of `every` (or `force`)."""
    if not force and step % self.every:
      return False
    if step in self._manager.all_steps():
      return False
    if jax.process_count() == 1:
      # One host: save host copies. The files are the same, but orbax's
      # per-array handling of a state replicated over several devices costs
      # ~9 ms a leaf on 8 (CPU-simulated) devices; a copy is one transfer.
      state = jax.device_get(state)
    saved = self._manager.save(step, args=ocp.args.StandardSave(state),
                               force=True)
    if saved:
      logging.info('checkpoint of step %d queued (%s)', step, self.directory)
    return saved

  # --- preemption --------------------------------------------------------

  def install_sigterm_handler(self) -> None:
    """On SIGTERM (TPU/cluster preemption) the loop saves and stops."""
    if threading.current_thread() is not threading.main_thread():
      return

    def handler(signum, frame):
      del signum, frame
      logging.warning('SIGTERM received: saving a checkpoint and stopping.')
      self._preempted.set()

    self._previous_handler = signal.signal(signal.SIGTERM, handler)

  def should_stop(self, step: int) -> bool:
    """True after SIGTERM or when orbax reports a multi-host preemption."""
    if self._preempted.is_set():
      return True
    return jax.process_count() > 1 and self._manager.reached_preemption(step)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None


def restore_generator(workdir: str, which: str | None = None,
                      step: int | None = None) -> tuple[PyTree, str, int]:
  """G variables {'params', **collections} of a run's checkpoint, on host.

  Args:
    workdir: the run's workdir.
    which: 'ema', 'live', or None (EMA when the checkpoint has one).
    step: the checkpoint (default: the latest).

  Returns:
    (variables as numpy arrays, which, step).

  Raises:
    ValueError (one line): no such checkpoint, or no EMA in it.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise ValueError(f'no checkpoint in {directory}: train first, or fix '
                     'the workdir')
  ckpt = Checkpointer(workdir, every=1, keep=1, asynchronous=False)
  try:
    steps = sorted(ckpt.all_steps())
    if not steps or (step is not None and step not in steps):
      raise ValueError(
          f'no checkpoint{"" if step is None else f" of step {step}"} in '
          f'{ckpt.directory} (available: {steps or "none"})')
    step = steps[-1] if step is None else step
    raw = ckpt.restore_raw(step)
  finally:
    ckpt.close()
  has_ema = raw.get('ema_g') is not None
  which = which or ('ema' if has_ema else 'live')
  if which == 'ema' and not has_ema:
    raise ValueError(f'the checkpoint of step {step} in {ckpt.directory} has '
                     'no EMA generator: use the live one')
  g = raw['g']
  params = raw['ema_g'] if which == 'ema' else g['params']
  variables = jax.device_get({'params': params, **(g['state'] or {})})
  logging.info('restored the %s generator of step %d from %s', which, step,
               ckpt.directory)
  return variables, which, step


def init_from(state, workdir: str, exclude: str = '', generator: str = 'live',
              step: int | None = None):
  """A fresh state whose G parameters come from another run, by path.

  Every G parameter whose '/'-joined path (e.g. 'g_256/conv1/kernel') does
  not match the regex `exclude` takes the value of the same path in the
  checkpoint of `workdir` (its live or EMA generator); excluded parameters
  keep their initialisation. Parameters only in the checkpoint are ignored
  (e.g. the 256p head when fine-tuning at 512p). The EMA (if any) starts as
  the new parameters; step, optimizer state and other collections stay
  fresh, as the reference's restore of trainable variables only. Reads on
  any device count (`restore_raw`).

  Args:
    state: the freshly initialised GanState (on device).
    workdir: the source run.
    exclude: regex of parameter paths not to copy ('' copies all).
    generator: 'live' or 'ema' weights of the source.
    step: the source checkpoint (None or 0: its latest).

  Raises:
    ValueError (one line): no checkpoint, or a parameter that is not
      excluded is missing from the source or has another shape.
  """
  if generator not in ('live', 'ema'):
    raise ValueError(f"init_from.generator={generator!r}: use 'live' or 'ema'")
  source, _, step = restore_generator(workdir, generator, step or None)
  flat = {state_lib.path_name(p): v for p, v in
          jax.tree_util.tree_flatten_with_path(source['params'])[0]}
  pattern = re.compile(exclude) if exclude else None
  copied, kept, bad = [], [], []

  def pick(path, leaf):
    name = state_lib.path_name(path)
    if pattern is not None and pattern.search(name):
      kept.append(name)
      return leaf
    value = flat.get(name)
    if value is None or tuple(value.shape) != tuple(leaf.shape):
      bad.append(name if value is None else
                 f'{name} {tuple(value.shape)} != {tuple(leaf.shape)}')
      return leaf
    copied.append(name)
    return jax.device_put(np.asarray(value, leaf.dtype), leaf.sharding)

  params = jax.tree_util.tree_map_with_path(pick, state.g.params)
  if bad:
    raise ValueError(
        f'init_from {workdir} (step {step}): {len(bad)} parameters are not '
        f'excluded by {exclude!r} but missing or of another shape in the '
        f'source: {", ".join(bad[:4])}{" ..." if len(bad) > 4 else ""}')
  ignored = sorted(set(flat) - set(copied) - set(kept))
  logging.info('init_from %s step %d (%s G): copied %d parameters, kept %d '
               'fresh (%s), ignored %d of the source (%s)', workdir, step,
               generator, len(copied), len(kept), exclude or '-',
               len(ignored), ', '.join(ignored[:4]))
  ema = state.ema_g
  if ema is not None:
    ema = jax.tree.map(jnp.copy, params)
  return state.replace(g=state.g.replace(params=params), ema_g=ema)

