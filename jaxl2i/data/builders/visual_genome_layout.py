"""`visual_genome_layout`: Visual Genome layouts with sg2im's preprocessing.

Built from the OFFICIAL Visual Genome 1.4 files and sg2im's split file in
`manual_dir` (nothing is downloaded):

  <manual_dir>/image_data.json           image_data.json.zip
  <manual_dir>/objects.json              objects.json.zip
  <manual_dir>/relationships.json        relationships.json.zip
  <manual_dir>/object_alias.txt          object_alias.txt
  <manual_dir>/relationship_alias.txt    relationship_alias.txt
  <manual_dir>/vg_splits.json            google/sg2im sg2im/data/vg_splits.json
  <manual_dir>/VG_100K/*.jpg             images.zip
  <manual_dir>/VG_100K_2/*.jpg           images2.zip

The preprocessing is sg2im's `scripts/preprocess_vg.py` as LAMA ships it
(defaults), done here deterministically:
  1. images whose smaller side (image_data.json) is < 200 px are removed
     from every split;
  2. object vocabulary: aliased names counted once per object over the
     training images; names with >= 2000 counts, most frequent first (ties:
     first seen, names of one object in list order; the reference's order of
     ties depends on Python's string hashing), after '__image__' = 0;
  3. an object takes the first of its aliased names that is in the
     vocabulary; objects without one, or with w < 32 or h < 32 px, are
     removed;
  4. predicate vocabulary: predicates (lower-cased, stripped, aliased) of
     training relationships between kept objects, kept if counted >= 500;
  5. an image is kept if it has 3..30 kept objects and 1..30 relationships
     whose predicate is in the vocabulary and whose ends are kept objects of
     the image. As in the reference, predicates are normalised only for the
     training relationships counted in step 4; the others are looked up
     as written in relationships.json (a quirk of the reference we keep).
attributes.json is read by the reference only for attribute vocabularies
that no stored field depends on, so it is not needed. The reference reports
62,565 train / 5,506 val / 5,088 test images (sg2im; the LAMA paper quotes
5,062 validation images) and 179 classes on the full files.

Objects are stored in the order the reference loader draws from: objects
that take part in a kept relationship first, then the others ("orphans"),
each group in the image's object order. `num_in_relations` says where the
first group ends. The loader then takes a random 10 of the related objects
if there are more than 9, else all of them plus random orphans up to 9, and
appends an `__image__` object (class 0, box (0,0,1,1)): in jaxl2i that is
the ops `sg2im_select_objects(10)` and `add_image_object` of
jaxl2i/data/layout_ops.py followed by `pad_objects(11)`. A plain
`pad_objects(10)` keeps the first 10 objects (related ones first) instead.

Stored features (VG has no masks: no `label` / `instance`):
  image     the original image file (JPEG bytes; non-RGB/grey converted to
            RGB PNG), its own size.
  boxes     float32 [O,4] normalised (x/W, y/H, (x+w)/W, (y+h)/H), W, H =
            image file size; not clipped (VG boxes may leave the image, as
            in the reference).
  classes   ClassLabel sequence [O] (0 = '__image__' never stored).
  num_objects int32 scalar, 3..30.
  num_in_relations int32 scalar, 1..num_objects.
  image_id  int32 scalar, the VG image id.
info.metadata: num_classes, class_names, predicate_names, max_objects=30,
reference_max_objects=10, ignore_label=None, image_size=None.
"""
import collections
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from jaxl2i.data.builders import coco_stuff_layout
from jaxl2i.data.errors import DatasetUnavailableError

IMAGE_TOKEN = '__image__'
IN_IMAGE_TOKEN = '__in_image__'
_VG = 'https://visualgenome.org/static/data/dataset/'
_VG_IMAGES = 'https://cs.stanford.edu/people/rak248/'
SPLITS_URL = ('https://raw.githubusercontent.com/google/sg2im/master/sg2im/'
              'data/vg_splits.json')
# Required file / folder (trailing '/') -> where to get it.
SOURCES = {
    'image_data.json': _VG + 'image_data.json.zip',
    'objects.json': _VG + 'objects.json.zip',
    'relationships.json': _VG + 'relationships.json.zip',
    'object_alias.txt': _VG + 'object_alias.txt',
    'relationship_alias.txt': _VG + 'relationship_alias.txt',
    'vg_splits.json': SPLITS_URL,
    'VG_100K/': _VG_IMAGES + 'VG_100K_2/images.zip',
    'VG_100K_2/': _VG_IMAGES + 'VG_100K_2/images2.zip',
}
# Our split name -> key in vg_splits.json.
SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}

MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'visual_genome_layout reads the official Visual Genome 1.4 files '
    '(https://visualgenome.org/api/v0/api_home.html) and sg2im\'s split '
    'file. Put into the manual directory (data.manual_dir), unzipping the '
    '.zip files there: ' +
    '; '.join(f'{k} from {v}' for k, v in SOURCES.items()) + '.')


