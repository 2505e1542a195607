r"""`python -m jaxl2i.convert lama`: official LAMA / LostGAN-V1 generators.

  python -m jaxl2i.convert lama --torch_checkpoint=G_128.pth \
      --config=configs/coco_lama.py:res=128 --workdir=runs/lama128_official
  python -m jaxl2i.convert lama --torch_checkpoint=G_64.pth \
      --config=configs/coco_lostgan.py:res=64 --workdir=runs/lostgan64_official

Reads `ZejianLi/LAMA` `G_*.pth` (ResnetGenerator64/128/256 state_dict,
jaxl2i.models.lama_import) or `WillSuen/LostGANs` LostGAN-V1 generators
(ResnetGenerator64/128 of model/resnet_generator_v1.py,
jaxl2i.models.lostgan_v1_import); which of the two a file holds, and its
resolution and widths, come from its keys and shapes, and the config must
build that generator (arch 'lama' or 'lostgan_v1', same resolution and
widths; the error names the config to use). Saves it, with a fresh random D,
as a training checkpoint (jaxl2i.convert).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from jaxl2i import config_lib
from jaxl2i import convert


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


_CONFIGS = {'lama': ('a LAMA', 'configs/coco_lama.py'),
            'lostgan_v1': ('a LostGAN-V1', 'configs/coco_lostgan.py')}


def _check_config(config, arch: str, found: dict[str, Any],
                  path: str) -> None:
  """One-line ConfigError when the config cannot hold the checkpoint."""
  # pylint: disable=g-import-not-at-top
  from jaxl2i.models import lama
  from jaxl2i.models import lostgan_v1
  # pylint: enable=g-import-not-at-top
  m = config.model
  res = found['resolution']
  kind, config_file = _CONFIGS[arch]
  if config.recipe != 'lama' or m.get('arch', 'lama') != arch:
    raise config_lib.ConfigError(
        f'{path} is {kind} generator but the config builds recipe '
        f'{config.recipe!r} / arch {m.get("arch")!r}: use {kind} config '
        f'(e.g. {config_file}:res={res})')
  if m.resolution != res:
    raise config_lib.ConfigError(
        f'{path} holds {kind} ResnetGenerator{res} ({res}x{res} images) but '
        f'config.model.resolution={m.resolution}: use the {res} variant '
        f'(e.g. --config={config_file}:res={res})')
  if m.get('mask_source', 'generated') != 'generated':
    raise config_lib.ConfigError(
        f'{path} has a mask net but config.model.mask_source='
        f'{m.mask_source!r}: use mask_source="generated"')
  embed = (lama if arch == 'lama' else lostgan_v1).EMBED_DIM[res]
  want = dict(ch=m.ch, z_dim=m.z_dim, embed_dim=m.embed_dim or embed,
              mask_hidden=m.mask_hidden)
  diff = {k: (found[k], v) for k, v in want.items() if found[k] != v}
  if diff:
    raise config_lib.ConfigError(
        f'{path} does not fit config.model: ' + ', '.join(
            f'{k} is {a} in the checkpoint, {b} in the config'
            for k, (a, b) in diff.items()))


def import_lama(config, torch_checkpoint: str, workdir: str,
                step: int = 1, *, verify: bool = True) -> str:
  """Converts an official LAMA or LostGAN-V1 generator file into checkpoint
  `step` of workdir.

  `verify` restores the written checkpoint and compares the generator.

  Returns:
    The checkpoint directory.

  Raises:
    FileNotFoundError, ValueError (file or state_dict problems), and
    config_lib.ConfigError (config/workdir that cannot hold it); every
    message is one line.
  """
  # pylint: disable=g-import-not-at-top
  from jaxl2i.models import lama_import
  from jaxl2i.models import lostgan_v1_import
  # pylint: enable=g-import-not-at-top
  convert.check_step(step)
  logging.info('[1/5] reading %s', torch_checkpoint)
  sd = lama_import.load_state_dict(torch_checkpoint)
  arch = lostgan_v1_import.architecture(sd)
  if arch == 'lostgan_v1':
    found = lostgan_v1_import.infer_generator_config(sd)
    logging.info('checkpoint: LostGAN-V1 ResnetGenerator%d, %d classes, ch '
                 '%d, z %d, embedding %d, mask net %d, %d tensors',
                 found['resolution'], found['num_classes'], found['ch'],
                 found['z_dim'], found['embed_dim'], found['mask_hidden'],
                 len(sd))
  else:
    found = lama_import.infer_generator_config(sd)
    logging.info('checkpoint: LAMA ResnetGenerator%d, %d classes, ch %d, z '
                 '%d, embedding %d, mask net %d, mask adaption %s, %d '
                 'tensors', found['resolution'], found['num_classes'],
                 found['ch'], found['z_dim'], found['embed_dim'],
                 found['mask_hidden'], found['mask_adaption'], len(sd))
  _check_config(config, arch, found, torch_checkpoint)

  logging.info('[2/5] converting to Flax variables')
  if arch == 'lostgan_v1':
    variables = lostgan_v1_import.torch_to_flax_generator(sd, **found)
    source = 'WillSuen/LostGANs LostGAN-V1 netG.state_dict()'
  else:
    variables = lama_import.torch_to_flax_generator(
        sd, **{**found, 'mask_adaption': bool(config.model.mask_adaption)})
    source = 'ZejianLi/LAMA netG.state_dict()'
  res, n = found['resolution'], found['num_classes']
  directory = convert.save_imported(
      config, workdir, step,
      setup_fn=lambda: convert.setup_for_import(
          config, n, (res, res), f'{n} label-embedding rows'),
      batch_fn=lambda meta: _zeros_batch(config, meta, res),
      g_variables=variables, d_variables=None, verify=verify,
      record=dict(source=os.path.abspath(torch_checkpoint),
                  sha256=convert.sha256(torch_checkpoint),
                  generator={'arch': arch, **found}, format=source))
  logging.info('imported %s as step %d of %s', torch_checkpoint, step,
               workdir)
  return directory
