r"""`python -m jaxl2i.convert spade`: official SPADE models as checkpoints.

  python -m jaxl2i.convert spade --netG=checkpoints/coco/latest_net_G.pth \
      [--netD=checkpoints/coco/latest_net_D.pth] \
      [--netE=checkpoints/coco/latest_net_E.pth] \
      --config=configs/coco_spade.py --workdir=runs/coco_spade_official

Reads `NVlabs/SPADE` `latest_net_{G,D,E}.pth` with jaxl2i.models.spade_import
and saves them as a training checkpoint of the config's SPADE recipe
(jaxl2i.convert): G from netG (with --use_vae models the recipe's G also holds
the image encoder, from netE; without netE it keeps a random encoder, which
still samples from z ~ N(0, I) but cannot encode style images); D from netD,
or a fresh random D without it.

The config must build the checkpoint's model: ngf, spade_hidden, use_vae,
z_dim, output (3 channels: 'image', 1: depth stage 1), ndf / n_layers_d /
num_d of D, the encoder's layers / input size, and an input of semantic_nc =
classes (+ 1 instance-edge channel with model.edges, + 1 depth channel)
channels; SPADE's dontcare label is an ordinary class of jaxl2i's label-map
datasets. 'normal' and 'more' upsampling have the same weights: the config
decides (with a VAE its image size must give the checkpoint's latent grid).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from absl import logging
import numpy as np

from jaxl2i import config_lib
from jaxl2i import convert

_SIZE_OPS = ('resize', 'random_crop', 'center_crop')


def image_size(config) -> tuple[int, int]:
  """(H, W) of the training examples: the last resize/crop of pp_train."""
  from jaxl2i.data import ops  # pylint: disable=g-import-not-at-top
  size = None
  for spec in config.data.pp_train:
    name, args, kwargs = ops.parse(spec)
    if name in _SIZE_OPS:
      h = kwargs.get('size', args[0] if args else None)
      w = kwargs.get('width', args[1] if len(args) > 1 else None)
      size = (int(h), int(h if w is None else w))
  if size is None:
    raise config_lib.ConfigError(
        'config.data.pp_train has no resize/random_crop/center_crop op: '
        'cannot tell the image size the generator is trained for')
  return size


def _zeros_batch(config, size: tuple[int, int]) -> dict[str, np.ndarray]:
  """A one-example label-map batch of the training shape (for init only)."""
  m, (h, w) = config.model, size
  batch = {'image': np.zeros((1, h, w, 3), np.uint8),
           'label': np.zeros((1, h, w), np.int32)}
  if m.edges:
    batch['edges'] = np.zeros((1, h, w), np.uint8)
  if m.depth_input or m.output == 'depth':
    batch['depth'] = np.zeros((1, h, w), np.float32)
  return batch


def _raise_diff(path: str, diff: dict[str, tuple[Any, Any]]) -> None:
  if diff:
    raise config_lib.ConfigError(
        f'{path} does not fit config.model: ' + ', '.join(
            f'{k} is {a} in the checkpoint, {b} in the config'
            for k, (a, b) in diff.items()))


def _check_config(config, paths: dict[str, str], g: dict[str, Any],
                  d: Optional[dict[str, Any]],
                  e: Optional[dict[str, Any]]) -> None:
  """One-line ConfigError (or ValueError) when the config cannot hold them."""
  m, path = config.model, paths['netG']
  if config.recipe != 'spade':
    raise config_lib.ConfigError(
        f'{path} is a SPADE generator but the config builds recipe '
        f'{config.recipe!r}: use a SPADE config (e.g. configs/coco_spade.py)')
  if not g['spectral'] or g['param_free_norm'] != 'batch':
    raise config_lib.ConfigError(
        f'{path} has spectral={g["spectral"]}, param-free norm '
        f'{g["param_free_norm"]!r}: the recipe builds norm_G='
        'spectralspadesyncbatch3x3 only')
  out = {3: 'image', 1: 'depth'}.get(g['out_channels'], g['out_channels'])
  diff = {k: (g[k], m[k]) for k in ('ngf', 'spade_hidden', 'use_vae')
          if g[k] != m[k]}
  if out != m.output:
    diff['output'] = (out, m.output)
  if g['use_vae'] and m.use_vae and g['z_dim'] != m.z_dim:
    diff['z_dim'] = (g['z_dim'], m.z_dim)
  if (g['num_upsampling_layers'] == 'most') != (
      m.num_upsampling_layers == 'most'):
    diff['num_upsampling_layers'] = (g['num_upsampling_layers'],
                                     m.num_upsampling_layers)
  _raise_diff(path, diff)
  if d is not None:
    _raise_diff(paths['netD'], {
        k: (d[n], m[k]) for n, k in (('ndf', 'ndf'), ('n_layers', 'n_layers_d'),
                                     ('num_d', 'num_d')) if d[n] != m[k]})
    if d['in_channels'] != g['semantic_nc'] + g['out_channels']:
      raise ValueError(
          f'{paths["netD"]} takes {d["in_channels"]} input channels, netG '
          f'{g["semantic_nc"]} + {g["out_channels"]}: files of two models')
  if e is not None:
    if not m.use_vae:
      raise config_lib.ConfigError(
          f'--netE={paths["netE"]} but config.model.use_vae is False')
    _raise_diff(paths['netE'], {
        k: (e[n], m[k]) for n, k in (
            ('ndf', 'ngf'), ('num_layers', 'encoder_layers'),
            ('input_size', 'encoder_size'), ('z_dim', 'z_dim'))
        if e[n] != m[k]})


def import_spade(config, net_g: str, workdir: str, step: int = 1, *,
                 net_d: Optional[str] = None, net_e: Optional[str] = None,
                 verify: bool = True) -> str:
  """Converts official SPADE `latest_net_*.pth` into checkpoint `step`.

  Args:
    config: a SPADE config building the checkpoint's model.
    net_g, net_d, net_e: the files --netG, --netD, --netE (D and E
      optional, see the module doc).
    workdir: an empty (or new) run directory.
    step: the checkpoint step (>= 1).
    verify: restore the written checkpoint and compare G (and D).

  Returns:
    The checkpoint directory.

  Raises:
    FileNotFoundError, ValueError (file or state_dict problems), and
    config_lib.ConfigError (config/workdir that cannot hold them); every
    message is one line.
  """
  from jaxl2i.models import spade_import  # pylint: disable=g-import-not-at-top
  convert.check_step(step)
  paths = {k: v for k, v in (('netG', net_g), ('netD', net_d), ('netE', net_e))
           if v}
  logging.info('[1/5] reading %s', ', '.join(paths.values()))
  sds = {k: spade_import.load_state_dict(v, k[-1]) for k, v in paths.items()}
  g = spade_import.infer_generator_config(sds['netG'])
  d = spade_import.infer_discriminator_config(sds['netD']) if net_d else None
  e = spade_import.infer_encoder_config(sds['netE']) if net_e else None
  logging.info('checkpoint: G %s; D %s; E %s', g, d, e)
  _check_config(config, paths, g, d, e)
  m = config.model
  extra = int(bool(m.edges)) + int(bool(m.depth_input))
  num_classes = g['semantic_nc'] - extra
  if num_classes < 1:
    raise config_lib.ConfigError(
        f'{net_g} takes {g["semantic_nc"]} input channels, fewer than the '
        f'{extra} non-class channels of the config (edges, depth)')
  size = image_size(config)

  logging.info('[2/5] converting to Flax variables')
  g_vars = spade_import.torch_to_flax_generator(
      sds['netG'], image_size=size,
      **{**g, 'num_upsampling_layers': m.num_upsampling_layers})
  if m.use_vae:
    if not net_e:
      logging.warning('no --netE: the VAE encoder keeps its random '
                      'initialisation (sampling from z ~ N(0, I) works, '
                      'encoding style images does not)')
    g_vars = spade_import.vae_generator_variables(
        g_vars, spade_import.torch_to_flax_encoder(sds['netE'], **e)
        if net_e else {})
  d_vars = (spade_import.torch_to_flax_discriminator(sds['netD'], **d)
            if net_d else None)
  found = (f'{g["semantic_nc"]} input channels (= {num_classes} classes'
           + ' + instance edges' * bool(m.edges)
           + ' + depth' * bool(m.depth_input) + ')')
  directory = convert.save_imported(
      config, workdir, step,
      setup_fn=lambda: convert.setup_for_import(config, num_classes, size,
                                                found),
      batch_fn=lambda meta: _zeros_batch(config, size),
      g_variables=g_vars, d_variables=d_vars, verify=verify,
      record=dict(
          files={k: dict(source=os.path.abspath(v), sha256=convert.sha256(v))
                 for k, v in paths.items()},
          generator=g, discriminator=d, encoder=e,
          format='NVlabs/SPADE net{G,D,E}.state_dict()'))
  logging.info('imported %s as step %d of %s', ', '.join(paths.values()),
               step, workdir)
  return directory