class VisualGenomeLayoutConfig(tfds.core.BuilderConfig):
  """Thresholds of sg2im's preprocess_vg.py."""

  def __init__(self, *, min_object_instances: int,
               min_relationship_instances: int, min_image_size: int = 200,
               min_object_size: int = 32, min_objects: int = 3,
               max_objects: int = 30, min_relationships: int = 1,
               max_relationships: int = 30, **kwargs):
    super().__init__(**kwargs)
    self.min_object_instances = min_object_instances
    self.min_relationship_instances = min_relationship_instances
    self.min_image_size = min_image_size
    self.min_object_size = min_object_size
    self.min_objects = min_objects
    self.max_objects = max_objects
    self.min_relationships = min_relationships
    self.max_relationships = max_relationships


def missing_files_message(manual_dir: str | None, missing: Iterable[str]
                          ) -> str:
  """One message naming each missing file, its source and the directory."""
  where = os.path.abspath(manual_dir) if manual_dir else '<manual_dir>'
  lines = ['visual_genome_layout: Visual Genome files missing from the '
           f'manual directory {where}:']
  for rel in missing:
    kind = ' (folder of images)' if rel.endswith('/') else ''
    lines.append(f'  - {rel}{kind}: from {SOURCES[rel]}')
  lines.append(
      f'Download them (index: https://visualgenome.org/api/v0/'
      f'api_home.html; split file: {SPLITS_URL}) into {where}, unzip each '
      f'.zip there (e.g. `unzip objects.json.zip -d {where}`; images.zip '
      'gives VG_100K/, images2.zip VG_100K_2/), then build again.')
  return '\n'.join(lines)


def check_manual_dir(manual_dir: str | None) -> None:
  """Raises DatasetUnavailableError naming every missing file."""
  missing = coco_stuff_layout.missing_files(manual_dir, SOURCES)
  if missing:
    raise DatasetUnavailableError(missing_files_message(manual_dir, missing))


def load_aliases(lines: Iterable[str]) -> dict[str, str]:
  """Alias file lines 'a,b,c' -> {a: a, b: a, c: a} (sg2im's rule)."""
  aliases = {}
  for line in lines:
    names = [s.strip() for s in line.split(',')]
    for s in names:
      aliases[s] = names[0]
  return aliases


def _image_path(url: str) -> str:
  """'.../VG_100K_2/1.jpg' -> 'VG_100K_2/1.jpg'."""
  base, name = os.path.split(url)
  return os.path.join(os.path.basename(base), name)


def preprocess(image_data: list[Mapping[str, Any]],
               objects: list[Mapping[str, Any]],
               relationships: list[Mapping[str, Any]],
               splits: Mapping[str, list[int]],
               object_aliases: Mapping[str, str],
               relationship_aliases: Mapping[str, str],
               cfg: VisualGenomeLayoutConfig) -> dict[str, Any]:
  """sg2im's preprocessing (module docstring, steps 1-5), deterministic.

  Returns:
    {'object_names': [...], 'predicate_names': [...], 'splits': {split key
    of vg_splits.json: [record]}} with record = {'image_id', 'path',
    'objects': [(class id, [x, y, w, h])] related objects first,
    'num_in_relations'}.
  """
  images = {im['image_id']: im for im in image_data}
  splits = {k: [i for i in ids
                if min(images[i]['height'], images[i]['width'])
                >= cfg.min_image_size]
            for k, ids in splits.items()}
  train_ids = set(splits['train'])
  # 2. object vocabulary.
  counts = collections.Counter()
  for image in objects:
    if image['image_id'] in train_ids:
      for obj in image['objects']:
        names = [object_aliases.get(n, n) for n in obj['names']]
        counts.update(list(dict.fromkeys(names)))  # once per object, in order
  object_names = [IMAGE_TOKEN] + [
      n for n, c in counts.most_common() if c >= cfg.min_object_instances]
  name_to_idx = {n: i for i, n in enumerate(object_names)}
  # 3. objects.
  all_ids = set().union(*map(set, splits.values()))
  kept = {}  # object_id -> (class id, box)
  for image in objects:
    if image['image_id'] not in all_ids:
      continue
    for obj in image['objects']:
      idx = next((name_to_idx[object_aliases.get(n, n)] for n in obj['names']
                  if object_aliases.get(n, n) in name_to_idx), None)
      small = min(obj['w'], obj['h']) < cfg.min_object_size
      if idx is not None and not small:
        kept[obj['object_id']] = (idx, [obj['x'], obj['y'], obj['w'],
                                        obj['h']])
  # 4. predicate vocabulary (only these relationships get normalised).
  normalised = {}  # id(rel dict) -> predicate
  pred_counts = collections.Counter()
  for image in relationships:
    if image['image_id'] not in train_ids:
      continue
    for rel in image['relationships']:
      if (rel['subject']['object_id'] in kept and
          rel['object']['object_id'] in kept):
        pred = rel['predicate'].lower().strip()
        pred = relationship_aliases.get(pred, pred)
        normalised[id(rel)] = pred
        pred_counts[pred] += 1
  predicate_names = [IN_IMAGE_TOKEN] + [
      p for p, c in pred_counts.items() if c >= cfg.min_relationship_instances]
  predicates = set(predicate_names)
  # 5. images.
  objs_of = {im['image_id']: im['objects'] for im in objects}
  rels_of = {im['image_id']: im['relationships'] for im in relationships}
  out = {}
  for split, ids in splits.items():
    records = []
    for image_id in ids:
      order, idx_of = [], {}
      for obj in objs_of[image_id]:
        if obj['object_id'] in kept:
          idx_of[obj['object_id']] = len(order)
          order.append(kept[obj['object_id']])
      if not cfg.min_objects <= len(order) <= cfg.max_objects:
        continue
      related, num_rels = set(), 0
      for rel in rels_of[image_id]:
        pred = normalised.get(id(rel), rel['predicate'])
        s = idx_of.get(rel['subject']['object_id'])
        o = idx_of.get(rel['object']['object_id'])
        if pred in predicates and s is not None and o is not None:
          num_rels += 1
          related |= {s, o}
      if not cfg.min_relationships <= num_rels <= cfg.max_relationships:
        continue
      first = sorted(related)
      rest = [i for i in range(len(order)) if i not in related]
      records.append({
          'image_id': image_id,
          'path': _image_path(images[image_id]['url']),
          'objects': [order[i] for i in first + rest],
          'num_in_relations': len(first),
      })
    out[split] = records
  return {'object_names': object_names, 'predicate_names': predicate_names,
          'splits': out}


