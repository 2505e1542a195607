"""`cityscapes_maps`: Cityscapes label maps + photos, as SPADE / pix2pix / CRN
read them.

Built from the OFFICIAL Cityscapes packages in `manual_dir` (nothing is
downloaded; https://www.cityscapes-dataset.com/downloads/, login needed),
each unzipped into manual_dir as it is:

  config `fine` (default): leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip
    train       2,975  leftImg8bit/train/<city>/<stem>_leftImg8bit.png
                       gtFine/train/<city>/<stem>_gtFine_labelIds.png
                       gtFine/train/<city>/<stem>_gtFine_instanceIds.png
    validation    500  the same under .../val/
  config `coarse`:  + gtCoarse.zip, leftImg8bit_trainextra.zip
    train      22,973  gtCoarse/{train,train_extra}/... (2,975 + 19,998),
                       images from leftImg8bit/{train,train_extra}/
    validation    500  gtCoarse/val/...
  (<stem> = <city>_<seq>_<frame>; the test split has no labels and is not
  built.) Examples are the label files found, in sorted path order; each
  needs its photo and its instance map.

Labels follow SPADE's Cityscapes setting (reference/spade_pix2pix.md A3/A9:
label_nc 35, no dontcare, instance edges): `label` = the labelIds PNG as is,
ids 0..33 of cityscapesScripts' labels.py plus 34 = 'license plate' (id -1
there, never drawn in labelIds files). num_classes 35; 0 'unlabeled' is an
ordinary class (SPADE one-hot encodes it), so ignore_label is None.
`instance` = the instanceIds PNG as is (uint16): stuff pixels hold their
class id, pixels of a thing instance id*1000+k, thing-group regions the plain
class id. `file_name` = the photo's base name.

info.metadata: num_classes=35, class_names, ignore_label=None, max_objects=0,
image_size=(H, W) shared by all photos ((1024, 2048) for the official files;
None if they differ), reference_num_examples.
"""
import glob
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxl2i.data.builders import labelmap_common as common

NAME = 'cityscapes_maps'
# cityscapesScripts helpers/labels.py, ids 0..33; 'license plate' (-1) as 34.
CLASS_NAMES = (
    'unlabeled', 'ego vehicle', 'rectification border', 'out of roi',
    'static', 'dynamic', 'ground', 'road', 'sidewalk', 'parking',
    'rail track', 'building', 'wall', 'fence', 'guard rail', 'bridge',
    'tunnel', 'pole', 'polegroup', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus',
    'caravan', 'trailer', 'train', 'motorcycle', 'bicycle', 'license plate')
NUM_CLASSES = len(CLASS_NAMES)  # 35 = SPADE's label_nc
DOWNLOADS = 'https://www.cityscapes-dataset.com/downloads/'
PACKAGES = {
    'leftImg8bit/train/': 'leftImg8bit_trainvaltest.zip',
    'leftImg8bit/val/': 'leftImg8bit_trainvaltest.zip',
    'leftImg8bit/train_extra/': 'leftImg8bit_trainextra.zip',
    'gtFine/train/': 'gtFine_trainvaltest.zip',
    'gtFine/val/': 'gtFine_trainvaltest.zip',
    'gtCoarse/train/': 'gtCoarse.zip',
    'gtCoarse/train_extra/': 'gtCoarse.zip',
    'gtCoarse/val/': 'gtCoarse.zip',
}


class CityscapesMapsConfig(tfds.core.BuilderConfig):
  """Which annotations (gtFine / gtCoarse) and which folders form a split."""

  def __init__(self, *, gt: str, splits: dict[str, tuple[str, ...]],
               reference: dict[str, int], **kwargs):
    super().__init__(**kwargs)
    self.gt = gt
    self.splits = splits
    self.reference = reference


CONFIGS = [
    CityscapesMapsConfig(
        name='fine', gt='gtFine',
        splits={'train': ('train',), 'validation': ('val',)},
        reference={'train': 2975, 'validation': 500},
        description='gtFine: 2,975 train / 500 validation (SPADE, pix2pix, '
        'CRN).'),
    CityscapesMapsConfig(
        name='coarse', gt='gtCoarse',
        splits={'train': ('train', 'train_extra'), 'validation': ('val',)},
        reference={'train': 2975 + 19998, 'validation': 500},
        description='gtCoarse: train + train_extra (22,973) / val 500 (the '
        'segmentation-mask GAN trains on both).'),
]


