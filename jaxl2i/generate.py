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

Label map PNG: single-channel class ids (8-bit L or palette, or 16-bit),
resized with nearest (PyTorch's index rule, as the data ops) to the size
the model was evaluated at; ids must be < num_classes or the ignore label.

Outputs (uint8 PNG): layout{i:03d}_sample{k:02d}.png, layout{i:03d}_boxes.png
and, with --masks, layout{i:03d}_sample{k:02d}_masks.png / _raw_masks.png;
for a label map labelmap_sample{k:02d}.png and labelmap_input.png. Sample k
of layout i uses the key fold_in(fold_in(key(seed), i), k): the same seed
gives the same files. Every input is validated before anything is generated
and files are written only after all generation succeeded; bad input stops
with one line (`error: ...`, exit status 2).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import visualize
from jaxl2i.data import pipeline
from jaxl2i.recipes import base
from jaxl2i.recipes import lama
# Re-exported: the input checks are part of this module's API.
from jaxl2i.user_inputs import (  # pylint: disable=unused-import
    InputError, LabelMapError, LayoutError, Spec, model_spec, parse_layouts,
    read_label_map, read_layouts)

CHUNK = 8            # samples per jitted call (vmapped over keys)


def _tuples(x):
  """JSON lists back to the tuples configs use."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config of a run, from `workdir/config.json`."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise config_lib.ConfigError(
        f'no config.json in {workdir}: not a training workdir (the trainer '
        'writes it at the start of a run)')
  return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))


def load_meta(workdir: str, config) -> pipeline.DatasetMeta:
  """dataset_meta.json of the run; without it, the dataset's own metadata."""
  meta = pipeline.load_meta(workdir)
  if meta is None:
    logging.warning('no %s in %s: reading the dataset for its vocabulary',
                    pipeline.META_FILE, workdir)
    meta = pipeline.dataset_meta(config.data)
  return meta


class Model:
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
    self.variables = None
    self._fns = {}

  def restore(self) -> None:
    """Reads the generator of the checkpoint (once)."""
    if self.variables is not None:
      return
    ckpt_dir = epath.Path(self.workdir) / 'checkpoints'
    if not ckpt_dir.exists():
      raise config_lib.ConfigError(f'no checkpoint in {ckpt_dir}: train '
                                   'first, or fix --workdir')
    ckpt = checkpointing.Checkpointer(self.workdir, every=1, keep=1,
                                      asynchronous=False)
    try:
      steps, step = sorted(ckpt.all_steps()), self.step
      if not steps or (step is not None and step not in steps):
        raise config_lib.ConfigError(
            f'no checkpoint{"" if step is None else f" of step {step}"} in '
            f'{ckpt.directory} (available: {steps or "none"})')
      self.step = steps[-1] if step is None else step
      raw = ckpt.restore_raw(self.step)
    finally:
      ckpt.close()
    has_ema = raw.get('ema_g') is not None
    self.which = self.which or ('ema' if has_ema else 'live')
    if self.which == 'ema' and not has_ema:
      raise config_lib.ConfigError(
          f'the checkpoint of step {self.step} has no EMA generator '
          f'(config.ema.decay={self.config.ema.decay}): use --generator=live')
    g = raw['g']
    params = raw['ema_g'] if self.which == 'ema' else g['params']
    self.variables = jax.device_put(
        jax.device_get({'params': params, **(g['state'] or {})}))
    logging.info('restored the %s generator of step %d from %s', self.which,
                 self.step, ckpt.directory)

  def inputs(self, layouts=None, label_map=None) -> dict[str, np.ndarray]:
    """Validated inputs as a batch (one example per layout)."""
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
      return parse_layouts(read_layouts(layouts), self.meta, self.spec)
    return {'label': read_label_map(label_map, self.meta, self.spec)[None]}

  def _fn(self, with_masks: bool):
    """jit(vmap over keys) of the recipe's eval-mode sampling."""
    if with_masks not in self._fns:
      recipe = self.recipe

      def one(variables, batch, key):
        if with_masks:
          out = recipe.sample_outputs(variables, batch, key)
          return tuple(x[0] for x in out)
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
    if with_masks and not hasattr(self.recipe, 'sample_outputs'):
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

  def pictures(self, *, layouts=None, label_map=None, num_samples: int = 1,
               seed: int = 0,
               with_masks: bool = False) -> dict[str, np.ndarray]:
    """File name -> uint8 [H,W,3] picture; see `generate`."""
    if num_samples < 1:
      raise InputError(f'num_samples={num_samples} must be >= 1')
    batch = self.inputs(layouts, label_map)
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
        out.update({f'labelmap_sample{k:02d}.png': im
                    for k, im in enumerate(images)})
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
             num_samples: int = 1, seed: int = 0, step: int | None = None,
             generator: str | None = None,
             with_masks: bool = False) -> dict[str, np.ndarray]:
  """Samples of a run for user layouts or a label map.

  Args:
    workdir: the training workdir (config.json, checkpoints/).
    layouts: a layout JSON file path, or its parsed value (module doc).
    label_map: a PNG path, or an int array [H, W] of class ids.
    num_samples: samples per layout (different latents).
    seed: sample k of layout i uses fold_in(fold_in(key(seed), i), k).
    step: checkpoint step (default: the latest).
    generator: 'ema' or 'live' (default: 'ema' when the run keeps one).
    with_masks: also the colourised object masks (layout models).

  Returns:
    file name -> uint8 [H,W,3] picture, in output order. Inputs are
    validated before the checkpoint is read.
  """
  model = Model(workdir, step=step, generator=generator)
  return model.pictures(layouts=layouts, label_map=label_map,
                        num_samples=num_samples, seed=seed,
                        with_masks=with_masks)


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
  flags.DEFINE_string('label_map', None, 'Label-map PNG of class ids.')
  flags.DEFINE_string('out', None, 'Output folder (default workdir/generated).')
  flags.DEFINE_integer('num_samples', 1, 'Samples per layout.')
  flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_enum('generator', None, ['ema', 'live'],
                    'Weights (default: ema when the run keeps an EMA).')
  flags.DEFINE_bool('masks', False, 'Also write the object masks (LAMA).')
  flags.mark_flags_as_required(['workdir'])


def main(argv) -> None:
  del argv
  from jaxl2i import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  from jaxl2i import data  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  try:
    run(f.workdir, f.out, layouts=f.layout, label_map=f.label_map,
        num_samples=f.num_samples, seed=f.seed, step=f.step,
        generator=f.generator, with_masks=f.masks)
  except (InputError, config_lib.ConfigError,
          data.DatasetUnavailableError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
