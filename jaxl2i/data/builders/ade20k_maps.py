"""`ade20k_maps`: ADE20K SceneParsing150 label maps + photos (SPADE, and the
depth-aware two-stage SPADE with its pseudo-depth maps).

Built from the OFFICIAL challenge archive in `manual_dir` (nothing is
downloaded): ADEChallengeData2016.zip from
http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip,
unzipped into manual_dir as it is:

  train       20,210  ADEChallengeData2016/images/training/ADE_train_*.jpg
                      ADEChallengeData2016/annotations/training/<stem>.png
  validation   2,000  the same under .../validation/
  class names         ADEChallengeData2016/objectInfo150.txt (optional)

Examples are the images found, in sorted order; each needs its annotation
PNG (same stem, same size).

Labels follow SPADE's ADE20K setting (reference/spade_pix2pix.md A3/A9;
data/ade20k_dataset.py: label - 1, -1 -> label_nc): the annotation value
v in 1..150 is stored as v - 1 (0..149) and 0 ('unknown') as 150 =
'dontcare'. num_classes 151 = 150 + dontcare, ignore_label 150. Class names
come from objectInfo150.txt (tab-separated `Idx Ratio Train Val Name`; the
first synonym of Name, before any ';' or ',': 'building, edifice' ->
'building'), else 'class_<label id>'. No instance maps.

Config `depth` (reference/depth_spade.md §4) also stores `depth`: a
user-supplied pseudo-depth map for EVERY image, read from
<manual_dir>/depth/{training,validation}/ as <stem>.png (16-bit PNG),
<stem>.npy or <stem>_disp.npy (float array, [H,W] after dropping size-1
axes: monodepth2's test_simple.py saves [1,1,h,w]), first found in that
order. The values must be disparity-like, LARGER = NEARER (monodepth2's
output); they are not inverted. Each map is resized to the label size if
its size differs (bilinear, half-pixel centres, no antialiasing =
tf.image.resize 'bilinear' = torch F.interpolate(align_corners=False), as
monodepth2 resizes its own output), then normalised per image to [0,1]
(min -> 0, max -> 1; a constant map -> all 0) and stored as a uint16 PNG of
round(value * 65535), synthetic_scenes' encoding (`ops.decode` gives
float32 value/65535). A missing map stops the build, naming how many and
the first few.

info.metadata: num_classes=151, class_names, ignore_label=150,
max_objects=0, image_size=None (sizes vary), reference_num_examples; the
depth config adds depth_convention and depth_scale.
"""
import glob
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i.data.builders import labelmap_common as common

NAME = 'ade20k_maps'
ROOT = 'ADEChallengeData2016'
URL = 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip'
NUM_ADE_CLASSES = 150
DONTCARE = NUM_ADE_CLASSES  # stored id of ADE's 0 = 'unknown'
NUM_CLASSES = NUM_ADE_CLASSES + 1
FOLDERS = {'train': 'training', 'validation': 'validation'}
OBJECT_INFO = f'{ROOT}/objectInfo150.txt'
REQUIRED = {f'{ROOT}/{kind}/{f}/': URL for kind in ('images', 'annotations')
            for f in FOLDERS.values()}
DEPTH_DIR = 'depth'
DEPTH_FORMS = ('.png', '.npy', '_disp.npy')  # <stem> + form, first found
DEPTH_SCALE = 65535.0
DEPTH_CONVENTION = (
    'per-image normalised disparity in [0,1], larger = nearer; stored as '
    'uint16 PNG of round(value * 65535)')
MONODEPTH2 = 'https://github.com/nianticlabs/monodepth2'
HOW = ('Download ' + URL + ' and unzip it into {where} (`unzip '
       'ADEChallengeData2016.zip -d {where}`), so that it holds ' + ROOT +
       '/images/ and ' + ROOT + '/annotations/, then build again.')
DEPTH_HOW = (
    'The depth config needs one pseudo-depth map per image in '
    '<manual_dir>/depth/{training,validation}/ named <stem>.png (16-bit '
    'PNG), <stem>.npy or <stem>_disp.npy (float HxW, larger = nearer). '
    'Produce them with monodepth2 (' + MONODEPTH2 + '): `python '
    'test_simple.py --image_path <manual_dir>/' + ROOT + '/images/training '
    '--model_name mono+stereo_640x192` writes <stem>_disp.npy beside each '
    'image; move them into <manual_dir>/depth/training/ (likewise '
    'validation) and build again.')
MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'{NAME} reads the official SceneParsing150 archive {URL}: unzip it into '
    f'the manual directory (data.manual_dir) so that it holds {ROOT}/images/'
    f'{{training,validation}}/ and {ROOT}/annotations/{{training,'
    f'validation}}/. ' + DEPTH_HOW)


class Ade20kMapsConfig(tfds.core.BuilderConfig):
  """With or without the pseudo-depth maps."""

  def __init__(self, *, depth: bool, **kwargs):
    super().__init__(**kwargs)
    self.depth = depth


CONFIGS = [
    Ade20kMapsConfig(name='default', depth=False,
                     description='images + label maps (SPADE).'),
    Ade20kMapsConfig(name='depth', depth=True,
                     description='images + label maps + per-image '
                     'normalised pseudo-depth (depth-aware SPADE).'),
]


