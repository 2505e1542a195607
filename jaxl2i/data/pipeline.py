"""tf.data input pipelines: TFDS builder -> ops -> host-local batches.

The trainer calls `get_builder`, `dataset_meta`, `train_dataset` and
`eval_dataset` with the config's `data` ConfigDict:

  name            'synthetic_scenes/tiny' (dataset[/config][:version])
  data_dir        None = TFDS default (~/tensorflow_datasets)
  manual_dir      None = <data_dir>/downloads/manual (real datasets' files)
  train_split     'train'
  eval_split      'validation'
  pp_train        op strings, e.g. ('decode', 'resize(72)', 'random_crop(64)',
                  'random_flip', 'pad_objects(8)')   (see ops.py)
  pp_eval         op strings for evaluation
  shuffle_buffer  int
  max_objects     object slots after `pad_objects` (None: the dataset's max)

Batches are dicts of tf tensors with a leading host batch axis; moving them to
the devices is parallel.py's job. TensorFlow never sees an accelerator.
"""
import dataclasses
import json
import os
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i.data import builders
from jaxl2i.data import label_ops  # registers the CRN Cityscapes encoding
from jaxl2i.data import layout_ops  # registers the Visual Genome layout ops
from jaxl2i.data import ops
from jaxl2i.data.errors import DatasetUnavailableError


def _hide_accelerators_from_tf() -> None:
  """TF must not grab GPU memory that JAX needs (no-op once TF has started)."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices already initialised: nothing left to do
    logging.warning('TensorFlow was initialised before jaxl2i.data.pipeline '
                    'could hide its GPUs.')


_hide_accelerators_from_tf()

# Builders generated on the fly when not prepared (procedural, no download).
_PROCEDURAL = ('synthetic_scenes',)


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What a model needs to know about a dataset.

  Attributes:
    num_classes: size of the class vocabulary, including id 0 ('__pad__').
    class_names: the names, index = class id.
    image_size: (H, W) of the stored examples (before any resize op);
      (None, None) when their sizes vary (COCO, Visual Genome).
    ignore_label: label id of unlabeled pixels, or None if there are none.
    max_objects: object slots per example (data.max_objects if set, else the
      builder's maximum object count).
    num_examples: examples per split, e.g. {'train': 5000, 'validation': 500}.
  """
  num_classes: int
  class_names: tuple[str, ...]
  image_size: tuple[int | None, int | None]
  ignore_label: int | None
  max_objects: int
  num_examples: Mapping[str, int]


META_FILE = 'dataset_meta.json'


def save_meta(meta: DatasetMeta, workdir: str) -> None:
  """Writes `workdir/dataset_meta.json`: what generating needs without data."""
  path = epath.Path(workdir) / META_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (META_FILE + '.tmp')
  tmp.write_text(json.dumps(dataclasses.asdict(meta), indent=2))
  tmp.replace(path)


def load_meta(workdir: str) -> DatasetMeta | None:
  """The DatasetMeta saved in `workdir`, or None if there is none."""
  path = epath.Path(workdir) / META_FILE
  if not path.exists():
    return None
  d = json.loads(path.read_text())
  d['class_names'] = tuple(d['class_names'])
  d['image_size'] = tuple(d['image_size'])
  return DatasetMeta(**d)


def _base_name(name: str) -> str:
  return name.split('/')[0].split(':')[0]


