r"""Entry point: python -m jaxl2i.main --config=configs/x.py[:variant] --workdir=DIR.

Flags only; the work happens in train.train_and_evaluate (importable from
tests and colabs). JAX settings that change numbers are set here, once.

  --mode=train   train, or resume when --workdir holds a checkpoint
  --mode=eval    run config.evals on the latest checkpoint -> eval_<step>.json
  --config.batch_size=16 --config.total_steps=500   override any config key
"""

import logging as pylogging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py[:variant]).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and images.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval'],
    'train (or resume), or eval: run config.evals on the latest checkpoint '
    '(same as python -m jaxl2i.evaluate).')
flags.mark_flags_as_required(['config', 'workdir'])


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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')   # tf.data stays on the CPU


def setup_logging_and_jax() -> None:
  """Log filter, JAX/TF settings and multi-host start; once per process."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  _configure_jax()
  from jaxl2i import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed()


def main(argv) -> None:
  del argv
  setup_logging_and_jax()
  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib
  from jaxl2i import train
  from jaxl2i.data import DatasetUnavailableError
  from jaxl2i.nets.weights import WeightsUnavailableError
  # pylint: enable=g-import-not-at-top
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      from jaxl2i import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, DatasetUnavailableError,
          WeightsUnavailableError, train.NonFiniteLossError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def run() -> None:
  app.run(main)


if __name__ == '__main__':
  run()
