"""Device mesh, shardings, global batches and multi-host start-up.

Data parallelism only: the state is replicated and batches are split along the
mesh's 'data' axis. Under `jax.jit` over such global arrays, means and
BatchNorm statistics are over the global batch ("sync BN") with no pmean.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

PyTree = Any


def maybe_initialize_distributed() -> None:
  """Calls jax.distributed.initialize() on multi-host runs.

  Cloud TPU pod slices and SLURM jobs of several tasks are detected (JAX
  reads their environment); elsewhere set
  JAXL2I_COORDINATOR (host:port), JAXL2I_NUM_PROCESSES and JAXL2I_PROCESS_ID
  (launch/ scripts do).
  """
  if os.environ.get('JAXL2I_COORDINATOR'):
    jax.distributed.initialize(
        coordinator_address=os.environ['JAXL2I_COORDINATOR'],
        num_processes=int(os.environ['JAXL2I_NUM_PROCESSES']),
        process_id=int(os.environ['JAXL2I_PROCESS_ID']))
  elif (os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') >= 1 or
        int(os.environ.get('SLURM_NTASKS', '1')) > 1):
    jax.distributed.initialize()   # JAX reads the pod / SLURM environment
  logging.info('process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  """A 1-D 'data' mesh over every device of every host."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """Batch sharding: the batch axis on 'data'.

  stacked: batches of recipes with n_critic > 1 are [n_critic, B, ...]; the
    leading axis is replicated and B (axis 1) is split, P(None, 'data').
  """
  return NamedSharding(mesh, P(None, 'data') if stacked else P('data'))


def host_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f'batch size {global_batch_size} does not split over '
                     f'{jax.process_count()} processes')
  return global_batch_size // jax.process_count()


def to_global(host_batch: dict[str, np.ndarray], mesh: Mesh,
              stacked: bool = False) -> PyTree:
  """Host-local numpy batch -> global jax.Arrays sharded on 'data'.

  Each process passes its own rows; the global batch is their concatenation
  in process order (the JAX training cookbook's recipe). With `stacked` the
  rows are axis 1 of [n_critic, B_host, ...] arrays (see `data_sharded`).
  """
  sharding = data_sharded(mesh, stacked)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      host_batch)


def to_host(tree: PyTree) -> PyTree:
  """Fully replicated or addressable arrays -> numpy on this host."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)
