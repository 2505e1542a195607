"""`coco_stuff_layout`: COCO-Stuff 2017 layouts as LAMA / LostGAN use them.

Built from the OFFICIAL COCO 2017 files in `manual_dir` (nothing is
downloaded):

  annotations/instances_{train,val}2017.json  annotations_trainval2017.zip
  annotations/stuff_{train,val}2017.json      stuff_annotations_trainval2017.zip
  train2017/*.jpg                             train2017.zip
  val2017/*.jpg                               val2017.zip

(unzip each archive into manual_dir as it is). Filtering follows the
reference loader `CocoSceneGraphDataset` (ZejianLi/LAMA
data/cocostuff_loader.py, arguments of its train.py / data/util.py:
stuff_only=True, min_object_size=0.02, 3..8 objects, include_other=False, no
whitelists):
  1. only images that have at least one annotation in the stuff file;
  2. an annotation (instance or stuff) is kept if iscrowd != 1, its category
     is not 'other' (id 183), and its BOX area w*h / (W*H) > 0.02 (strict;
     the segmentation area is not used; W, H from the instances file);
  3. an image is kept if it has 3 <= #kept annotations <= 8.
The reference reports 74,777 train / 3,097 validation images on the full
files (not verifiable without them).

Builder configs: `lama` (the default, the rules above) and `layout2im`, the
loader of zhaobozb/layout2im (data/coco_custom_mask.py, sg2im's): the same
rules except that crowd annotations are KEPT (it has no iscrowd test), which
changes both the objects and which images have 3..8 of them. Its per-read
object shuffle is the `shuffle_objects` data op, not a stored order.

Objects of an image keep the reference loader's order: its kept instance
annotations in the order of instances_*.json, then its kept stuff
annotations in the order of stuff_*.json (the loader never shuffles them).

Class ids are the raw COCO category ids (things 1..90 with gaps, stuff
92..182, 'other' 183): 184 rows, 0 = '__pad__'. Names come from the
`categories` of the instances and stuff files of the training split (the
validation files must agree); ids no category uses are named 'unused_<id>'.

Stored features (`decode` in ops.py turns them into the data contract):
  image     the original image file: JPEG bytes as unzipped (RGB or
            grayscale; decoded to uint8 [H,W,3] exactly as PIL decodes them,
            see PilExactImage); other modes are converted to RGB and stored
            as PNG. Sizes vary per image: resize
            with the pipeline's `resize(S)` (straight to SxS, bilinear, like
            the reference's PIL resize).
  instance  uint16 [H,W,1] PNG: k+1 where object slot k of this example
            covers the pixel, 0 where no kept object does.
  label     uint8 [H,W,1] PNG: the class id of that object, 0 where none.
            Both maps are painted from the COCO segmentations (polygons,
            uncompressed and compressed RLE, decoded with pycocotools) in
            object order, a later object overwriting an earlier one where
            they overlap. COCO-Stuff's stuff regions and thing instances
            hardly overlap, so the rule matters mainly between overlapping
            things. Dropped annotations (crowd, 'other', small) are not
            painted. LAMA's per-object ground-truth masks are
            `instance == k + 1`.
  boxes     float32 [O,4] normalised (x0, y0, x1, y1) = (x/W, y/H,
            (x+w)/W, (y+h)/H) of the COCO bbox, W, H = image file size.
  classes   ClassLabel sequence [O] (raw COCO category ids).
  num_objects int32 scalar, 3..8.
  image_id  int32 scalar, the COCO image id.
info.metadata: num_classes=184, class_names, max_objects=8,
ignore_label=None (unpainted pixels are 0 = no kept object), image_size=None
(images keep their own size).
"""
import io
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image as pil_image
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i.data.errors import DatasetUnavailableError

MIN_OBJECT_SIZE = 0.02  # box area / image area must exceed this (strictly)
MIN_OBJECTS = 3
MAX_OBJECTS = 8
OTHER_NAME = 'other'  # COCO-Stuff's catch-all class (id 183), dropped
PAD_NAME = '__pad__'

ANNOTATIONS_URL = ('http://images.cocodataset.org/annotations/'
                   'annotations_trainval2017.zip')
STUFF_URL = ('http://images.cocodataset.org/annotations/'
             'stuff_annotations_trainval2017.zip')
_IMAGES_URL = 'http://images.cocodataset.org/zips/{}.zip'

# Split -> (instances json, stuff json, image folder), relative to manual_dir.
SPLIT_FILES = {
    'train': ('annotations/instances_train2017.json',
              'annotations/stuff_train2017.json', 'train2017'),
    'validation': ('annotations/instances_val2017.json',
                   'annotations/stuff_val2017.json', 'val2017'),
}


