"""One process of the 2-process test (tests/test_multihost.py).

Usage: python multihost_worker.py PORT PROCESS_ID OUT_JSON
Each process owns 4 CPU devices; together they form the 8-device 'data' mesh
and run the tiny pix2pix step on the same global batches as the 1-process
test, each feeding its own half of every batch.
"""

import json
import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
# conftest's flags, but 4 devices (the last occurrence of a flag wins).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.config.update('jax_threefry_partitionable', True)
jax.config.update('jax_default_matmul_precision', 'highest')
jax.config.update('jax_disable_most_optimizations', True)


def main():
  port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=pid)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxl2i import parallel  # pylint: disable=g-import-not-at-top
  import multihost_common  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == 8 and jax.local_device_count() == 4
  setup = multihost_common.setup(parallel.make_mesh())
  half = setup.config.batch_size // 2

  def local(i):   # this process's rows of global batch i
    full = multihost_common.global_batch(setup, i)
    return {k: v[pid * half:(pid + 1) * half] for k, v in full.items()}

  state = setup.init(parallel.to_global(local(0), setup.mesh))
  for i in range(1, 3):
    state, metrics = setup.step(state, parallel.to_global(local(i), setup.mesh),
                                setup.frozen)
  metrics = parallel.to_host(metrics)
  g0 = parallel.to_host(jax.tree.leaves(state.g.params)[0])
  if pid == 0:
    with open(out, 'w') as f:
      json.dump({'metrics': {k: float(v) for k, v in metrics.items()},
                 'g0': np.asarray(g0, np.float64).ravel()[:64].tolist()}, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