def make_example(manual_dir: str, record: Mapping[str, Any]
                 ) -> dict[str, Any]:
  """The stored form of one kept image (see the module docstring)."""
  path = os.path.join(manual_dir, record['path'])
  if not os.path.isfile(path):
    folder = record['path'].split('/')[0] + '/'
    raise DatasetUnavailableError(
        f'visual_genome_layout: image {path} is missing; unzip '
        f'{SOURCES.get(folder, "the VG image archives")} into {manual_dir} '
        'again.')
  data, (w, h) = coco_stuff_layout.read_image(path)
  boxes = np.array([[x / w, y / h, (x + bw) / w, (y + bh) / h]
                    for _, (x, y, bw, bh) in record['objects']],
                   np.float32).reshape(-1, 4)
  return {
      'image': data,
      'boxes': boxes,
      'classes': np.array([c for c, _ in record['objects']], np.int64),
      'num_objects': np.int32(len(record['objects'])),
      'num_in_relations': np.int32(record['num_in_relations']),
      'image_id': np.int32(record['image_id']),
  }


def _load_json(path: str) -> Any:
  with open(path, 'r') as f:
    return json.load(f)


class VisualGenomeLayout(tfds.core.GeneratorBasedBuilder):
  """Visual Genome images with sg2im-filtered layouts (LAMA, LostGAN)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      VisualGenomeLayoutConfig(
          name='sg2im', min_object_instances=2000,
          min_relationship_instances=500,
          description="sg2im's thresholds (LAMA, LostGAN, Layout2Im)."),
      VisualGenomeLayoutConfig(
          name='tiny', min_object_instances=3, min_relationship_instances=2,
          description='Vocabulary thresholds 3 / 2 for tests on tiny '
          'files; the pixel and count thresholds are sg2im\'s.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'sg2im'

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=tfds.features.FeaturesDict({
            'image': coco_stuff_layout.PilExactImage(shape=(None, None, 3)),
            'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            # Names come from the data (vocabulary thresholds) at build time.
            'classes': tfds.features.Sequence(tfds.features.ClassLabel()),
            'num_objects': tfds.features.Tensor(shape=(), dtype=np.int32),
            'num_in_relations': tfds.features.Tensor(shape=(),
                                                     dtype=np.int32),
            'image_id': tfds.features.Tensor(shape=(), dtype=np.int32),
        }),
        supervised_keys=None,
        homepage='https://visualgenome.org',
        metadata=tfds.core.MetadataDict(
            max_objects=cfg.max_objects,
            reference_max_objects=10,
            ignore_label=None,
            image_size=None,  # variable: resize in the pipeline
        ),
    )

  def _split_generators(self, dl_manager):
    manual_dir = coco_stuff_layout.manual_dir_of(dl_manager)
    check_manual_dir(manual_dir)
    join = lambda name: os.path.join(manual_dir, name)
    with open(join('object_alias.txt')) as f:
      obj_aliases = load_aliases(f)
    with open(join('relationship_alias.txt')) as f:
      rel_aliases = load_aliases(f)
    splits = _load_json(join('vg_splits.json'))
    result = preprocess(
        _load_json(join('image_data.json')), _load_json(join('objects.json')),
        _load_json(join('relationships.json')),
        {v: splits[v] for v in SPLITS.values()}, obj_aliases, rel_aliases,
        self.builder_config)
    names = result['object_names']
    self.info.features['classes'].feature.names = names
    self.info.metadata['num_classes'] = len(names)
    self.info.metadata['class_names'] = names
    self.info.metadata['predicate_names'] = result['predicate_names']
    return {
        ours: self._generate_examples(manual_dir, result['splits'][theirs])
        for ours, theirs in SPLITS.items()
    }

  def _generate_examples(self, manual_dir: str, records):
    for record in records:
      yield record['image_id'], make_example(manual_dir, record)