def _source_url(rel_path: str) -> str:
  """The official archive that contains `rel_path`."""
  if rel_path.startswith('annotations/instances_'):
    return ANNOTATIONS_URL
  if rel_path.startswith('annotations/stuff_'):
    return STUFF_URL
  return _IMAGES_URL.format(rel_path.split('/')[0])


def _required() -> list[str]:
  """Every file/folder the builder reads, folders with a trailing '/'."""
  out = []
  for inst, stuff, folder in SPLIT_FILES.values():
    out += [inst, stuff, folder + '/']
  return out


MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'coco_stuff_layout reads the official COCO 2017 files. Download '
    f'{ANNOTATIONS_URL}, {STUFF_URL}, {_IMAGES_URL.format("train2017")} and '
    f'{_IMAGES_URL.format("val2017")} and unzip each into the manual '
    'directory (data.manual_dir), so that it holds ' +
    ', '.join(_required()) + '.')


def missing_files(manual_dir: str | None,
                  required: Iterable[str] | None = None) -> list[str]:
  """Entries of `required` (default: this builder's) absent from manual_dir.

  Entries ending in '/' are folders, absent when missing or empty.
  """
  missing = []
  for rel in _required() if required is None else required:
    path = os.path.join(manual_dir or '', rel.rstrip('/'))
    if rel.endswith('/'):
      ok = os.path.isdir(path) and bool(os.listdir(path))
    else:
      ok = os.path.isfile(path)
    if not manual_dir or not ok:
      missing.append(rel)
  return missing


def missing_files_message(manual_dir: str | None, missing: Iterable[str]
                          ) -> str:
  """One message naming each missing file, its archive and the directory."""
  where = os.path.abspath(manual_dir) if manual_dir else '<manual_dir>'
  lines = [f'coco_stuff_layout: official COCO 2017 files missing from the '
           f'manual directory {where}:']
  for rel in missing:
    kind = ' (folder of images)' if rel.endswith('/') else ''
    lines.append(f'  - {rel}{kind}: from {_source_url(rel)}')
  zips = sorted({_source_url(r) for r in missing})
  lines.append(
      f'Download {", ".join(zips)} and unzip each into {where} (e.g. `unzip '
      f'annotations_trainval2017.zip -d {where}`), then build again.')
  return '\n'.join(lines)


def check_manual_dir(manual_dir: str | None) -> None:
  """Raises DatasetUnavailableError naming every missing file."""
  missing = missing_files(manual_dir)
  if missing:
    raise DatasetUnavailableError(missing_files_message(manual_dir, missing))


def class_names(category_lists: Iterable[Iterable[Mapping[str, Any]]]
                ) -> list[str]:
  """184-style vocabulary: index = raw category id, 0 = '__pad__'.

  Args:
    category_lists: the `categories` lists of the instances and stuff files.
  Returns:
    names[0..max_id]; ids no category uses are named 'unused_<id>'.
  """
  by_id = {}
  for cats in category_lists:
    for c in cats:
      if by_id.get(c['id'], c['name']) != c['name']:
        raise ValueError(f"category id {c['id']} has two names: "
                         f"{by_id[c['id']]!r} and {c['name']!r}")
      by_id[c['id']] = c['name']
  if 0 in by_id:
    raise ValueError('COCO category id 0 is reserved for padding')
  names = [PAD_NAME] + [by_id.get(i, f'unused_{i}')
                        for i in range(1, max(by_id) + 1)]
  if len(set(names)) != len(names):
    raise ValueError('COCO category names are not unique')
  return names


