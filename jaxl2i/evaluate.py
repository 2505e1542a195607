r"""Evaluates a checkpoint with the evaluators of its config.

  python -m jaxl2i.evaluate --config=configs/x.py --workdir=runs/x [--step=N]

Restores the latest (or --step) checkpoint of `workdir`, runs every entry of
`config.evals` (override with --config.evals.fid.num_samples=50000 etc.) and
writes `workdir/eval_<step>.json` with each number and its protocol.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program: jaxl2i.main imports evaluate() and has its
  own --config/--workdir flags."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py[:variant]).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.mark_flags_as_required(['config', 'workdir'])


def evaluate(config, workdir: str, step: int | None = None) -> str:
  """Runs config.evals on a checkpoint; returns the path of the JSON."""
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i import config_lib
  from jaxl2i import evaluators
  from jaxl2i import parallel
  from jaxl2i import train
  # pylint: enable=g-import-not-at-top
  if not config.evals:
    raise config_lib.ConfigError(
        'config.evals is empty: nothing to evaluate (add e.g. '
        "config.evals.fid = dict(type='fid', num_samples=5000))")
  ckpt_dir = epath.Path(workdir) / 'checkpoints'
  if not ckpt_dir.exists():
    raise config_lib.ConfigError(f'no checkpoint in {ckpt_dir} (no such '
                                 'directory): train first, or fix --workdir')
  setup = train.Setup(config)
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=config.keep_ckpts,
                                    asynchronous=False)
  try:
    steps = ckpt.all_steps()
    if not steps or (step is not None and step not in steps):
      raise config_lib.ConfigError(
          f'no checkpoint{"" if step is None else f" of step {step}"} in '
          f'{ckpt.directory} (available: {steps or "none"})')
    step = max(steps) if step is None else step
    batch = next(train.train_batches(config, 0))
    state = ckpt.restore(setup.abstract_state(
        parallel.to_global(batch, setup.mesh)), step)
  finally:
    ckpt.close()
  evals = evaluators.build(config, setup.recipe, setup.mesh, workdir)
  metrics, protocols = evaluators.run(evals, state, step)
  path = evaluators.write_json(workdir, step, metrics, protocols)
  logging.info('wrote %s', path)
  return path


def main(argv):
  del argv
  from jaxl2i import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  from jaxl2i.data import DatasetUnavailableError  # pylint: disable=g-import-not-at-top
  from jaxl2i.nets.weights import WeightsUnavailableError  # pylint: disable=g-import-not-at-top
  try:
    path = evaluate(FLAGS.config, FLAGS.workdir, FLAGS.step)
  except (config_lib.ConfigError, DatasetUnavailableError,
          WeightsUnavailableError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(open(path).read())


if __name__ == '__main__':
  _define_flags()
  app.run(main)
