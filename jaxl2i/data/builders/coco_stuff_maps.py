"""`coco_stuff_maps`: COCO-Stuff 2017 label and instance maps + photos, as
SPADE reads them (its datasets/coco_stuff layout).

Built from files in `manual_dir` (nothing is downloaded), from either source:
(a) SPADE's prepared folders (preferred when present): `train_img/<id>.jpg`,
    `train_label/<id>.png`, `train_inst/<id>.png`, and the same with `val_`
    for the validation split (built only if `val_label/` exists). Examples
    are the label PNGs, sorted; the instance PNG is stored as it is (8-bit
    in SPADE's files). `*_portrait` folders are not read.
(b) the official files: `stuffthingmaps_trainval2017/{train2017,val2017}/
    <id>.png` (stuffthingmaps_trainval2017.zip, unzipped INTO a folder of
    that name), `{train2017,val2017}/<id>.jpg` (COCO 2017 images) and
    `annotations/instances_{train,val}2017.json` (annotations_trainval2017.
    zip). Examples are the stuffthingmaps PNGs, sorted. The instance map is
    generated as SPADE's datasets/coco_generate_instance_map.py does:
      inst = the label map (raw values 0..181, 255);
      count = 0; for each annotation of the image in the json's order
      (pycocotools' getAnnIds(imgIds=id, iscrowd=None): crowd included)
      whose segmentation is a polygon list (RLE ones are skipped and do not
      count): for each polygon, the pixels skimage.draw.polygon(y - 1,
      x - 1) returns := count; then count += 1.
    `polygon_fill` reproduces skimage.draw.polygon exactly (integer pixel
    coordinates inside the polygon by the crossing-number test; the
    script's -1 shift moves every instance one pixel up and left), clipped
    to the image (the script passes no shape and would stop with an
    IndexError on a vertex beyond the border). Counts are stored in uint16,
    so images with more than 255 polygon annotations (none in COCO 2017)
    do not wrap around as SPADE's uint8 maps would. No pycocotools needed.

Stored features (labelmap_common): image (JPEG bytes as stored), label
uint8 = the map with 255 ('unlabeled') -> 182 = 'dontcare' (SPADE's
`label[label == 255] = label_nc`), values 0..181 kept (things 0..90 with 11
unused ids, stuff 91..181); instance uint16; file_name = the photo's name.
num_classes 183 (= 182 + dontcare; SPADE's semantic_nc 184 adds the
instance-edge channel), ignore_label 182. Class names: cocostuff labels.txt
(github.com/nightrome/cocostuff), entries 1..182 in order, for label ids
0..181, then 'dontcare'.

info.metadata: num_classes=183, class_names, ignore_label=182,
max_objects=0, image_size=None (sizes vary), source ('spade_folders' or
'official'), reference_num_examples.
"""
import collections
import glob
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxl2i.data.builders import labelmap_common as common
from jaxl2i.data.errors import DatasetUnavailableError

NAME = 'coco_stuff_maps'
# cocostuff labels.txt, lines 1..182 (line 0 is 'unlabeled' = our 255).
CLASS_NAMES = tuple((
    'person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic '
    'light,fire hydrant,street sign,stop sign,parking meter,bench,bird,cat,'
    'dog,horse,sheep,cow,elephant,bear,zebra,giraffe,hat,backpack,umbrella,'
    'shoe,eye glasses,handbag,tie,suitcase,frisbee,skis,snowboard,sports '
    'ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis '
    'racket,bottle,plate,wine glass,cup,fork,knife,spoon,bowl,banana,apple,'
    'sandwich,orange,broccoli,carrot,hot dog,pizza,donut,cake,chair,couch,'
    'potted plant,bed,mirror,dining table,window,desk,toilet,door,tv,laptop,'
    'mouse,remote,keyboard,cell phone,microwave,oven,toaster,sink,'
    'refrigerator,blender,book,clock,vase,scissors,teddy bear,hair drier,'
    'toothbrush,hair brush,banner,blanket,branch,bridge,building-other,bush,'
    'cabinet,cage,cardboard,carpet,ceiling-other,ceiling-tile,cloth,clothes,'
    'clouds,counter,cupboard,curtain,desk-stuff,dirt,door-stuff,fence,'
    'floor-marble,floor-other,floor-stone,floor-tile,floor-wood,flower,fog,'
    'food-other,fruit,furniture-other,grass,gravel,ground-other,hill,house,'
    'leaves,light,mat,metal,mirror-stuff,moss,mountain,mud,napkin,net,paper,'
    'pavement,pillow,plant-other,plastic,platform,playingfield,railing,'
    'railroad,river,road,rock,roof,rug,salad,sand,sea,shelf,sky-other,'
    'skyscraper,snow,solid-other,stairs,stone,straw,structural-other,table,'
    'tent,textile-other,towel,tree,vegetable,wall-brick,wall-concrete,'
    'wall-other,wall-panel,wall-stone,wall-tile,wall-wood,water-other,'
    'waterdrops,window-blind,window-other,wood').split(',')) + ('dontcare',)
