r"""Entry point: python -m jaxl2i.main --config=configs/x.py[:variant] --workdir=DIR.

Flags only; the work happens in train.train_and_evaluate (importable from
tests and colabs); process-wide JAX settings are in runtime.py.

  --mode=train   train, or resume when --workdir holds a checkpoint
  --mode=eval    run config.evals on the latest checkpoint -> eval_<step>.json
  --config.batch_size=16 --config.total_steps=500   override any config key
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxl2i import runtime

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


def main(argv) -> None:
  del argv
  runtime.setup()
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
