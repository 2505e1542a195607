r"""Latent interpolation between two label maps of an unconditional model.

  python -m jaxl2i.interpolate --workdir=runs/seg --start=a.png --end=b.png \
      [--renderer=runs/p2p] [--frames=9] [--out=DIR] [--restarts=64] \
      [--steps=100] [--lr=0.01] [--seed=0] [--step=N] [--generator=ema|live]

Inverts the two target label maps (PNG of class ids or jaxl2i palette
colours, read as jaxl2i.generate reads --label_map) into latents
(jaxl2i/inversion.py: restarts, Adam steps and rate default to the run's
`config.inversion`, the paper's 64 / 100 / 0.01), walks the straight line
between them, and writes to --out (default workdir/interpolation):

  interpolation.png   the frames left to right: label maps, rendered images
  interpolation.gif   the same frames animated (label map | image)
  inversion.json      per target: loss, best loss before optimising and the
                      pixel agreement of the inverted map with the target
Without --start/--end it interpolates between two random latents (--seed).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import numpy as np

from jaxl2i import generate
from jaxl2i import inversion
from jaxl2i import visualize
from jaxl2i.user_inputs import InputError, read_label_map

GIF_FRAME_MS = 250


def _latents(model, start, end, seed, settings) -> tuple[np.ndarray, dict]:
  """[2, z_dim] latents of the end points (inverted or random) + report."""
  key = jax.random.key(seed)
  if (start is None) != (end is None):
    raise InputError('give both --start and --end, or neither (random '
                     'latents)')
  if start is None:
    return np.asarray(model.recipe.latents(key, 2)), {'targets': 'random'}
  targets = np.stack([read_label_map(p, model.meta, model.spec)
                      for p in (start, end)])
  out = jax.device_get(inversion.invert(
      model.recipe, model.variables, targets, key, **settings))
  report = {'targets': [str(start), str(end)], **settings}
  for k in ('loss', 'initial_loss', 'agreement'):
    report[k] = [float(v) for v in out[k]]
  logging.info('inverted: pixel agreement %s, loss %s (before: %s)',
               report['agreement'], report['loss'], report['initial_loss'])
  return np.asarray(out['z']), report


def pictures(workdir: str, *, start=None, end=None, renderer: str | None = None,
             frames: int = 9, seed: int = 0, step: int | None = None,
             generator: str | None = None, **overrides) -> tuple[dict, dict]:
  """({file name: uint8 picture or list of frames}, report); see the module
  doc. overrides: restarts, steps, lr (default: config.inversion)."""
  if frames < 2:
    raise InputError(f'frames={frames} must be >= 2')
  model = generate.Model(workdir, step=step, generator=generator)
  if model.spec.kind != 'noise' or not hasattr(model.recipe, 'map_loss'):
    raise InputError(f'{workdir} is not an unconditional label-map model '
                     f'(recipe {model.config.recipe!r})')
  if model.config.model.encoding == 'image':
    raise InputError('this model generates images, not label maps: it '
                     'cannot be inverted from a label map')
  inv = model.config.inversion
  settings = {k: overrides.get(k) or inv[k] for k in ('restarts', 'steps',
                                                        'lr')}
  render = generate.Model(renderer) if renderer else None
  if render is not None:
    render.check_renders(model.meta, model.spec.size, workdir)
  model.restore()
  z, report = _latents(model, start, end, seed, settings)
  path = inversion.interpolate(z[0], z[1], frames)
  labels = np.asarray(jax.jit(lambda v, z: model.recipe.decode(
      model.recipe.g_apply(v, z)))(model.variables, path))
  rows = [visualize.colorize_labels(labels, model.meta.num_classes)]
  if render is not None:
    rows.append(visualize.to_uint8(render.render(labels, seed)))
  strip = visualize.grid([np.stack(f) for f in zip(*rows)])
  gif = [visualize.grid([r[i:i + 1] for r in rows]) for i in range(frames)]
  report.update(frames=frames, generator=model.which, step=model.step,
                renderer=renderer)
  return {'interpolation.png': strip, 'interpolation.gif': gif}, report


def run(workdir: str, out_dir: str | None = None, **kwargs) -> list[str]:
  """pictures(workdir, **kwargs), written to out_dir (workdir/interpolation)."""
  out, report = pictures(workdir, **kwargs)
  out_dir = out_dir or os.path.join(workdir, 'interpolation')
  visualize.save_png(os.path.join(out_dir, 'interpolation.png'),
                     out['interpolation.png'])
  visualize.save_gif(os.path.join(out_dir, 'interpolation.gif'),
                     out['interpolation.gif'], GIF_FRAME_MS)
  path = epath.Path(out_dir) / 'inversion.json'
  path.write_text(json.dumps(report, indent=2))
  paths = [os.path.join(out_dir, n) for n in
           ('interpolation.png', 'interpolation.gif', 'inversion.json')]
  logging.info('wrote %s', ', '.join(paths))
  return paths


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Workdir of an unconditional run.')
  flags.DEFINE_string('start', None, 'Label map PNG of the first frame.')
  flags.DEFINE_string('end', None, 'Label map PNG of the last frame.')
  flags.DEFINE_string('renderer', None, 'pix2pix/SPADE workdir rendering '
                      'the frames.')
  flags.DEFINE_integer('frames', 9, 'Frames, end points included.')
  flags.DEFINE_string('out', None, 'Output folder (workdir/interpolation).')
  flags.DEFINE_integer('restarts', None, 'Latents per target (config).')
  flags.DEFINE_integer('steps', None, 'Adam steps (config).')
  flags.DEFINE_float('lr', None, 'Adam learning rate (config).')
  flags.DEFINE_integer('seed', 0, 'Seed of the initial latents.')
  generate.define_checkpoint_flags()
  flags.mark_flags_as_required(['workdir'])


def main(argv) -> None:
  del argv
  generate.run_command(lambda f: run(
      f.workdir, f.out, start=f.start, end=f.end, renderer=f.renderer,
      frames=f.frames, seed=f.seed, step=f.step, generator=f.generator,
      restarts=f.restarts, steps=f.steps, lr=f.lr))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