NUM_LABELS = 182       # SPADE's label_nc
UNLABELED = 255        # in the official and SPADE label PNGs
DONTCARE = NUM_LABELS  # stored id of UNLABELED
NUM_CLASSES = NUM_LABELS + 1

_COCO = 'http://images.cocodataset.org/'
STUFFTHINGMAPS_URL = ('http://calvin.inf.ed.ac.uk/wp-content/uploads/data/'
                      'cocostuffdataset/stuffthingmaps_trainval2017.zip')
ANNOTATIONS_URL = _COCO + 'annotations/annotations_trainval2017.zip'
SPADE_URL = 'https://github.com/NVlabs/SPADE (datasets/coco_stuff layout)'
MAPS = 'stuffthingmaps_trainval2017'
SPLITS = {'train': ('train', 'train2017'), 'validation': ('val', 'val2017')}
SPADE_REQUIRED = {f'train_{k}/': SPADE_URL for k in ('img', 'label', 'inst')}
OFFICIAL_REQUIRED = {}
for _split, (_short, _year) in SPLITS.items():
  OFFICIAL_REQUIRED[f'{MAPS}/{_year}/'] = STUFFTHINGMAPS_URL
  OFFICIAL_REQUIRED[f'{_year}/'] = f'{_COCO}zips/{_year}.zip'
  OFFICIAL_REQUIRED[f'annotations/instances_{_year}.json'] = ANNOTATIONS_URL
HOW = ('Either put SPADE\'s prepared folders train_img/, train_label/, '
       'train_inst/ (and val_*) into {where}, or the official files: unzip '
       'train2017.zip, val2017.zip and annotations_trainval2017.zip into '
       '{where}, and stuffthingmaps_trainval2017.zip into {where}/' + MAPS +
       ' (`unzip stuffthingmaps_trainval2017.zip -d {where}/' + MAPS + '`); '
       'then build again.')
MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'{NAME} reads either (a) SPADE\'s prepared COCO-Stuff folders '
    'train_img/ train_label/ train_inst/ [val_img/ val_label/ val_inst/] or '
    f'(b) the official files: {STUFFTHINGMAPS_URL} unzipped into '
    f'<manual_dir>/{MAPS}/, {_COCO}zips/train2017.zip and val2017.zip and '
    f'{ANNOTATIONS_URL} unzipped into <manual_dir>.')


def to_spade_label(raw: np.ndarray) -> np.ndarray:
  """Label PNG values 0..181, 255 -> uint8 0..181, 182 (dontcare)."""
  return np.where(raw == UNLABELED, DONTCARE, raw).astype(np.uint8)


