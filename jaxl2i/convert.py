r"""Imports released PyTorch models as jaxl2i training checkpoints.

  python -m jaxl2i.convert lama --torch_checkpoint=G_128.pth \
      --config=configs/coco_lama.py:res=128 --workdir=runs/lama128_official \
      [--step=1]
  python -m jaxl2i.convert lama --torch_checkpoint=G_64.pth \
      --config=configs/coco_lostgan.py:res=64 --workdir=runs/lostgan64_official
  python -m jaxl2i.convert spade --netG=latest_net_G.pth \
      [--netD=latest_net_D.pth] [--netE=latest_net_E.pth] \
      --config=configs/coco_spade.py --workdir=runs/coco_spade_official

Subcommands (`SUBCOMMANDS`; the model-specific parts are in their files):
  lama   official `ZejianLi/LAMA` `G_*.pth` (ResnetGenerator64/128/256
         state_dict) or `WillSuen/LostGANs` LostGAN-V1 generators
         (ResnetGenerator64/128 of resnet_generator_v1.py; told apart by
         their keys, imported into a configs/coco_lostgan.py config) →
         jaxl2i.convert_lama;
  spade  official `NVlabs/SPADE` `latest_net_G.pth` (+ `latest_net_D.pth`,
         + `latest_net_E.pth` of --use_vae models) → jaxl2i.convert_spade.
Files may carry a DataParallel `module.` prefix or sit inside a wrapper dict.

The run builds the config's state with `train.Setup` (fresh optimizer
states, a fresh random D unless the file provides one), puts the converted
networks into it (G also into ema_g when config.ema.decay > 0), saves it as
checkpoint `--step` of `--workdir`, restores it once to verify, and writes
`config.json` (and `dataset_meta.json`) as the trainer does, plus
`imported_from.json` (source paths and sha256). `jaxl2i.evaluate`,
`jaxl2i.generate`, `jaxl2i.main --mode=eval` and resumed training then use it
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
from typing import Any, Callable, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import config_lib

FLAGS = flags.FLAGS
PyTree = Any


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def check_step(step: int) -> None:
  if step < 1:
    raise config_lib.ConfigError(
        f'--step={step}: use a step >= 1 (the trainer ignores step 0)')


def setup_for_import(config, num_classes: int, image_size: tuple[int, int],
                     found: str):
  """(train.Setup of `config`, whether the dataset was prepared).

  Without the dataset, its class count is the checkpoint's `num_classes`
  (`found` says where it comes from, e.g. '13 label-embedding rows').
  """
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
        image_size=tuple(image_size), ignore_label=None,
        max_objects=int(config.data.get('max_objects') or 8),
        num_examples={})
    return train.Setup(config, meta), False
  if meta.num_classes != num_classes:
    raise config_lib.ConfigError(
        f'the checkpoint has {found} but dataset {config.data.name} has '
        f'{meta.num_classes} classes: use the config of the dataset the model '
        'was trained on')
  return train.Setup(config), True


def _replace(name: str, init: PyTree, converted: Optional[PyTree]) -> PyTree:
  """`init` variables with the parts that `converted` provides.

  Per collection, the converted top-level entries replace the initial ones;
  entries it lacks (a VAE encoder without its file, the frozen 'stage1'
  collection) keep their initial values. Shapes must agree.
  """
  if converted is None:
    return init
  out = dict(init)
  for col, tree in converted.items():
    if col not in init:
      raise ValueError(f'the converted {name} has a collection {col!r} that '
                       'the config\'s model lacks: the config builds another '
                       'model')
    out[col] = {**init[col], **tree}
  kept = [f'{c}/{k}' for c, t in init.items() for k in t
          if k not in converted.get(c, {})]
  if kept:
    logging.info('%s: kept the initial values of %s', name, kept)
  for path, (a, b) in _paired(init, out):
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(f'converted {name} variable {path} has shape '
                       f'{jnp.shape(b)}, the config\'s model {jnp.shape(a)}')
  return out


def _paired(a: PyTree, b: PyTree):
  """[(path, (leaf of a, leaf of b))]; ValueError if the trees differ."""
  fa = jax.tree_util.tree_flatten_with_path(a)[0]
  fb = jax.tree_util.tree_flatten_with_path(b)[0]
  if [p for p, _ in fa] != [p for p, _ in fb]:
    extra = {jax.tree_util.keystr(p) for p, _ in fa} ^ {
        jax.tree_util.keystr(p) for p, _ in fb}
    raise ValueError('the converted variables differ from the recipe\'s (the '
                     f'config builds another model): {sorted(extra)[:6]}')
  return [(jax.tree_util.keystr(p), (x, y)) for (p, x), (_, y) in zip(fa, fb)]


def _with_networks(setup, key, batch, g_variables, d_variables, step):
  """The initial state of `setup` with G (+ its EMA copy) and D replaced.

  Initialisations whose outputs are replaced are traced but unused, so XLA
  drops them.
  """
  from jaxl2i import state as state_lib  # pylint: disable=g-import-not-at-top
  state = setup.init_fn(key, batch)
  g_params, g_state = state_lib.split_variables(_replace(
      'generator', {'params': state.g.params, **state.g.state}, g_variables))
  g = state_lib.Net(g_params, g_state, setup.tx_g.init(g_params))
  ema = None if state.ema_g is None else jax.tree.map(jnp.copy, g_params)
  d = state.d
  if d_variables is not None:
    d_params, d_state = state_lib.split_variables(_replace(
        'discriminator', {'params': d.params, **d.state}, d_variables))
    d = state_lib.Net(d_params, d_state, setup.tx_d.init(d_params))
  return state.replace(g=g, d=d, ema_g=ema, step=step)


def save_imported(config, workdir: str, step: int, *,
                  setup_fn: Callable[[], tuple[Any, bool]],
                  batch_fn: Callable[[Any], dict[str, np.ndarray]],
                  g_variables: PyTree, d_variables: Optional[PyTree],
                  record: dict[str, Any], verify: bool = True) -> str:
  """Steps 3-5 of an import: state, checkpoint `step`, verification, files.

  Args:
    setup_fn: () -> (train.Setup, dataset prepared?) (`setup_for_import`).
    batch_fn: meta -> a one-example numpy batch of the training shape.
    g_variables, d_variables: converted variables (D None: random init).
    record: written as imported_from.json.

  Returns:
    The checkpoint directory.
  """
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i.data import pipeline
  # pylint: enable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=config.keep_ckpts,
                                    asynchronous=False)
  try:
    if ckpt.all_steps():
      raise config_lib.ConfigError(
          f'{ckpt.directory} already holds checkpoints {ckpt.all_steps()}: '
          'import into an empty --workdir')
    logging.info('[3/5] initialising the state (fresh optimizers%s)',
                 '' if d_variables is not None else ', random D')
    resolved = config.copy_and_resolve_references()   # before Setup edits
    setup, have_data = setup_fn()
    batch = batch_fn(setup.meta)
    # The state stays on one device (Setup.init would compute and save it on
    # every device of the mesh): restoring places it into the run's
    # shardings, so the checkpoint is the same for every mesh.
    state = jax.jit(functools.partial(_with_networks, setup))(
        jax.random.key(config.seed), batch, g_variables, d_variables,
        jnp.asarray(step, jnp.int32))
    state = setup.recipe.after_init(state)
    logging.info('[4/5] saving step %d in %s', step, ckpt.directory)
    ckpt.save(step, state, force=True)
    ckpt.close()
    if verify:
      logging.info('[5/5] verifying the restored checkpoint')
      ckpt = checkpointing.Checkpointer(workdir, every=1,
                                        keep=config.keep_ckpts,
                                        asynchronous=False)
      restored = ckpt.restore(setup.abstract_state(batch), step)
      pairs = _paired(state.g.params, restored.g.params)
      if d_variables is not None:
        pairs += _paired(state.d.params, restored.d.params)
      if not all(np.array_equal(a, b) for _, (a, b) in pairs):
        raise RuntimeError('the restored networks differ from the converted '
                           'ones')
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    # What the trainer writes at the start of a run (jaxl2i.generate reads
    # them). Without the dataset the vocabulary is unknown: the meta names
    # the classes class_<id>.
    config_lib.write_json(resolved, workdir)
    pipeline.save_meta(setup.meta, workdir)
    if not have_data:
      logging.warning('class names unknown without the dataset: generate '
                      'with class ids (or build %s and copy its '
                      'dataset_meta.json here)', config.data.name)
    with open(os.path.join(workdir, 'imported_from.json'), 'w') as f:
      json.dump({**record, 'step': step}, f, indent=2)
  return ckpt.directory


def import_lama(*args, **kwargs) -> str:
  """`jaxl2i.convert_lama.import_lama` (kept importable from here)."""
  from jaxl2i import convert_lama  # pylint: disable=g-import-not-at-top
  return convert_lama.import_lama(*args, **kwargs)


def import_spade(*args, **kwargs) -> str:
  """`jaxl2i.convert_spade.import_spade` (kept importable from here)."""
  from jaxl2i import convert_spade  # pylint: disable=g-import-not-at-top
  return convert_spade.import_spade(*args, **kwargs)


def _required(name: str, command: str) -> str:
  value = getattr(FLAGS, name)
  if not value:
    raise app.UsageError(f'{command} needs --{name}')
  return value


def _run_lama(config, workdir: str, step: int) -> str:
  return import_lama(config, _required('torch_checkpoint', 'lama'), workdir,
                     step)


def _run_spade(config, workdir: str, step: int) -> str:
  return import_spade(config, _required('netG', 'spade'), workdir, step,
                      net_d=FLAGS.netD, net_e=FLAGS.netE)


# Subcommand → function(config, workdir, step) reading its file flags.
SUBCOMMANDS: dict[str, Callable[..., str]] = {
    'lama': _run_lama, 'spade': _run_spade}


def _define_flags() -> None:
  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags
  # pylint: enable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py[:variant]).',
      lock_config=True)
  flags.DEFINE_string('torch_checkpoint', None, 'lama: the G_*.pth file '
                      '(LAMA or LostGAN-V1 generator).')
  flags.DEFINE_string('netG', None, 'spade: latest_net_G.pth.')
  flags.DEFINE_string('netD', None, 'spade: latest_net_D.pth (optional; '
                      'random D without it).')
  flags.DEFINE_string('netE', None, 'spade: latest_net_E.pth of a VAE model '
                      '(optional; random encoder without it).')
  flags.DEFINE_string('workdir', None, 'Workdir to create the checkpoint in.')
  flags.DEFINE_integer('step', 1, 'Checkpoint step to write (>= 1).')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(
        f'usage: python -m jaxl2i.convert {{{"|".join(SUBCOMMANDS)}}} '
        '(lama: --torch_checkpoint=...; spade: --netG=... [--netD=...] '
        '[--netE=...]) --config=... --workdir=... [--step=N]')
  from jaxl2i import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  try:
    SUBCOMMANDS[argv[1]](FLAGS.config, FLAGS.workdir, FLAGS.step)
  except (config_lib.ConfigError, ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