def filter_images(instances: Mapping[str, Any],
                  stuff: Mapping[str, Any] | None, *,
                  min_object_size: float = MIN_OBJECT_SIZE,
                  min_objects: int = MIN_OBJECTS,
                  max_objects: int = MAX_OBJECTS,
                  keep_crowd: bool = False
                  ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
  """The reference loader's image and object selection.

  Args:
    instances: parsed instances_*.json ('images', 'annotations',
      'categories').
    stuff: parsed stuff_*.json, or None (then every image is considered, as
      the reference does with stuff_only but no stuff file).
    keep_crowd: keep iscrowd annotations (Layout2Im's loader) instead of
      dropping them (LAMA's).
  Returns:
    [(image record, kept annotations in loader order)] in the order of
    instances['images'].
  """
  sizes = {im['id']: (im['width'], im['height'])
           for im in instances['images']}
  names = {c['id']: c['name'] for c in instances['categories']}
  if stuff:
    names.update({c['id']: c['name'] for c in stuff['categories']})
  objects: dict[int, list] = {}

  def add(ann):
    w_img, h_img = sizes[ann['image_id']]
    _, _, w, h = ann['bbox']
    big = (w * h) / (w_img * h_img) > min_object_size
    other = names[ann['category_id']] == OTHER_NAME
    crowd = ann.get('iscrowd', 0) == 1 and not keep_crowd
    if big and not other and not crowd:
      objects.setdefault(ann['image_id'], []).append(ann)

  for ann in instances['annotations']:
    add(ann)
  with_stuff = None
  if stuff:
    with_stuff = set()
    for ann in stuff['annotations']:
      with_stuff.add(ann['image_id'])
      add(ann)
  out = []
  for im in instances['images']:
    if with_stuff is not None and im['id'] not in with_stuff:
      continue
    objs = objects.get(im['id'], [])
    if min_objects <= len(objs) <= max_objects:
      out.append((im, objs))
  return out


def segmentation_mask(seg: Any, height: int, width: int) -> np.ndarray:
  """uint8 [H,W] 0/1 mask of a COCO segmentation (polygons or RLE)."""
  # Imported here: only building needs pycocotools.
  from pycocotools import mask as mask_utils
  if isinstance(seg, list):  # polygons [[x0, y0, x1, y1, ...], ...]
    # pycocotools reads a 4-number list as a box: keep true polygons only.
    polys = [p for p in seg if len(p) >= 6]
    if not polys:
      return np.zeros((height, width), np.uint8)
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
  else:
    if list(seg['size']) != [height, width]:
      raise ValueError(f"RLE of size {seg['size']} on a {height}x{width} "
                       'image')
    if isinstance(seg['counts'], list):  # uncompressed RLE
      rle = mask_utils.frPyObjects(seg, height, width)
    else:  # compressed RLE (str in the JSON files)
      counts = seg['counts']
      rle = {'size': seg['size'], 'counts':
             counts.encode('ascii') if isinstance(counts, str) else counts}
  return mask_utils.decode(rle)


def rasterise(anns: Iterable[Mapping[str, Any]], height: int, width: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """(instance uint16 [H,W], label uint8 [H,W]) painted in list order.

  Pixel value k+1 of `instance` = object k covers it (later objects
  overwrite earlier ones); `label` holds that object's category id.
  """
  instance = np.zeros((height, width), np.uint16)
  label = np.zeros((height, width), np.uint8)
  for k, ann in enumerate(anns):
    m = segmentation_mask(ann['segmentation'], height, width).astype(bool)
    instance[m] = k + 1
    label[m] = ann['category_id']
  return instance, label


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  pil_image.fromarray(array).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def read_image(path: str) -> tuple[bytes, tuple[int, int]]:
  """(bytes to store, (width, height)) of an image file.

  JPEG/PNG files in RGB or grayscale are stored unchanged; anything else
  (CMYK, palette, ...) is converted to RGB like the reference's
  `.convert('RGB')` and stored as PNG.
  """
  with open(path, 'rb') as f:
    data = f.read()
  with pil_image.open(io.BytesIO(data)) as im:
    size = im.size
    if im.format in ('JPEG', 'PNG') and im.mode in ('RGB', 'L'):
      return data, size
    return _png(np.asarray(im.convert('RGB'))), size


def make_example(image_dir: str, image: Mapping[str, Any],
                 anns: list[Mapping[str, Any]]) -> dict[str, Any]:
  """The stored form of one kept image (see the module docstring)."""
  path = os.path.join(image_dir, image['file_name'])
  if not os.path.isfile(path):
    raise DatasetUnavailableError(
        f'coco_stuff_layout: image {path} is missing; unzip '
        f'{_IMAGES_URL.format(os.path.basename(image_dir))} into '
        f'{os.path.dirname(image_dir)} again.')
  data, (w, h) = read_image(path)
  if (w, h) != (image['width'], image['height']):
    raise ValueError(f'{path} is {w}x{h} but the annotations say '
                     f"{image['width']}x{image['height']}")
  instance, label = rasterise(anns, h, w)
  boxes = np.array([[x / w, y / h, (x + bw) / w, (y + bh) / h]
                    for x, y, bw, bh in (a['bbox'] for a in anns)],
                   np.float32).reshape(-1, 4)
  return {
      'image': data,
      'instance': _png(instance),  # 1-channel PNG = [H,W,1]
      'label': _png(label),
      'boxes': boxes,
      'classes': np.array([a['category_id'] for a in anns], np.int64),
      'num_objects': np.int32(len(anns)),
      'image_id': np.int32(image['id']),
  }


def _load_json(path: str) -> Any:
  with open(path, 'r') as f:
    return json.load(f)


def manual_dir_of(dl_manager) -> str:
  """The configured manual_dir, also when it is missing or empty.

  TFDS's `dl_manager.manual_dir` raises AssertionError in that case, with
  its own generic text; the builders report the missing files themselves.
  """
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:
    path = dl_manager._manual_dir  # pylint: disable=protected-access
    return os.fspath(path) if path else ''


class PilExactImage(tfds.features.Image):
  """RGB image feature whose JPEGs decode exactly as PIL decodes them.

  tf.image.decode_image (TFDS's default) uses libjpeg's fast integer IDCT:
  on COCO photos it differs from PIL (the reference's loader) by up to ~19
  levels, ~1.3 on average. decode_jpeg with INTEGER_ACCURATE reproduces PIL
  bit for bit; PNGs decode as usual.
  """

  def decode_example(self, example):
    img = tf.cond(
        tf.io.is_jpeg(example),
        lambda: tf.io.decode_jpeg(example, channels=3,
                                  dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_png(example, channels=3))
    img.set_shape((None, None, 3))
    return img


class CocoStuffLayoutConfig(tfds.core.BuilderConfig):
  """Which reference loader's object filter the builder reproduces."""

  def __init__(self, *, keep_crowd: bool, reference_num_examples=None,
               **kwargs):
    super().__init__(**kwargs)
    self.keep_crowd = keep_crowd
    self.reference_num_examples = reference_num_examples


class CocoStuffLayout(tfds.core.GeneratorBasedBuilder):
  """COCO-Stuff 2017 images with LAMA's filtered layouts and object maps."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      CocoStuffLayoutConfig(
          name='lama', keep_crowd=False,
          reference_num_examples={'train': 74777, 'validation': 3097},
          description="LAMA / LostGAN's loader: crowd annotations dropped."),
      CocoStuffLayoutConfig(
          name='layout2im', keep_crowd=True,
          description="Layout2Im's (sg2im's) loader: crowd annotations "
          'kept.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'lama'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=tfds.features.FeaturesDict({
            'image': PilExactImage(shape=(None, None, 3)),
            'label': tfds.features.Image(shape=(None, None, 1),
                                         dtype=np.uint8),
            'instance': tfds.features.Image(shape=(None, None, 1),
                                            dtype=np.uint16),
            'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            # Names are read from the category lists at build time.
            'classes': tfds.features.Sequence(tfds.features.ClassLabel()),
            'num_objects': tfds.features.Tensor(shape=(), dtype=np.int32),
            'image_id': tfds.features.Tensor(shape=(), dtype=np.int32),
        }),
        supervised_keys=None,
        homepage='https://github.com/nightrome/cocostuff',
        metadata=tfds.core.MetadataDict(
            max_objects=MAX_OBJECTS,
            ignore_label=None,
            image_size=None,  # variable: resize in the pipeline
            min_object_size=MIN_OBJECT_SIZE,
            min_objects=MIN_OBJECTS,
            reference_num_examples=(
                self.builder_config.reference_num_examples),
            keep_crowd=self.builder_config.keep_crowd,
        ),
    )

  def _split_generators(self, dl_manager):
    manual_dir = manual_dir_of(dl_manager)
    check_manual_dir(manual_dir)
    selected, names = {}, None
    for split, (inst_rel, stuff_rel, _) in SPLIT_FILES.items():
      instances = _load_json(os.path.join(manual_dir, inst_rel))
      stuff = _load_json(os.path.join(manual_dir, stuff_rel))
      split_names = class_names([instances['categories'],
                                 stuff['categories']])
      if names is not None and split_names != names:
        raise ValueError(f'{inst_rel} / {stuff_rel} categories differ from '
                         'the training files')
      names = names or split_names
      selected[split] = filter_images(
          instances, stuff, keep_crowd=self.builder_config.keep_crowd)
      del instances, stuff
    self.info.features['classes'].feature.names = names
    self.info.metadata['num_classes'] = len(names)
    self.info.metadata['class_names'] = names
    return {
        split: self._generate_examples(
            os.path.join(manual_dir, SPLIT_FILES[split][2]), kept)
        for split, kept in selected.items()
    }

  def _generate_examples(self, image_dir: str, kept):
    for image, anns in kept:
      yield image['id'], make_example(image_dir, image, anns)