def polygon_fill(r, c, shape) -> tuple[np.ndarray, np.ndarray]:
  """skimage.draw.polygon(r, c, shape), vectorised (same float64 maths).

  Pixel (i, j) of the clipped bounding box [max(0, int(min)), ceil(max)] is
  inside when a ray towards +col crosses the polygon's edges an odd number
  of times, an edge (k-1, k) counting when y_k <= i < y_{k-1} or
  y_{k-1} <= i < y_k and j < (x_{k-1} - x_k)(i - y_k)/(y_{k-1} - y_k) + x_k.
  """
  r = np.asarray(r, np.float64)
  c = np.asarray(c, np.float64)
  minr, maxr = int(max(0, r.min())), min(shape[0] - 1, int(np.ceil(r.max())))
  minc, maxc = int(max(0, c.min())), min(shape[1] - 1, int(np.ceil(c.max())))
  if maxr < minr or maxc < minc:
    return np.zeros(0, np.intp), np.zeros(0, np.intp)
  y = np.arange(minr, maxr + 1, dtype=np.float64)[:, None]  # [R, 1]
  yi, xi, yj, xj = r, c, np.roll(r, 1), np.roll(c, 1)  # edge (j=i-1, i)
  hit = ((yi <= y) & (y < yj)) | ((yj <= y) & (y < yi))  # [R, E]
  with np.errstate(divide='ignore', invalid='ignore'):
    x_cross = (xj - xi) * (y - yi) / (yj - yi) + xi
  # Integer column j counts a crossing iff j < x_cross iff j < ceil(x_cross).
  n_cols = maxc - minc + 1
  k = np.clip(np.ceil(np.where(hit, x_cross, minc)) - minc, 0, n_cols)
  hist = np.zeros((y.shape[0], n_cols + 1), np.int64)
  rows = np.broadcast_to(np.arange(y.shape[0])[:, None], hit.shape)
  np.add.at(hist, (rows[hit], k[hit].astype(np.intp)), 1)
  crossings = hist.sum(1, keepdims=True) - np.cumsum(hist, 1)[:, :n_cols]
  rr, cc = np.nonzero(crossings % 2 == 1)
  return rr + minr, cc + minc


def spade_instance_map(raw_label: np.ndarray, polygon_anns) -> np.ndarray:
  """coco_generate_instance_map.py on one image (module docstring).

  Args:
    raw_label: int [H,W] label PNG values (0..181, 255).
    polygon_anns: the image's polygon-list segmentations, json order.
  Returns:
    int64 [H,W].
  """
  inst = np.array(raw_label, np.int64)
  for count, polygons in enumerate(polygon_anns):
    for poly in polygons:
      xy = np.asarray(poly, np.float64).reshape(-1, 2)
      rr, cc = polygon_fill(xy[:, 1] - 1, xy[:, 0] - 1, inst.shape)
      inst[rr, cc] = count
  return inst


def detect_source(manual_dir: str) -> str:
  """'spade_folders' or 'official'; raises naming what is missing."""
  spade = common.missing_required(manual_dir, SPADE_REQUIRED)
  if not spade:
    return 'spade_folders'
  official = common.missing_required(manual_dir, OFFICIAL_REQUIRED)
  if not official:
    return 'official'
  if len(spade) < len(SPADE_REQUIRED):  # some SPADE folders are there
    parts = [(' (SPADE folders)', spade, SPADE_REQUIRED)]
  elif len(official) < len(OFFICIAL_REQUIRED):  # some official files are
    parts = [(' (official files)', official, OFFICIAL_REQUIRED)]
  else:
    parts = [(' (SPADE folders)', spade, SPADE_REQUIRED),
             (' (official files)', official, OFFICIAL_REQUIRED)]
  lines = [common.required_message(NAME + what, manual_dir, missing, req)
           for what, missing, req in parts]
  raise DatasetUnavailableError('\n'.join(
      lines + [HOW.format(where=common.where(manual_dir))]))


def spade_examples(manual_dir: str, short: str) -> list[tuple]:
  """[(image, label, inst, None)] of SPADE's <short>_{img,label,inst}/."""
  labels = sorted(glob.glob(os.path.join(manual_dir, f'{short}_label',
                                         '*.png')))
  if not labels:
    raise common.missing_list_error(
        NAME, 'label map(s)', [f'{short}_label/*.png'],
        f'{short}_label/ holds no PNG label maps.')
  out, missing = [], []
  for lab in labels:
    stem = os.path.splitext(os.path.basename(lab))[0]
    img = os.path.join(manual_dir, f'{short}_img', stem + '.jpg')
    if not os.path.isfile(img) and os.path.isfile(img[:-4] + '.png'):
      img = img[:-4] + '.png'
    inst = os.path.join(manual_dir, f'{short}_inst', stem + '.png')
    missing += [p for p in (img, inst) if not os.path.isfile(p)]
    out.append((img, lab, inst, None))
  if missing:
    raise common.missing_list_error(
        NAME, 'image(s) / instance map(s) beside the label maps',
        [os.path.relpath(p, manual_dir) for p in missing],
        f'Each {short}_label/<id>.png needs {short}_img/<id>.jpg and '
        f'{short}_inst/<id>.png (SPADE: datasets/coco_generate_instance_map'
        '.py writes the instance maps).')
  return out


