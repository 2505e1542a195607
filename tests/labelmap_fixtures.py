"""Tiny Cityscapes / ADE20K / COCO-Stuff files in the official formats.

Used by tests/test_labelmap_builders.py. Each writer fills a manual_dir the
way unzipping the official archives does and returns what the builder must
store, per split and file name.
"""
import json
import math
import os
import zlib

import numpy as np
from PIL import Image

rng_of = np.random.default_rng


def _save(path, array_or_image, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = (array_or_image if isinstance(array_or_image, Image.Image)
         else Image.fromarray(array_or_image))
  img.save(path, **kw)


def _photo(seed, h, w):
  return rng_of(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------- Cityscapes ----
CITY_H, CITY_W = 16, 32
# (folder, city, seq, frame); the coarse config adds train_extra.
CITY_FRAMES = {
    'train': [('aachen', 0, 19), ('bremen', 12, 19)],
    'val': [('frankfurt', 294, 19)],
    'train_extra': [('augsburg', 0, 7)],
}


def city_maps(seed):
  """(labelIds uint8, instanceIds uint16) as cityscapesScripts writes them.

  Stuff pixels hold their class id; thing pixels (24..33) id*1000+k, except
  the right quarter, a 'cargroup' region with the plain id 26.
  """
  rng = rng_of(seed)
  label = rng.integers(0, 34, (CITY_H, CITY_W)).astype(np.uint8)
  label[0, 0] = 0  # 'unlabeled' is an ordinary class
  label[0, 1] = 33
  inst = label.astype(np.uint16)
  things = label >= 24
  inst[things] = label[things].astype(np.uint16) * 1000 + rng.integers(
      0, 3, things.sum()).astype(np.uint16)
  label[:, -8:] = 26
  inst[:, -8:] = 26
  return label, inst


def write_cityscapes(root, gt='gtFine', folders=('train', 'val')):
  """Writes leftImg8bit/ and <gt>/ for `folders`; returns {folder: {photo
  base name: (image, label, instance)}}."""
  out = {}
  for f in folders:
    out[f] = {}
    for k, (city, seq, frame) in enumerate(CITY_FRAMES[f]):
      stem = f'{city}_{seq:06d}_{frame:06d}'
      seed = zlib.crc32(f'{gt}/{f}/{k}'.encode())
      image = _photo(seed, CITY_H, CITY_W)
      label, inst = city_maps(seed)
      photo = f'{stem}_leftImg8bit.png'
      _save(os.path.join(root, 'leftImg8bit', f, city, photo), image)
      base = os.path.join(root, gt, f, city, f'{stem}_{gt}_')
      _save(base + 'labelIds.png', label)
      _save(base + 'instanceIds.png', inst)  # 16-bit grayscale PNG
      # Other official files of the packages, never read.
      _save(base + 'color.png', np.zeros((CITY_H, CITY_W, 4), np.uint8))
      with open(base + 'polygons.json', 'w') as fh:
        json.dump({'imgHeight': CITY_H, 'imgWidth': CITY_W,
                   'objects': []}, fh)
      out[f][photo] = (image, label, inst)
  # The test split (all labels 'unlabeled' in the packages) is not built.
  stem = 'berlin_000000_000019'
  _save(os.path.join(root, 'leftImg8bit', 'test', 'berlin',
                     f'{stem}_leftImg8bit.png'), _photo(9, CITY_H, CITY_W))
  _save(os.path.join(root, gt, 'test', 'berlin', f'{stem}_{gt}_labelIds.png'),
        np.zeros((CITY_H, CITY_W), np.uint8))
  return out


# -------------------------------------------------------------- ADE20K ----
ADE = 'ADEChallengeData2016'
# (file stem, (H, W), JPEG mode) per folder.
ADE_IMAGES = {
    'training': [('ADE_train_00000001', (20, 24), 'RGB'),
                 ('ADE_train_00000002', (18, 26), 'L')],
    'validation': [('ADE_val_00000001', (22, 20), 'RGB')],
}
# objectInfo150.txt as shipped: tabs, ', '-separated synonyms, stray spaces.
_ADE_INFO_ROWS = {1: '1\t0.1576\t11664\t1172\twall',
                  2: '2\t0.1072\t6046\t612\tbuilding, edifice',
                  8: '8\t0.0231\t1906\t199\tbed ',
                  22: '22 \t0.0074\t709\t75\twater',
                  150: '150\t0.0002\t421\t56\tflag'}


def write_object_info(root):
  lines = ['Idx\tRatio\tTrain\tVal\tName']
  for i in range(1, 151):
    lines.append(_ADE_INFO_ROWS.get(i, f'{i}\t0.0010\t10\t1\tobj{i}; '
                                       f'synonym{i}'))
  with open(os.path.join(root, ADE, 'objectInfo150.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_ade(root, n_extra_train=0):
  """Writes ADEChallengeData2016/; returns {folder: {file name: (image as
  PIL decodes it, raw annotation)}}."""
  images = {k: list(v) for k, v in ADE_IMAGES.items()}
  images['training'] += [(f'ADE_train_{i:08d}', (8, 8), 'RGB')
                         for i in range(3, 3 + n_extra_train)]
  out = {}
  for folder, items in images.items():
    out[folder] = {}
    for k, (stem, (h, w), mode) in enumerate(items):
      seed = 100 * len(folder) + k
      path = os.path.join(root, ADE, 'images', folder, stem + '.jpg')
      _save(path, Image.fromarray(_photo(seed, h, w)).convert(mode),
            format='JPEG', quality=90)
      ann = rng_of(seed).integers(0, 151, (h, w)).astype(np.uint8)
      ann[0, :3] = (0, 1, 150)
      _save(os.path.join(root, ADE, 'annotations', folder, stem + '.png'),
            ann)
      image = np.asarray(Image.open(path).convert('RGB'))
      out[folder][stem + '.jpg'] = (image, ann)
  write_object_info(root)
  return out


def write_ade_depth(root):
  """Pseudo-depth maps in the three accepted forms; returns {file name:
  float64 map at label size before normalisation, or 'resize' info}."""
  d = os.path.join(root, 'depth')
  rng = rng_of(7)
  png = rng.integers(1000, 50000, (20, 24)).astype(np.uint16)
  _save(os.path.join(d, 'training', 'ADE_train_00000001.png'), png)
  # A .npy of the same stem loses to the .png (first found: .png, .npy).
  np.save(os.path.join(d, 'training', 'ADE_train_00000001.npy'),
          np.zeros((20, 24), np.float32))
  # monodepth2's test_simple.py output: [1, 1, h, w] disparity, here at
  # half the label size (resized by the builder).
  disp = rng.uniform(0.01, 10.0, (1, 1, 9, 13)).astype(np.float32)
  np.save(os.path.join(d, 'training', 'ADE_train_00000002_disp.npy'), disp)
  os.makedirs(os.path.join(d, 'validation'), exist_ok=True)
  np.save(os.path.join(d, 'validation', 'ADE_val_00000001.npy'),
          np.full((22, 20), 3.5, np.float64))  # constant -> all 0
  return {'ADE_train_00000001.jpg': png.astype(np.float64),
          'ADE_train_00000002.jpg': disp[0, 0].astype(np.float64),
          'ADE_val_00000001.jpg': np.full((22, 20), 3.5)}


# ---------------------------------------------------------- COCO-Stuff ----
MAPS = 'stuffthingmaps_trainval2017'


def skimage_polygon(r, c, shape):
  """Literal transliteration of skimage.draw._draw._polygon (reference)."""
  minr, maxr = int(max(0, r.min())), int(math.ceil(r.max()))
  minc, maxc = int(max(0, c.min())), int(math.ceil(c.max()))
  maxr, maxc = min(shape[0] - 1, maxr), min(shape[1] - 1, maxc)
  rr, cc = [], []
  for ri in range(minr, maxr + 1):
    for ci in range(minc, maxc + 1):
      y, x, inside, j = float(ri), float(ci), False, len(r) - 1
      for i in range(len(r)):
        if (((r[i] <= y < r[j]) or (r[j] <= y < r[i]))
            and x < (c[j] - c[i]) * (y - r[i]) / (r[j] - r[i]) + c[i]):
          inside = not inside
        j = i
      if inside:
        rr.append(ri)
        cc.append(ci)
  return np.array(rr, np.intp), np.array(cc, np.intp)


def _rect(x0, y0, x1, y1):
  return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


# Per image: (file id, (H, W), annotations as (segmentation, iscrowd)).
_COCO_IMAGES = {
    'train2017': [
        (101, (20, 30), [
            ([_rect(3, 2, 10, 8)], 0),                         # count 0
            ({'size': [20, 30], 'counts': [0, 600]}, 1),       # RLE: skipped
            ([_rect(20, 10, 26, 15), _rect(1, 15, 4, 19)], 0),  # count 1
            ([[12.5, 0.0, 18.0, 9.7, 8.2, 9.0]], 0),           # count 2
            ([_rect(25, 12, 31, 21)], 1),         # crowd polygon: count 3
        ]),
        (102, (16, 24), []),  # no annotations: instance = label
        (103, (10, 10), [([_rect(2, 2, 6, 6)], 0), ([_rect(5, 5, 9, 9)], 0)]),
    ],
    'val2017': [(201, (12, 18), [([_rect(0, 0, 5, 5)], 0)])],
}


def write_coco_official(root):
  """stuffthingmaps + images + instances json; returns {split folder:
  {file name: (raw label, expected instance)}}."""
  out = {}
  next_ann = 1
  for year, images in _COCO_IMAGES.items():
    out[year] = {}
    recs, anns = [], []
    for image_id, (h, w), image_anns in images:
      name = f'{image_id:012d}'
      rng = rng_of(image_id)
      label = rng.choice(np.r_[0:182, 255], (h, w)).astype(np.uint8)
      label[0, 0], label[-1, -1] = 255, 181
      _save(os.path.join(root, MAPS, year, name + '.png'), label)
      _save(os.path.join(root, year, name + '.jpg'), _photo(image_id, h, w),
            format='JPEG', quality=90)
      recs.append({'id': image_id, 'file_name': name + '.jpg', 'width': w,
                   'height': h})
      inst = label.astype(np.int64)
      count = 0
      for seg, crowd in image_anns:
        anns.append({'id': next_ann, 'image_id': image_id, 'category_id': 1,
                     'segmentation': seg, 'iscrowd': crowd, 'area': 1.0,
                     'bbox': [0.0, 0.0, 1.0, 1.0]})
        next_ann += 1
        if isinstance(seg, list):
          for poly in seg:
            xy = np.array(poly).reshape(-1, 2)
            rr, cc = skimage_polygon(xy[:, 1] - 1, xy[:, 0] - 1, (h, w))
            inst[rr, cc] = count
          count += 1
      out[year][name + '.jpg'] = (label, inst)
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    with open(os.path.join(root, 'annotations',
                           f'instances_{year}.json'), 'w') as f:
      json.dump({'images': recs, 'annotations': _interleave(anns),
                 'categories': [{'id': 1, 'name': 'person'}]}, f)
  return out


def _interleave(anns):
  """Round robin over images (the official files are not grouped by
  image), keeping each image's own order."""
  by_img = {}
  for a in anns:
    by_img.setdefault(a['image_id'], []).append(a)
  out = []
  while any(by_img.values()):
    for k in sorted(by_img, reverse=True):
      if by_img[k]:
        out.append(by_img[k].pop(0))
  return out