def get_builder(data_cfg) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder of `data_cfg.name`.

  Procedural datasets (synthetic_scenes) are generated when missing.

  Raises:
    DatasetUnavailableError: jaxl2i has no builder for the name, or the
      dataset's files have not been prepared (real datasets need their
      official files in manual_dir; nothing is downloaded here).
  """
  builders.import_builder(data_cfg.name)  # registers it (or raises)
  data_dir = data_cfg.get('data_dir')
  builder = tfds.builder(data_cfg.name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  base = _base_name(data_cfg.name)
  if base in _PROCEDURAL:
    logging.info('Generating %s into %s (procedural, no download)...',
                 data_cfg.name, builder.data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=data_cfg.get('manual_dir'), try_download_gcs=False))
    logging.info('Generated %s in %.1f s.', data_cfg.name,
                 time.perf_counter() - start)
    return builder
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or ''
  manual = data_cfg.get('manual_dir') or os.path.join(
      data_dir or tfds.core.constants.DATA_DIR, 'downloads', 'manual')
  raise DatasetUnavailableError(
      f"dataset '{data_cfg.name}' is not prepared in {builder.data_dir}. "
      f'Fetch its official files, put them in {manual}, and build it once '
      f'with `python -m jaxl2i.data.prepare --dataset={data_cfg.name} '
      f'--manual_dir={manual}'
      + (f' --data_dir={data_dir}`' if data_dir else '`')
      + f'. {instructions}'.strip())


def dataset_meta(data_cfg) -> DatasetMeta:
  """Vocabulary, sizes and counts of the dataset (prepares it if needed)."""
  builder = get_builder(data_cfg)
  info = builder.info
  md = info.metadata or {}
  if 'classes' in info.features:
    names = tuple(info.features['classes'].feature.names)
  else:   # label-map datasets (cityscapes_maps, ade20k_maps, ...)
    names = tuple(md['class_names'])
  max_objects = data_cfg.get('max_objects')
  if max_objects is None:
    max_objects = md.get('max_objects', 0)
  h, w = info.features['image'].shape[:2]
  if h is None and md.get('image_size'):   # stored free-size, all equal
    h, w = (int(s) for s in md['image_size'])
  return DatasetMeta(
      num_classes=int(md.get('num_classes', len(names))),
      class_names=names,
      image_size=(h, w),
      ignore_label=md.get('ignore_label'),
      max_objects=int(max_objects),
      num_examples={k: v.num_examples for k, v in info.splits.items()},
  )


def _options() -> tf.data.Options:
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  return opts


def _attach_seed(base: tf.Tensor):
  """(index, example) -> example with `_seed` = fold_in(base, index)."""

  def fn(i, ex):
    seed = tf.random.experimental.stateless_fold_in(base, tf.cast(i, tf.int64))
    return {**ex, '_seed': seed}

  return fn


def _drop_seed(ex: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in ex.items() if k != '_seed'}


def train_dataset(data_cfg, *, host_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  stack: int = 1) -> tf.data.Dataset:
  """Infinite, shuffled, preprocessed batches of this host's training shard.

  Each process reads `tfds.even_splits(train_split, process_count)
  [process_index]`. Randomness (file order, shuffling, random ops) is fully
  determined by `seed` and `process_index`; random ops get the stateless seed
  fold_in([seed, process_index], running example index).

  Args:
    stack: > 1 groups `stack` consecutive batches into one element of
      leading shape [stack, host_batch_size] (the n_critic fresh batches of
      one WGAN-GP iteration); 1 gives plain batches.

  Returns:
    tf.data.Dataset of dicts with leading axis host_batch_size (remainder
    dropped; the dataset repeats forever), or [stack, host_batch_size].
  """
  builder = get_builder(data_cfg)
  split = tfds.even_splits(data_cfg.train_split, n=process_count)[
      process_index]
  ds = builder.as_dataset(
      split=split, shuffle_files=True,
      read_config=tfds.ReadConfig(shuffle_seed=seed, options=_options()))
  ds = ds.repeat()
  if data_cfg.get('shuffle_buffer'):
    ds = ds.shuffle(data_cfg.shuffle_buffer, seed=seed,
                    reshuffle_each_iteration=True)
  base = tf.constant([seed, process_index], tf.int64)
  ds = ds.enumerate().map(_attach_seed(base))
  pp = ops.build(data_cfg.pp_train)
  ds = ds.map(lambda ex: _drop_seed(pp(ex)),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(host_batch_size, drop_remainder=True)
  if stack > 1:
    ds = ds.batch(stack, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _zeros_like_spec(spec) -> Any:
  def z(s):
    if not s.shape.is_fully_defined():
      raise ValueError(
          f'eval batches need fixed shapes; got {s.shape} (add pad_objects / '
          'resize ops to pp_eval)')
    return tf.zeros(s.shape, s.dtype)

  return tf.nest.map_structure(z, spec)


def eval_dataset(data_cfg, *, host_batch_size: int, process_index: int = 0,
                 process_count: int = 1,
                 num_examples: int | None = None) -> tf.data.Dataset:
  """One pass over eval_split (or its first `num_examples`), padded batches.

  The (sliced) split is divided evenly between processes. Every batch carries
  `_mask` bool [B]: True for real examples, False for the all-zero padding
  that fills the last batch(es). Every process yields the same number of
  batches (ceil(largest shard / host_batch_size)), as multi-host evaluation
  needs. Random ops in pp_eval see a fixed per-example seed.
  """
  builder = get_builder(data_cfg)
  split = data_cfg.eval_split
  if num_examples is not None:
    split = f'{split}[:{num_examples}]'
  total = builder.info.splits[split].num_examples
  largest = -(-total // process_count)
  num_batches = -(-largest // host_batch_size)
  shard = tfds.even_splits(split, n=process_count)[process_index]
  ds = builder.as_dataset(split=shard, shuffle_files=False,
                          read_config=tfds.ReadConfig(options=_options()))
  n = builder.info.splits[shard].num_examples
  base = tf.constant([0, process_index], tf.int64)
  ds = ds.enumerate().map(_attach_seed(base))
  pp = ops.build(data_cfg.pp_eval)
  ds = ds.map(lambda ex: {**_drop_seed(pp(ex)), '_mask': tf.constant(True)},
              num_parallel_calls=tf.data.AUTOTUNE)
  pad = num_batches * host_batch_size - n
  if pad:
    zeros = {**_zeros_like_spec(ds.element_spec), '_mask': tf.constant(False)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(zeros).repeat(pad))
  ds = ds.batch(host_batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