def polygons_by_file(json_path: str) -> dict[str, list]:
  """{image file name: [polygon lists of its annotations, json order]}."""
  with open(json_path, 'r') as f:
    data = json.load(f)
  names = {im['id']: im['file_name'] for im in data['images']}
  out = collections.OrderedDict((n, []) for n in names.values())
  for ann in data['annotations']:
    if isinstance(ann.get('segmentation'), list):
      out[names[ann['image_id']]].append(ann['segmentation'])
  return out


def official_examples(manual_dir: str, year: str) -> list[tuple]:
  """[(image, label, None, polygons)] of the official files of one split."""
  polys = polygons_by_file(os.path.join(manual_dir, 'annotations',
                                        f'instances_{year}.json'))
  labels = sorted(glob.glob(os.path.join(manual_dir, MAPS, year, '*.png')))
  out, missing, unknown = [], [], []
  for lab in labels:
    file_name = os.path.splitext(os.path.basename(lab))[0] + '.jpg'
    img = os.path.join(manual_dir, year, file_name)
    if not os.path.isfile(img):
      missing.append(os.path.relpath(img, manual_dir))
    if file_name not in polys:
      unknown.append(file_name)
    out.append((img, lab, None, polys.get(file_name, [])))
  if missing:
    raise common.missing_list_error(
        NAME, 'image(s)', missing,
        f'Unzip {_COCO}zips/{year}.zip into {manual_dir} again.')
  if unknown:
    raise ValueError(f'{len(unknown)} label maps of {MAPS}/{year} have no '
                     f'image in instances_{year}.json, e.g. {unknown[:5]}')
  return out


def make_example(img: str, lab: str, inst: str | None, polygons) -> dict:
  """The stored form of one image (module docstring)."""
  common.check_same_size([img, lab] + ([inst] if inst else []))
  raw = common.read_map(lab)
  common.check_range(raw, NUM_LABELS - 1, lab, extra=(UNLABELED,))
  if inst is not None:
    instance = common.read_map(inst)
  else:
    instance = spade_instance_map(raw, polygons)
  common.check_range(instance, np.iinfo(np.uint16).max, inst or lab)
  data, _ = common.read_image(img)
  return {
      'image': data,
      'label': common.png(to_spade_label(raw)),
      'instance': common.png(instance.astype(np.uint16)),
      'file_name': os.path.basename(img),
  }


class CocoStuffMaps(tfds.core.GeneratorBasedBuilder):
  """COCO-Stuff photos with SPADE-convention label and instance maps."""

  name = NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=common.features(instance=True),
        supervised_keys=None,
        homepage='https://github.com/nightrome/cocostuff',
        metadata=common.metadata(
            class_names=CLASS_NAMES, ignore_label=DONTCARE,
            image_size_hw=None, source=None,
            reference_num_examples={'train': 118287, 'validation': 5000}),
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager)
    source = detect_source(manual_dir)
    self.info.metadata['source'] = source
    examples = {}
    for split, (short, year) in SPLITS.items():
      if source == 'official':
        examples[split] = official_examples(manual_dir, year)
      elif split == 'train' or os.path.isdir(
          os.path.join(manual_dir, f'{short}_label')):
        examples[split] = spade_examples(manual_dir, short)
    return {split: self._generate_examples(exs)
            for split, exs in examples.items()}

  def _generate_examples(self, examples):
    for img, lab, inst, polygons in examples:
      yield os.path.basename(lab), make_example(img, lab, inst, polygons)