def required(config: CityscapesMapsConfig) -> dict[str, str]:
  """Folders the config reads -> their official package."""
  out = {}
  for folders in config.splits.values():
    for f in folders:
      for root in ('leftImg8bit', config.gt):
        out[f'{root}/{f}/'] = PACKAGES[f'{root}/{f}/']
  return out


HOW = ('Download the packages named above from ' + DOWNLOADS + ' (free '
       'account) and unzip each into {where} (e.g. `unzip '
       'gtFine_trainvaltest.zip -d {where}`), so that it holds '
       'leftImg8bit/ and gtFine/ (gtCoarse/ for the coarse config), then '
       'build again.')


def manual_instructions() -> str:
  lines = [f'{NAME} reads the official Cityscapes packages from {DOWNLOADS}:']
  for c in CONFIGS:
    pk = sorted(set(required(c).values()))
    lines.append(f'  {NAME}/{c.name}: {", ".join(pk)}')
  lines.append('Unzip each into the manual directory (data.manual_dir) as it '
               'is, so that it holds leftImg8bit/{train,val[,train_extra]}/, '
               'gtFine/{train,val}/ and/or gtCoarse/{train,train_extra,val}/.')
  return '\n'.join(lines)


def find_examples(manual_dir: str, gt: str, folder: str
                  ) -> list[tuple[str, str, str]]:
  """[(photo, labelIds, instanceIds)] of one official folder, sorted.

  Raises:
    DatasetUnavailableError: a label file lacks its photo or instance map.
  """
  suffix = f'_{gt}_labelIds.png'
  labels = sorted(glob.glob(os.path.join(manual_dir, gt, folder, '*',
                                         '*' + suffix)))
  if not labels:
    raise common.missing_list_error(
        NAME, 'label map(s)', [f'{gt}/{folder}/<city>/*{suffix}'],
        f'{gt}/{folder}/ holds no label maps: unzip '
        f'{PACKAGES[f"{gt}/{folder}/"]} again ({DOWNLOADS}).')
  out, missing = [], []
  for lab in labels:
    city = os.path.basename(os.path.dirname(lab))
    stem = os.path.basename(lab)[:-len(suffix)]
    photo = os.path.join(manual_dir, 'leftImg8bit', folder, city,
                         f'{stem}_leftImg8bit.png')
    inst = lab[:-len('labelIds.png')] + 'instanceIds.png'
    missing += [p for p in (photo, inst) if not os.path.isfile(p)]
    out.append((photo, lab, inst))
  if missing:
    rels = [os.path.relpath(p, manual_dir) for p in missing]
    raise common.missing_list_error(
        NAME, 'file(s) beside the label maps', rels,
        'Each *_labelIds.png needs its *_instanceIds.png and its '
        'leftImg8bit photo: unzip the packages again (' + DOWNLOADS + ').')
  return out


def make_example(photo: str, lab: str, inst: str) -> dict:
  """The stored form of one frame (module docstring)."""
  common.check_same_size([photo, lab, inst])
  label = common.read_map(lab)
  common.check_range(label, NUM_CLASSES - 1, lab)
  instance = common.read_map(inst)
  common.check_range(instance, np.iinfo(np.uint16).max, inst)
  data, _ = common.read_image(photo)
  return {
      'image': data,
      'label': common.png(label.astype(np.uint8)),
      'instance': common.png(instance.astype(np.uint16)),
      'file_name': os.path.basename(photo),
  }


class CityscapesMaps(tfds.core.GeneratorBasedBuilder):
  """Cityscapes photos with labelIds and instanceIds maps."""

  name = NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'fine'
  MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=common.features(instance=True),
        supervised_keys=None,
        homepage='https://www.cityscapes-dataset.com/',
        metadata=common.metadata(
            class_names=CLASS_NAMES, ignore_label=None,
            image_size_hw=(1024, 2048),
            reference_num_examples=dict(self.builder_config.reference),
            instance_encoding='stuff: class id; things: id*1000+k'),
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    manual_dir = common.manual_dir_of(dl_manager)
    common.check_required(NAME, manual_dir, required(cfg), HOW)
    examples = {
        split: [ex for f in folders
                for ex in find_examples(manual_dir, cfg.gt, f)]
        for split, folders in cfg.splits.items()
    }
    sizes = {common.image_size(photo)
             for exs in examples.values() for photo, _, _ in exs}
    self.info.metadata['image_size'] = (
        tuple(sizes.pop()) if len(sizes) == 1 else None)
    return {split: self._generate_examples(manual_dir, exs)
            for split, exs in examples.items()}

  def _generate_examples(self, manual_dir: str, examples):
    for photo, lab, inst in examples:
      yield os.path.relpath(lab, manual_dir), make_example(photo, lab, inst)
