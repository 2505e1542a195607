"""Two processes on 127.0.0.1 (jax.distributed, CPU collectives) == one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from jaxl2i import parallel

import multihost_common

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  port, out = _free_port(), str(tmp_path / 'metrics.json')
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [os.path.dirname(HERE), HERE, env.get('PYTHONPATH', '')])
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(port),
       str(pid), out], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for pid in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=400)[0].decode(errors='replace'))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  two = json.load(open(out))

  # The same two steps in this one process over its 8 devices.
  s = multihost_common.setup(parallel.make_mesh())
  state = s.init(parallel.to_global(multihost_common.global_batch(s, 0),
                                    s.mesh))
  for i in range(1, 3):
    state, metrics = s.step(state, parallel.to_global(
        multihost_common.global_batch(s, i), s.mesh), s.frozen)
  metrics = jax.device_get(metrics)
  for k, v in two['metrics'].items():
    np.testing.assert_allclose(v, float(metrics[k]), rtol=1e-4, atol=1e-6,
                               err_msg=k)
  g0 = np.asarray(jax.device_get(jax.tree.leaves(state.g.params)[0]))
  np.testing.assert_allclose(two['g0'], g0.ravel()[:64], rtol=1e-4, atol=1e-6)
