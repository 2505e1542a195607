r"""Images from a trained run for a user layout (JSON) or label map (PNG).

  python -m jaxl2i.generate --workdir=runs/coco_lama --layout=layout.json \
      --out=samples/ [--num_samples=5] [--seed=0] [--step=N] \
      [--generator=ema|live] [--masks]
  python -m jaxl2i.generate --workdir=runs/synthetic_pix2pix \
      --label_map=map.png --out=samples/

Reads `workdir/config.json` and `workdir/dataset_meta.json` (both written by
the trainer; without the meta file the dataset is opened for its vocabulary)
and the latest (or --step) checkpoint. The generator is the EMA copy when the
run has one, else the live weights (--generator overrides).

Layout JSON, one layout or several:

  {"objects": [{"class": "car", "box": [0.1, 0.5, 0.4, 0.8]}, ...]}
  {"layouts": [{"objects": [...]}, {"objects": [...]}]}   (or a bare list)

`class` is a name of the dataset's vocabulary or an integer id (0 is the
padding class and is refused); `box` is [x0, y0, x1, y1] normalised to
[0, 1] (x right, y down), x0 < x1, y0 < y1. At most the model's object
slots (config.data.max_objects). Models whose eval pipeline appends the
`__image__` object (Visual Genome, `add_image_object`) get it appended here
too, taking one slot; users never list it.

Label map PNG: single-channel class ids (8-bit L or palette, or 16-bit), or
an RGB picture in jaxl2i's class palette (the colours of labelmap_input.png
and the training grids; other colours are refused). It is resized with
nearest (PyTorch's index rule, as the data ops) to the size the model was
evaluated at, if it has that aspect ratio (else an error); ids must be
< num_classes or the ignore label. Models with SPADE's instance-edge channel
take the edges of --instance_map (instance-id PNG) or, without it, of the
label map's class boundaries. SPADE VAE models take --style=image (z from
its encoding; default z ~ N(0, I)). Depth-aware SPADE stage 2 writes the
stage-1 depth beside each image (labels → depth → image).

Outputs (uint8 PNG): layout{i:03d}_sample{k:02d}.png, layout{i:03d}_boxes.png
and, with --masks, layout{i:03d}_sample{k:02d}_masks.png / _raw_masks.png;
for a label map labelmap_sample{k:02d}.png (depth-SPADE stage 2 also
labelmap_sample{k:02d}_depth.png) and labelmap_input.png. Sample k
of layout i uses the key fold_in(fold_in(key(seed), i), k): the same seed
gives the same files. Every input is validated before anything is generated
and files are written only after all generation succeeded; bad input stops
with one line (`error: ...`, exit status 2).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import two_stage
from jaxl2i import visualize
from jaxl2i.data import pipeline
from jaxl2i.recipes import base
from jaxl2i.recipes import lama
# Re-exported: the input checks are part of this module's API.
from jaxl2i.user_inputs import (  # pylint: disable=unused-import
    InputError, LabelMapError, LayoutError, Spec, instance_edges, model_spec,
    parse_layouts, read_instance_map, read_label_map, read_layouts,
    read_style)

CHUNK = 8            # samples per jitted call (vmapped over keys)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config of a run, from `workdir/config.json`."""
  return config_lib.read_json(workdir)


def load_meta(workdir: str, config) -> pipeline.DatasetMeta:
  """dataset_meta.json of the run; without it, the dataset's own metadata."""
  meta = pipeline.load_meta(workdir)
  if meta is None:
    logging.warning('no %s in %s: reading the dataset for its vocabulary',
                    pipeline.META_FILE, workdir)
    meta = pipeline.dataset_meta(config.data)
  return meta


