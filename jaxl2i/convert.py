r"""Imports released PyTorch generators as jaxl2i training checkpoints.

  python -m jaxl2i.convert lama --torch_checkpoint=G_128.pth \
      --config=configs/coco_lama.py:res=128 --workdir=runs/lama128_official \
      [--step=1]

Subcommands (one function per model family in `SUBCOMMANDS`):
  lama   official `ZejianLi/LAMA` `G_*.pth` (ResnetGenerator64/128/256
         state_dict, optionally with a DataParallel `module.` prefix or inside
         a wrapper dict), via jaxl2i.models.lama_import.

The run builds the config's state with `train.Setup` (fresh random D, fresh
optimizer states), puts the converted generator into g.params / g.state (and
ema_g when config.ema.decay > 0), saves it as checkpoint `--step` of
`--workdir`, restores it once to verify, and writes `config.json` (and
`dataset_meta.json` when the dataset is prepared) as the trainer does, plus
`imported_from.json` (source path and sha256).
`jaxl2i.evaluate`, `jaxl2i.main --mode=eval` and resumed training then use it
like any checkpoint. Step 0 is refused: the trainer treats a workdir whose
latest step is 0 as empty and would start from scratch.

The dataset is not needed: when it is not prepared, the dataset facts the
state depends on (the class count) come from the checkpoint, and a batch of
zeros of the training shape initialises the state. Published weight files of
the metric networks are converted with `python -m jaxl2i.nets.convert`.
Reading the .pth needs no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import config_lib

FLAGS = flags.FLAGS
PyTree = Any


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def _setup(config, num_classes: int, resolution: int):
  """(train.Setup of `config`, whether the dataset was prepared)."""
  # pylint: disable=g-import-not-at-top
  from jaxl2i import train
  from jaxl2i.data import pipeline
  from jaxl2i.data.errors import DatasetUnavailableError
  # pylint: enable=g-import-not-at-top
  try:
    meta = pipeline.dataset_meta(config.data)
  except DatasetUnavailableError as e:
    logging.warning('dataset %s is not prepared (%s): taking its class count '
                    '(%d) from the checkpoint', config.data.name,
                    str(e).split('. ')[0], num_classes)
    meta = pipeline.DatasetMeta(
        num_classes=num_classes,
        class_names=tuple(f'class_{i}' for i in range(num_classes)),
        image_size=(resolution, resolution), ignore_label=None,
        max_objects=int(config.data.get('max_objects') or 8),
        num_examples={})
    return train.Setup(config, meta), False
  if meta.num_classes != num_classes:
    raise config_lib.ConfigError(
        f'the checkpoint has {num_classes} label-embedding rows but dataset '
        f'{config.data.name} has {meta.num_classes} classes: use the config '
        'of the dataset the model was trained on')
  return train.Setup(config), True


def _zeros_batch(config, meta, resolution: int) -> dict[str, np.ndarray]:
  """A one-example batch of the training shape for initialising the state.

  The variables' shapes do not depend on the batch size or values; one
  example keeps the (compile-bound) initialisation cheap.
  """
  b, o = 1, meta.max_objects
  batch = {'image': np.zeros((b, resolution, resolution, 3), np.uint8),
           'boxes': np.zeros((b, o, 4), np.float32),
           'classes': np.zeros((b, o), np.int32),
           'objects_mask': np.zeros((b, o), bool)}
  if config.model.get('mask_source', 'generated') == 'gt':
    batch['instance'] = np.zeros((b, resolution, resolution), np.int32)
  return batch


def _check_lama_config(config, found: dict[str, Any], path: str) -> None:
  """One-line ConfigError when the config cannot hold the checkpoint."""
  from jaxl2i.models import lama  # pylint: disable=g-import-not-at-top
  m = config.model
  res = found['resolution']
  if config.recipe != 'lama' or m.get('arch', 'lama') != 'lama':
    raise config_lib.ConfigError(
        f'{path} is a LAMA generator but the config builds recipe '
        f'{config.recipe!r} / arch {m.get("arch")!r}: use a LAMA config '
        f'(e.g. configs/coco_lama.py:res={res})')
  if m.resolution != res:
    raise config_lib.ConfigError(
        f'{path} holds a ResnetGenerator{res} ({res}x{res} images) but '
        f'config.model.resolution={m.resolution}: use the {res} variant '
        f'(e.g. --config=configs/coco_lama.py:res={res})')
  if m.get('mask_source', 'generated') != 'generated':
    raise config_lib.ConfigError(
        f'{path} has a mask net but config.model.mask_source='
        f'{m.mask_source!r}: use mask_source="generated"')
  want = dict(ch=m.ch, z_dim=m.z_dim,
              embed_dim=m.embed_dim or lama.EMBED_DIM[res],
              mask_hidden=m.mask_hidden)
  diff = {k: (found[k], v) for k, v in want.items() if found[k] != v}
  if diff:
    raise config_lib.ConfigError(
        f'{path} does not fit config.model: ' + ', '.join(
            f'{k} is {a} in the checkpoint, {b} in the config'
            for k, (a, b) in diff.items()))


def _with_generator(setup, key, batch, g_variables, step):
  """The initial state of `setup` with G (and its EMA copy) replaced.

  G's own initialisation is traced but its outputs are unused, so XLA drops
  it: only D's init is compiled (half the compile time for LAMA).
  """
  from jaxl2i import state as state_lib  # pylint: disable=g-import-not-at-top
  state = setup.init_fn(key, batch)
  g_params, g_state = state_lib.split_variables(g_variables)
  if jax.tree.structure(g_params) != jax.tree.structure(state.g.params):
    raise ValueError('the recipe\'s generator variables differ from the '
                     'converted ones: the config builds another model')
  g = state_lib.Net(g_params, g_state, setup.tx_g.init(g_params))
  ema = None if state.ema_g is None else jax.tree.map(jnp.copy, g_params)
  return state.replace(g=g, ema_g=ema, step=step)


def import_lama(config, torch_checkpoint: str, workdir: str,
                step: int = 1, *, verify: bool = True) -> str:
  """Converts an official LAMA `G_*.pth` into checkpoint `step` of workdir.

  `verify` restores the written checkpoint and compares the generator.

  Returns:
    The checkpoint directory.

  Raises:
    FileNotFoundError, ValueError (file or state_dict problems), and
    config_lib.ConfigError (config/workdir that cannot hold it); every
    message is one line.
  """
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i.models import lama_import
  # pylint: enable=g-import-not-at-top
  if step < 1:
    raise config_lib.ConfigError(
        f'--step={step}: use a step >= 1 (the trainer ignores step 0)')
  logging.info('[1/5] reading %s', torch_checkpoint)
  sd = lama_import.load_state_dict(torch_checkpoint)
  found = lama_import.infer_generator_config(sd)
  logging.info('checkpoint: ResnetGenerator%d, %d classes, ch %d, z %d, '
               'embedding %d, mask net %d, mask adaption %s, %d tensors',
               found['resolution'], found['num_classes'], found['ch'],
               found['z_dim'], found['embed_dim'], found['mask_hidden'],
               found['mask_adaption'], len(sd))
  _check_lama_config(config, found, torch_checkpoint)

  logging.info('[2/5] converting to Flax variables')
  variables = lama_import.torch_to_flax_generator(
      sd, **{**found, 'mask_adaption': bool(config.model.mask_adaption)})
  g_params = variables['params']

  ckpt = checkpointing.Checkpointer(workdir, every=1,
                                    keep=config.keep_ckpts,
                                    asynchronous=False)
  try:
    if ckpt.all_steps():
      raise config_lib.ConfigError(
          f'{ckpt.directory} already holds checkpoints {ckpt.all_steps()}: '
          'import into an empty --workdir')
    logging.info('[3/5] initialising the state (random D, fresh optimizers)')
    resolved = config.copy_and_resolve_references()   # before Setup edits
    setup, have_data = _setup(config, found['num_classes'],
                              found['resolution'])
    batch = _zeros_batch(config, setup.meta, found['resolution'])
    # The state stays on one device (Setup.init would compute and save it on
    # every device of the mesh): restoring places it into the run's
    # shardings, so the checkpoint is the same for every mesh.
    state = jax.jit(functools.partial(_with_generator, setup))(
        jax.random.key(config.seed), batch, variables,
        jnp.asarray(step, jnp.int32))

    logging.info('[4/5] saving step %d in %s', step, ckpt.directory)
    ckpt.save(step, state, force=True)
    ckpt.close()
    if verify:
      logging.info('[5/5] verifying the restored checkpoint')
      ckpt = checkpointing.Checkpointer(workdir, every=1,
                                        keep=config.keep_ckpts,
                                        asynchronous=False)
      restored = ckpt.restore(setup.abstract_state(batch), step)
      same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                          restored.g.params, g_params)
      if not all(jax.tree.leaves(same)):
        raise RuntimeError('restored generator differs from the converted '
                           'one')
  finally:
    ckpt.close()
  record = dict(source=os.path.abspath(torch_checkpoint),
                sha256=_sha256(torch_checkpoint), step=step,
                generator=found, format='ZejianLi/LAMA netG.state_dict()')
  if jax.process_index() == 0:
    # What the trainer writes at the start of a run (jaxl2i.generate reads
    # them). Without the dataset the vocabulary is unknown: the meta names
    # the classes class_<id>, and layouts can give class ids.
    from jaxl2i.data import pipeline  # pylint: disable=g-import-not-at-top
    config_lib.write_json(resolved, workdir)
    pipeline.save_meta(setup.meta, workdir)
    if not have_data:
      logging.warning('class names unknown without the dataset: generate '
                      'from layouts with class ids (or build %s and copy '
                      'its dataset_meta.json here)', config.data.name)
    with open(os.path.join(workdir, 'imported_from.json'), 'w') as f:
      json.dump(record, f, indent=2)
  logging.info('imported %s as step %d of %s', torch_checkpoint, step,
               workdir)
  return ckpt.directory


# Subcommand → function(config, torch_checkpoint, workdir, step). SPADE
# (`spade`) can be added here with its own importer.
SUBCOMMANDS: dict[str, Callable[..., str]] = {'lama': import_lama}


def _define_flags() -> None:
  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags
  # pylint: enable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py[:variant]).',
      lock_config=True)
  flags.DEFINE_string('torch_checkpoint', None, 'PyTorch .pth file.')
  flags.DEFINE_string('workdir', None, 'Workdir to create the checkpoint in.')
  flags.DEFINE_integer('step', 1, 'Checkpoint step to write (>= 1).')
  flags.mark_flags_as_required(['config', 'workdir', 'torch_checkpoint'])


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(
        f'usage: python -m jaxl2i.convert {{{"|".join(SUBCOMMANDS)}}} '
        '--torch_checkpoint=... --config=... --workdir=... [--step=N]')
  from jaxl2i import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  try:
    SUBCOMMANDS[argv[1]](FLAGS.config, FLAGS.torch_checkpoint, FLAGS.workdir,
                         FLAGS.step)
  except (config_lib.ConfigError, ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
