"""Test setup: CPU only, 8 simulated devices, fast compiles.

This runs before any test module imports JAX, so the flags take effect for the
whole session.
"""
import os
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA:CPU's legacy fusion emitter compiles with half the CPU time of the
# default MLIR fusion emitters (LAMA's tiny train step: 22.7 s against
# 38.7 s of CPU, same metrics, same step time), and the suite is
# compile-bound. Subprocesses that tests start inherit these flags and append
# their own device count (the last occurrence of a flag wins).
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') +
    ' --xla_cpu_use_fusion_emitters=false'
    ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# One persistent XLA compilation cache for the session's workers and the
# subprocesses they start: the tiny steps and the Inception are compiled once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'jaxl2i_test_xla_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
# Unit tests are compile-bound on CPU: skip most XLA optimisation passes, in
# this process and in the subprocesses tests start (CLI runs, multi-host
# workers). Tests that run big networks on real-size inputs turn them back
# on (the `xla_optimized` fixture).
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
# No test touches the network or the user's weight cache.
os.environ['JAXL2I_OFFLINE'] = '1'
os.environ['JAXL2I_CACHE'] = tempfile.mkdtemp(prefix='jaxl2i_test_cache_')

# torchvision (parity extra) must be imported before TensorFlow: the other
# order segfaults in triton's extension import (torch 2.14 CUDA wheels +
# tensorflow-cpu 2.21), whichever test file pytest collects first.
try:
  import torchvision  # pylint: disable=g-import-not-at-top,unused-import
except ImportError:
  pass
import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update('jax_threefry_partitionable', True)
jax.config.update('jax_default_matmul_precision', 'highest')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared')


@pytest.fixture
def xla_optimized():
  """XLA's optimisations on for one test: the FID Inception's forward pass on
  24 299×299 images runs 3× faster optimised (7 s against 21 s on 2 cores)
  than the 6 s it adds to the compile."""
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', True)


@pytest.fixture(scope='session')
def shared_dir():
  """../shared beside the checkout (real COCO-Stuff samples, references)."""
  if not os.path.isdir(SHARED):
    pytest.fail(f'{SHARED} is missing: tests expect ../shared beside the repo.')
  return SHARED


# The longest tests (subprocess runs, Inception evaluations, 2048-d sqrtm)
# go first, so that `pytest -n 2` spreads them over both workers instead of
# leaving one of them to finish alone.
SLOW_FIRST = ('test_main.py::test_train_writes_everything',
              'test_train_step.py::test_one_step[synthetic_lama.py]',
              'test_lama_import.py::test_cli_import',
              'test_generate.py::',
              'test_fid_parity.py::test_fid_end_to_end',
              'test_colabs.py::', 'test_multihost.py::',
              'test_evaluators.py::test_fid_of_a_perfect',
              'test_evaluators.py::test_scene_fid_of_a_perfect',
              'test_train_loop.py::')


def pytest_collection_modifyitems(config, items):
  del config

  def rank(item):   # position in SLOW_FIRST; the rest keep their order
    return next((i for i, s in enumerate(SLOW_FIRST) if s in item.nodeid),
                len(SLOW_FIRST))

  items.sort(key=rank)