class Model(two_stage.TwoStageMethods):
  """A run's recipe and generator: validates inputs, samples, draws.

  The checkpoint is read on the first sampling, after the inputs passed
  validation; compiled samplers are kept, so a colab can call `pictures`
  again without recompiling.
  """

  def __init__(self, workdir: str, *, step: int | None = None,
               generator: str | None = None):
    if generator not in (None, 'ema', 'live'):
      raise config_lib.ConfigError(
          f"generator {generator!r}: use 'ema' or 'live'")
    self.workdir, self.step, self.which = workdir, step, generator
    self.config = load_config(workdir)
    self.meta = load_meta(workdir, self.config)
    self.spec = model_spec(self.config, self.meta)
    self.recipe = base.get_recipe(self.config, self.meta)
    if self.recipe.unconditional:
      self.spec = dataclasses.replace(self.spec, kind='noise')
    self.variables = None
    self._fns = {}

  def restore(self) -> None:
    """Reads the generator of the checkpoint (once)."""
    if self.variables is not None:
      return
    try:
      variables, self.which, self.step = checkpointing.restore_generator(
          self.workdir, self.which, self.step)
    except ValueError as e:
      message = str(e)
      if 'no EMA generator' in message:
        message = (f'{message} (config.ema.decay={self.config.ema.decay}): '
                   'use --generator=live')
      raise config_lib.ConfigError(message) from e
    self.variables = jax.device_put(variables)

  def inputs(self, layouts=None, label_map=None, instance_map=None,
             style=None) -> dict[str, np.ndarray]:
    """Validated inputs as a batch (one example per layout)."""
    if self.spec.kind == 'noise':
      if any(x is not None for x in (layouts, label_map, instance_map,
                                     style)):
        raise InputError(f'this model (recipe {self.config.recipe!r}) '
                         'generates from noise: it takes no layout, label '
                         'map, instance map or style (use --num)')
      return {}
    if (layouts is None) == (label_map is None):
      raise InputError('give exactly one of a layout file or a label map')
    given = 'layout' if layouts is not None else 'label_map'
    if given != self.spec.kind:
      flag = ('--layout=FILE.json' if self.spec.kind == 'layout' else
              '--label_map=FILE.png')
      raise InputError(
          f'this model (recipe {self.config.recipe!r}) generates from '
          f'{self.spec.kind.replace("_", " ")}s: pass {flag}')
    if given == 'layout':
      if instance_map is not None or style is not None:
        raise InputError('--instance_map and --style go with --label_map')
      return parse_layouts(read_layouts(layouts), self.meta, self.spec)
    label = read_label_map(label_map, self.meta, self.spec)
    batch = {'label': label[None]}
    if self.spec.edges:
      # SPADE's instance-edge channel: from the instance map when given,
      # else from the class boundaries of the label map.
      ids = (label if instance_map is None else
             read_instance_map(instance_map, self.spec))
      batch['edges'] = instance_edges(ids)[None]
    elif instance_map is not None:
      raise InputError('this model takes no instance map (no edge channel)')
    if style is not None:
      if not self.config.model.get('use_vae'):
        raise InputError('--style needs a model with the VAE encoder '
                         '(config.model.use_vae)')
      batch['style'] = read_style(style, self.spec)[None]
    return batch

  def _fn(self, with_masks: bool):
    """jit(vmap over keys) of the recipe's eval-mode sampling."""
    if with_masks not in self._fns:
      recipe = self.recipe

      def one(variables, batch, key):
        if with_masks:
          out = recipe.sample_outputs(variables, batch, key)
          return tuple(x[0] for x in out)
        if self.spec.kind == 'label_map':   # e.g. depth-SPADE: depth, image
          return tuple(x[0] for x in recipe.grid_samples(variables, batch,
                                                          key))
        return (recipe.sample(variables, batch, key)[0],)

      self._fns[with_masks] = jax.jit(jax.vmap(one, in_axes=(None, None, 0)))
    return self._fns[with_masks]

  def sample(self, example: dict[str, np.ndarray], index: int,
             num_samples: int, seed: int,
             with_masks: bool = False) -> tuple[np.ndarray, ...]:
    """Samples k = 0..num_samples-1 of one example (leading axis 1).

    Returns:
      (images float32 [K,H,W,3] in [-1,1],) and with `with_masks` also
      (adapted, raw) float32 [K,O,H,W].
    """
    if with_masks and (self.spec.kind != 'layout' or
                       not hasattr(self.recipe, 'sample_outputs')):
      raise config_lib.ConfigError(
          f'recipe {self.config.recipe!r} does not produce object masks')
    self.restore()
    root = jax.random.fold_in(jax.random.key(seed), index)
    chunk = min(num_samples, CHUNK)
    total = -(-num_samples // chunk) * chunk
    keys = jax.vmap(lambda k: jax.random.fold_in(root, k))(
        np.arange(total, dtype=np.uint32))
    fn = self._fn(with_masks)
    example = {k: v for k, v in example.items() if k != 'user_mask'}
    parts = [jax.device_get(fn(self.variables, example, keys[s:s + chunk]))
             for s in range(0, total, chunk)]
    return tuple(np.concatenate(p)[:num_samples] for p in zip(*parts))

  def pictures(self, *, layouts=None, label_map=None, instance_map=None,
               style=None, num_samples: int = 1, seed: int = 0,
               with_masks: bool = False,
               renderer: 'Model | None' = None) -> dict[str, np.ndarray]:
    """File name -> uint8 [H,W,3] picture; see `generate`."""
    if num_samples < 1:
      raise InputError(f'num_samples={num_samples} must be >= 1')
    batch = self.inputs(layouts, label_map, instance_map, style)
    if self.spec.kind == 'noise':
      if with_masks:
        raise InputError('object masks (--masks) come from layout models '
                         'only')
      return self.noise_pictures(num_samples, seed, renderer)
    if renderer is not None:
      raise InputError('--renderer renders the label maps of an '
                       'unconditional label-map model (seg_gan); this model '
                       f'(recipe {self.config.recipe!r}) renders images '
                       'itself')
    if with_masks and label_map is not None:
      raise InputError('object masks (--masks) come from layout models only')
    nc, out = self.meta.num_classes, {}
    for i in range(len(next(iter(batch.values())))):
      example = {k: v[i:i + 1] for k, v in batch.items()}
      samples = self.sample(example, i, num_samples, seed, with_masks)
      images = visualize.to_uint8(samples[0])
      if num_samples > 1 and all(np.array_equal(images[0], x)
                                 for x in images):
        logging.warning('the %d samples of input %d are identical: this '
                        "model's sampling is deterministic", num_samples, i)
      if label_map is not None:
        out['labelmap_input.png'] = visualize.colorize_labels(
            example['label'][0], nc)
        suffixes = self.recipe.grid_column_names()
        by_column = {}
        for suffix, column in zip(suffixes, samples):
          for k, im in enumerate(visualize.to_uint8(column)):
            by_column[f'labelmap_sample{k:02d}{suffix}.png'] = im
        out.update(sorted(by_column.items()))
        continue
      user = example['user_mask']
      out[f'layout{i:03d}_boxes.png'] = visualize.draw_boxes(
          example['boxes'], example['classes'], user, images.shape[1:3],
          nc)[0]
      for k, im in enumerate(images):
        name = f'layout{i:03d}_sample{k:02d}'
        out[f'{name}.png'] = im
        for suffix, m in zip(('masks', 'raw_masks'), samples[1:]):
          pic = lama.colorize_masks(m[k][None], example['classes'], user, nc)
          out[f'{name}_{suffix}.png'] = visualize.to_uint8(
              np.asarray(pic)[0])
    logging.info('generated %d pictures with the %s generator of step %d',
                 len(out), self.which, self.step)
    return out


# --- API -------------------------------------------------------------------


def generate(workdir: str, *, layouts=None, label_map=None,
             instance_map=None, style=None, num_samples: int = 1,
             seed: int = 0, step: int | None = None,
             generator: str | None = None, with_masks: bool = False,
             renderer: str | None = None) -> dict[str, np.ndarray]:
  """Samples of a run for user layouts or a label map, or from noise.

  Args:
    workdir: the training workdir (config.json, checkpoints/).
    layouts: a layout JSON file path, or its parsed value (module doc).
    label_map: a PNG path (class ids, or RGB colours of jaxl2i's palette),
      or an int array [H, W] of class ids.
    instance_map: instance-id PNG for models with SPADE's edge channel
      (default: edges of the label map's class boundaries).
    style: style image PNG/JPEG for SPADE's VAE encoder (default: z ~ N(0,1)).
    num_samples: samples per layout (different latents).
    seed: sample k of layout i uses fold_in(fold_in(key(seed), i), k).
    step: checkpoint step (default: the latest).
    generator: 'ema' or 'live' (default: 'ema' when the run keeps one).
    with_masks: also the colourised object masks (layout models).
    renderer: unconditional label-map models (seg_gan): the workdir of a
      pix2pix/SPADE run of the same vocabulary and size that renders the
      sampled maps (its EMA generator when it keeps one).

  Returns:
    file name -> uint8 [H,W,3] picture, in output order. Inputs are
    validated before the checkpoint is read.
  """
  model = Model(workdir, step=step, generator=generator)
  return model.pictures(layouts=layouts, label_map=label_map,
                        instance_map=instance_map, style=style,
                        num_samples=num_samples, seed=seed,
                        with_masks=with_masks,
                        renderer=Model(renderer) if renderer else None)


def write(pictures: dict[str, np.ndarray], out_dir: str) -> list[str]:
  """Writes the pictures as PNG into out_dir (each atomically)."""
  paths = []
  for name, picture in pictures.items():
    path = os.path.join(out_dir, name)
    visualize.save_png(path, picture)
    logging.info('wrote %s', path)
    paths.append(path)
  logging.info('wrote %d files to %s', len(paths), out_dir)
  return paths


def run(workdir: str, out_dir: str | None = None, **kwargs) -> list[str]:
  """generate(workdir, **kwargs), then write (default: workdir/generated)."""
  pictures = generate(workdir, **kwargs)
  return write(pictures, out_dir or os.path.join(workdir, 'generated'))


# --- command line ------------------------------------------------------------


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir.')
  flags.DEFINE_string('layout', None, 'Layout JSON file (layout models).')
  flags.DEFINE_string('label_map', None, 'Label-map PNG: class ids, or RGB '
                      "in jaxl2i's palette.")
  flags.DEFINE_string('instance_map', None, 'Instance-id PNG (SPADE edges).')
  flags.DEFINE_string('style', None, 'Style image (SPADE VAE models).')
  flags.DEFINE_string('out', None, 'Output folder (default workdir/generated).')
  flags.DEFINE_integer('num_samples', 1, 'Samples per layout, or of an '
                       'unconditional model (alias --num).')
  flags.DEFINE_alias('num', 'num_samples')
  flags.DEFINE_string('renderer', None, 'Unconditional label-map models: '
                      'the pix2pix/SPADE workdir rendering the samples.')
  flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
  define_checkpoint_flags()
  flags.DEFINE_bool('masks', False, 'Also write the object masks (LAMA).')
  flags.mark_flags_as_required(['workdir'])


def define_checkpoint_flags() -> None:
  """--step and --generator (shared with jaxl2i.interpolate)."""
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_enum('generator', None, ['ema', 'live'],
                    'Weights (default: ema when the run keeps an EMA).')


def run_command(fn) -> None:
  """Sets up the runtime and calls fn(flags.FLAGS); bad input stops with
  one line (`error: ...`, exit status 2)."""
  from jaxl2i import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  from jaxl2i import data  # pylint: disable=g-import-not-at-top
  try:
    fn(flags.FLAGS)
  except (InputError, config_lib.ConfigError,
          data.DatasetUnavailableError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def main(argv) -> None:
  del argv
  run_command(lambda f: run(
      f.workdir, f.out, layouts=f.layout, label_map=f.label_map,
      instance_map=f.instance_map, style=f.style, num_samples=f.num_samples,
      seed=f.seed, step=f.step, generator=f.generator, with_masks=f.masks,
      renderer=f.renderer))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
