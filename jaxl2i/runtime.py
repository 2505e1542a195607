"""Process-wide set-up shared by the entry points (main, evaluate).

Logging filters, the JAX settings that change numbers (set once, here), TF
kept off the accelerators, and the multi-host start.
"""

import logging as pylogging
import os

from absl import logging


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter of orbax/TFDS internals (warnings still show)."""

  NOISY = ('/orbax/', '/tensorflow_datasets/', '/absl/testing/')

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or not any(
        part in record.pathname for part in self.NOISY)


def _configure_jax() -> None:
  """Global JAX/TF settings, set once here (STYLE.md §6)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import jax  # pylint: disable=g-import-not-at-top
  # Partitionable Threefry: random numbers of a global shape are generated
  # shard-locally and do not change with the number of devices or JAX version.
  jax.config.update('jax_threefry_partitionable', True)
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:   # benchmarks / generation without the data stack
    return
  tf.config.set_visible_devices([], 'GPU')   # tf.data stays on the CPU


def setup() -> None:
  """Log filter, JAX/TF settings and multi-host start; once per process."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  _configure_jax()
  from jaxl2i import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed()