def class_names(manual_dir: str | None) -> list[str]:
  """151 names: objectInfo150.txt's first synonyms (else 'class_<i>',
  i = stored label id), then 'dontcare'."""
  names = [f'class_{i}' for i in range(NUM_ADE_CLASSES)]
  path = os.path.join(manual_dir, OBJECT_INFO) if manual_dir else ''
  if path and os.path.isfile(path):
    with open(path, 'r', encoding='utf-8') as f:
      rows = [line.rstrip('\n').split('\t') for line in f]
    for row in rows[1:]:  # header: Idx Ratio Train Val Name
      if len(row) < 5 or not row[0].strip():
        continue
      idx = int(row[0].strip())
      first = row[-1].split(';')[0].split(',')[0].strip()
      if 1 <= idx <= NUM_ADE_CLASSES and first:
        names[idx - 1] = first
  return names + ['dontcare']


def to_spade_label(ade: np.ndarray) -> np.ndarray:
  """ADE values 0..150 -> uint8 SPADE ids: v - 1, and 0 -> 150."""
  return np.where(ade == 0, DONTCARE, ade - 1).astype(np.uint8)


def find_examples(manual_dir: str, folder: str) -> list[tuple[str, str]]:
  """[(image, annotation)] of one split folder, sorted by image name."""
  images = sorted(glob.glob(os.path.join(manual_dir, ROOT, 'images', folder,
                                         '*.jpg')))
  out, missing = [], []
  for img in images:
    stem = os.path.splitext(os.path.basename(img))[0]
    ann = os.path.join(manual_dir, ROOT, 'annotations', folder, stem + '.png')
    if not os.path.isfile(ann):
      missing.append(os.path.relpath(ann, manual_dir))
    out.append((img, ann))
  if missing:
    raise common.missing_list_error(
        NAME, 'annotation PNG(s)', missing,
        f'Every image needs its annotation of the same name: unzip {URL} '
        'again.')
  return out


def depth_path(manual_dir: str, folder: str, stem: str) -> str | None:
  """The first existing <stem>{.png,.npy,_disp.npy} under depth/<folder>."""
  for form in DEPTH_FORMS:
    p = os.path.join(manual_dir, DEPTH_DIR, folder, stem + form)
    if os.path.isfile(p):
      return p
  return None


def read_depth(path: str) -> np.ndarray:
  """float64 [h,w] of a depth file (.npy float array or 1-channel PNG)."""
  if path.endswith('.npy'):
    arr = np.squeeze(np.load(path))
  else:
    arr = common.read_map(path)
  if arr.ndim != 2:
    raise ValueError(f'{path}: expected an [H,W] depth map (size-1 axes '
                     f'dropped), got shape {arr.shape}')
  arr = arr.astype(np.float64)
  if not np.isfinite(arr).all():
    raise ValueError(f'{path}: depth map has non-finite values')
  return arr


def normalise_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint16 [H,W]: `depth` resized to size (bilinear) and mapped to [0,1]."""
  if depth.shape != tuple(size):
    depth = tf.image.resize(depth[..., None].astype(np.float32), size,
                            method='bilinear', antialias=False)
    depth = depth.numpy()[..., 0].astype(np.float64)
  lo, hi = depth.min(), depth.max()
  unit = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
  return np.round(unit * DEPTH_SCALE).astype(np.uint16)


def make_example(img: str, ann: str, depth: str | None) -> dict:
  """The stored form of one image (module docstring)."""
  size = common.check_same_size([img, ann])
  raw = common.read_map(ann)
  common.check_range(raw, NUM_ADE_CLASSES, ann)
  data, _ = common.read_image(img)
  ex = {'image': data, 'label': common.png(to_spade_label(raw)),
        'file_name': os.path.basename(img)}
  if depth is not None:
    ex['depth'] = common.png(normalise_depth(read_depth(depth), size))
  return ex


class Ade20kMaps(tfds.core.GeneratorBasedBuilder):
  """ADE20K SceneParsing150 photos with SPADE-convention label maps."""

  name = NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'default'
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    depth = self.builder_config.depth
    extra = dict(depth_convention=DEPTH_CONVENTION,
                 depth_scale=DEPTH_SCALE) if depth else {}
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=common.features(depth=depth),
        supervised_keys=None,
        homepage='http://sceneparsing.csail.mit.edu/',
        metadata=common.metadata(
            class_names=class_names(None), ignore_label=DONTCARE,
            image_size_hw=None,
            reference_num_examples={'train': 20210, 'validation': 2000},
            **extra),
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager)
    common.check_required(NAME, manual_dir, REQUIRED, HOW)
    examples = {split: find_examples(manual_dir, folder)
                for split, folder in FOLDERS.items()}
    depths = {split: [None] * len(exs) for split, exs in examples.items()}
    if self.builder_config.depth:
      missing = []
      for split, exs in examples.items():
        for i, (img, _) in enumerate(exs):
          stem = os.path.splitext(os.path.basename(img))[0]
          depths[split][i] = depth_path(manual_dir, FOLDERS[split], stem)
          if depths[split][i] is None:
            missing.append(os.path.join(manual_dir, DEPTH_DIR, FOLDERS[split],
                                        stem + '.png'))
      if missing:
        raise common.missing_list_error(
            f'{NAME}/depth', 'depth map(s) (<stem>.png, .npy or _disp.npy)',
            missing, DEPTH_HOW)
    names = class_names(manual_dir)
    self.info.metadata['class_names'] = names
    return {split: self._generate_examples(examples[split], depths[split])
            for split in examples}

  def _generate_examples(self, examples, depths):
    for (img, ann), depth in zip(examples, depths):
      yield os.path.basename(img), make_example(img, ann, depth)
