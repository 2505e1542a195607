"""Tiny COCO 2017 / COCO-Stuff / Visual Genome files in the official formats.

Used by tests/test_layout_builders.py. Each writer fills a manual_dir the way
unzipping the official archives does and returns what the tests expect.
COCO boxes and masks are axis-aligned rectangles [x0,x1) x [y0,y1) so the
expected maps can be painted by hand with numpy.
"""
import glob
import json
import os
import shutil

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# ----------------------------------------------------------------- COCO ----
W, H = 50, 40  # default image size: box area must exceed 0.02 * 2000 = 40
INSTANCE_CATS = [(1, 'person'), (3, 'car'), (17, 'cat'), (18, 'dog')]
STUFF_CATS = [(124, 'grass'), (157, 'sky-other'), (169, 'tree'),
              (183, 'other')]


def write_image(path, w, h, seed, mode='RGB'):
  """A random JPEG of size w x h (mode 'RGB', 'L' or 'CMYK')."""
  rng = np.random.default_rng(seed)
  arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  img = Image.fromarray(arr).convert(mode)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img.save(path, format='JPEG', quality=90)


def rect_mask(w, h, x0, y0, x1, y1):
  m = np.zeros((h, w), np.uint8)
  m[y0:y1, x0:x1] = 1
  return m


def uncompressed_rle(mask):
  """COCO's uncompressed RLE: column-major run lengths, zeros first."""
  flat = np.asarray(mask, np.uint8).flatten(order='F')
  counts, cur, run = [], 0, 0
  for v in flat:
    if v != cur:
      counts.append(run)
      cur, run = v, 0
    run += 1
  counts.append(run)
  return {'size': list(mask.shape), 'counts': counts}


def compressed_rle(mask):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {'size': list(rle['size']), 'counts': rle['counts'].decode('ascii')}


class _Coco:
  """Accumulates images and annotations of one split."""

  def __init__(self):
    self.images, self.inst, self.stuff = [], [], []
    self.next_id = 1

  def image(self, image_id, w=W, h=H):
    self.images.append({'id': image_id, 'file_name': f'{image_id:012d}.jpg',
                        'width': w, 'height': h, 'license': 1})

  def ann(self, image_id, cat, rect, *, kind='poly', stuff=False, crowd=0,
          size=(W, H), area=None):
    """rect = (x0, y0, x1, y1); kind: 'poly', 'rle' (uncompressed), 'crle'."""
    w, h = size
    x0, y0, x1, y1 = rect
    m = rect_mask(w, h, *rect)
    if kind == 'poly':
      seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    elif kind == 'rle':
      seg = uncompressed_rle(m)
    else:
      seg = compressed_rle(m)
    a = {'id': self.next_id, 'image_id': image_id, 'category_id': cat,
         'segmentation': seg, 'area': float(m.sum() if area is None else area),
         'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
         'iscrowd': crowd}
    self.next_id += 1
    (self.stuff if stuff else self.inst).append(a)
    return a

  def dump(self, root, split, inst_cats=None, stuff_cats=None):
    ann_dir = os.path.join(root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    info = {'description': 'tiny fixture', 'year': 2017}
    cats_i = [{'id': i, 'name': n, 'supercategory': 'thing'}
              for i, n in inst_cats or INSTANCE_CATS]
    cats_s = [{'id': i, 'name': n, 'supercategory': 'stuff'}
              for i, n in stuff_cats or STUFF_CATS]
    for name, anns, cats in (('instances', self.inst, cats_i),
                             ('stuff', self.stuff, cats_s)):
      # Interleave images (the official files are not grouped by image),
      # keeping each image's own order.
      by_img = {}
      for a in anns:
        by_img.setdefault(a['image_id'], []).append(a)
      mixed = []
      while any(by_img.values()):
        for k in sorted(by_img, reverse=True):
          if by_img[k]:
            mixed.append(by_img[k].pop(0))
      with open(os.path.join(ann_dir, f'{name}_{split}2017.json'), 'w') as f:
        json.dump({'info': info, 'licenses': [], 'images': self.images,
                   'annotations': mixed, 'categories': cats}, f)


def _good(c, image_id, n, size=(W, H)):
  """n kept 10x10 polygon objects (box area 100 > 40) of class `car`."""
  for j in range(n):
    x = 2 + 5 * j % (size[0] - 12)
    c.ann(image_id, 3, (x, 2, x + 10, 12), size=size)


def write_coco(root):
  """Synthetic COCO 2017 files exercising each filtering rule.

  Returns {'train': [kept ids], 'validation': [kept ids]}; image 101 is the
  hand-checked one (see test_layout_builders.py).
  """
  tr, va = _Coco(), _Coco()
  # 101: 4 kept objects, every segmentation kind, every dropped kind.
  tr.image(101)
  tr.ann(101, 18, (20, 10, 35, 30), kind='rle')                 # dog, slot 0
  tr.ann(101, 1, (5, 5, 25, 25))                                # person, 1
  tr.ann(101, 3, (0, 12, 5, 17))                    # car 25 px: too small
  tr.ann(101, 1, (0, 0, 50, 10), kind='rle', crowd=1)           # crowd
  tr.ann(101, 3, (40, 10, 48, 15))           # car 8x5 = 40 px: == 0.02
  tr.ann(101, 157, (0, 0, 50, 8), kind='crle', stuff=True)      # sky, 2
  tr.ann(101, 183, (5, 5, 25, 25), kind='crle', stuff=True)     # other
  tr.ann(101, 124, (0, 22, 50, 40), kind='crle', stuff=True)    # grass, 3
  # 102: 4 good objects but no stuff annotation -> not in the stuff file.
  tr.image(102)
  _good(tr, 102, 4)
  # 103: 1 + crowd + 1 stuff: 2 without the crowd object.
  tr.image(103)
  _good(tr, 103, 1)
  tr.ann(103, 1, (0, 20, 30, 40), kind='rle', crowd=1)
  tr.ann(103, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  # 104: 1 + 1 stuff + 'other': 2 without 'other'.
  tr.image(104)
  _good(tr, 104, 1)
  tr.ann(104, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  tr.ann(104, 183, (0, 0, 50, 30), kind='crle', stuff=True)
  # 105: 2 + one box at exactly 0.02 of the image.
  tr.image(105)
  _good(tr, 105, 1)
  tr.ann(105, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  tr.ann(105, 17, (20, 20, 28, 25))
  # 106: 2 + a thin object: segmentation area 0.01, box 0.2 -> kept (3).
  tr.image(106)
  _good(tr, 106, 1)
  tr.ann(106, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  tr.ann(106, 17, (10, 5, 30, 25), area=20.0)
  # 107: exactly 8 objects, another image size (60 x 45).
  tr.image(107, 60, 45)
  _good(tr, 107, 7, size=(60, 45))
  tr.ann(107, 157, (0, 0, 60, 10), kind='crle', stuff=True, size=(60, 45))
  # 108: 9 objects -> too many.
  tr.image(108)
  _good(tr, 108, 8)
  tr.ann(108, 157, (0, 0, 50, 10), kind='crle', stuff=True)
  # 109: exactly 3 (1 instance + 2 stuff), grayscale JPEG.
  tr.image(109)
  _good(tr, 109, 1)
  tr.ann(109, 157, (0, 0, 50, 10), kind='crle', stuff=True)
  tr.ann(109, 169, (0, 30, 50, 40), kind='crle', stuff=True)
  # 110: 2 objects -> too few.
  tr.image(110)
  _good(tr, 110, 1)
  tr.ann(110, 157, (0, 0, 50, 10), kind='crle', stuff=True)
  # Validation: 201 kept (3), 202 too few, 203 no stuff.
  for image_id, n_inst, n_stuff in ((201, 2, 1), (202, 1, 0), (203, 3, 0)):
    va.image(image_id)
    _good(va, image_id, n_inst)
  va.ann(201, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  va.ann(202, 124, (0, 30, 50, 40), kind='crle', stuff=True)
  va.ann(202, 183, (0, 0, 50, 30), kind='crle', stuff=True)
  tr.images.insert(0, tr.images.pop())  # file order is not id order
  tr.dump(root, 'train')
  va.dump(root, 'val')
  modes = {106: 'CMYK', 109: 'L'}
  for split, c in (('train2017', tr), ('val2017', va)):
    for im in c.images:
      write_image(os.path.join(root, split, im['file_name']), im['width'],
                  im['height'], im['id'], modes.get(im['id'], 'RGB'))
  return {'train': [101, 106, 107, 109], 'validation': [201]}


def write_coco_from_samples(root, samples_dir, val_ids=()):
  """COCO-format files derived from SPADE's COCO-Stuff sample maps.

  Things (label 0..90 = COCO id - 1) become one instance annotation per
  (label, instance value) region, stuff labels (91..181) one stuff
  annotation per class, thing pixels one 'other' (183) annotation, all as
  compressed RLE with their mask's bounding box, as in the official files.

  Returns:
    {image id: (split, [(category id, mask)] in the loader's order)}.
  """
  entries = {'train': _Coco(), 'val': _Coco()}
  cats_seen = set()
  out = {}
  for path in sorted(glob.glob(os.path.join(samples_dir, 'train_img',
                                            '*.jpg'))):
    name = os.path.basename(path)[:-4]
    image_id = int(name)
    label = np.array(Image.open(os.path.join(samples_dir, 'train_label',
                                             name + '.png')))
    inst = np.array(Image.open(os.path.join(samples_dir, 'train_inst',
                                            name + '.png')))
    h, w = label.shape
    split = 'val' if image_id in val_ids else 'train'
    c = entries[split]
    c.image(image_id, w, h)
    objs = []
    thing = label <= 90
    for v, i in sorted({(int(a), int(b)) for a, b in
                        zip(label[thing], inst[thing])}):
      objs.append((v + 1, (label == v) & (inst == i), False))
    for v in sorted(set(np.unique(label[~thing]).tolist()) - {255}):
      objs.append((v + 1, label == v, True))
    if thing.any():
      objs.append((183, thing, True))
    for cat, m, stuff in objs:
      rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
      x, y, bw, bh = mask_utils.toBbox(rle).tolist()
      a = {'id': c.next_id, 'image_id': image_id, 'category_id': cat,
           'segmentation': {'size': [h, w],
                            'counts': rle['counts'].decode('ascii')},
           'area': float(m.sum()), 'bbox': [x, y, bw, bh], 'iscrowd': 0}
      c.next_id += 1
      (c.stuff if stuff else c.inst).append(a)
      cats_seen.add(cat)
    dest = os.path.join(root, f'{split}2017', f'{image_id:012d}.jpg')
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(path, dest)
    out[image_id] = (split, [(cat, m) for cat, m, _ in objs])
  inst_cats = [(i, f'thing{i}') for i in sorted(cats_seen) if i <= 91]
  stuff_cats = [(i, f'stuff{i}') for i in sorted(cats_seen)
                if 91 < i < 183] + [(183, 'other')]
  for split, c in entries.items():
    c.dump(root, split, inst_cats, stuff_cats)
  return out


# ------------------------------------------------------- Visual Genome ----
def _vg_obj(oid, names, x, y, w, h):
  return {'object_id': oid, 'x': x, 'y': y, 'w': w, 'h': h, 'names': names,
          'synsets': [f'{names[0]}.n.01']}


def _vg_rel(rid, pred, s, o):
  end = lambda obj: {k: obj[k] for k in ('object_id', 'x', 'y', 'w', 'h',
                                         'names')}
  return {'relationship_id': rid, 'predicate': pred, 'synsets': [],
          'subject': end(s), 'object': end(o)}


def write_vg(root):
  """Tiny VG 1.4 files + sg2im split file exercising every rule.

  Returns what the 'tiny' config must produce.
  """
  images, objects, rels = [], [], []
  next_rid = [1]

  def image(image_id, w, h, objs, rel_specs, folder='VG_100K'):
    images.append({'image_id': image_id, 'width': w, 'height': h,
                   'url': f'https://cs.stanford.edu/people/rak248/{folder}/'
                          f'{image_id}.jpg', 'coco_id': None,
                   'flickr_id': None})
    objects.append({'image_id': image_id, 'objects': objs})
    by_id = {o['object_id']: o for o in objs}
    rr = []
    for pred, s, o in rel_specs:
      rr.append(_vg_rel(next_rid[0], pred, by_id[s], by_id[o]))
      next_rid[0] += 1
    rels.append({'image_id': image_id, 'relationships': rr})
    write_image(os.path.join(root, folder, f'{image_id}.jpg'), w, h, image_id)

  o = _vg_obj
  # T1: 4 kept (o14 is 31 px wide), 'ON' -> 'on', 'near'; o15 an orphan.
  image(1, 300, 200, [o(11, ['man'], 10, 10, 50, 80),
                      o(12, ['tree'], 100, 20, 60, 100),
                      o(13, ['dog'], 200, 100, 40, 40),
                      o(14, ['shirt'], 20, 30, 31, 40),
                      o(15, ['tree'], 150, 120, 40, 40)],
        [('ON', 11, 12), ('near', 13, 12)], folder='VG_100K_2')
  # T2: alias 'men', first vocabulary name of ['rare', 'dog'], a box past
  # the image border; 'has' is too rare a predicate.
  image(2, 250, 250, [o(21, ['men'], 0, 0, 100, 100),
                      o(22, ['rare', 'dog'], 120, 10, 50, 50),
                      o(23, ['tree'], 10, 120, 60, 60),
                      o(24, ['shirt'], 220, 220, 40, 40)],
        [('on top of', 22, 23), ('has', 21, 24)])
  # T3: 2 kept objects -> too few.
  image(3, 220, 300, [o(31, ['man'], 0, 0, 50, 50),
                      o(32, ['shirt'], 60, 60, 50, 50),
                      o(33, ['rare'], 100, 100, 50, 50)], [('on', 31, 32)])
  # T4: 3 kept objects, its relationship points at a too small one.
  image(4, 300, 300, [o(41, ['man'], 0, 0, 50, 50),
                      o(42, ['dog'], 60, 60, 50, 50),
                      o(43, ['tree'], 100, 100, 50, 50),
                      o(44, ['shirt'], 100, 100, 50, 20)], [('on', 41, 44)])
  # T5: smaller side 199 px -> removed before any counting.
  image(5, 199, 300, [o(50 + j, ['big'], 0, 0, 50, 50) for j in range(5)],
        [('has', 50, 51), ('has', 52, 53)])
  # T6: 31 objects -> too many.
  image(6, 400, 300, [o(600 + j, ['car'], j, j, 40, 40) for j in range(31)],
        [('on', 600, 601)])
  # T7: 31 relationships -> too many.
  image(7, 300, 300, [o(71, ['man'], 0, 0, 50, 50),
                      o(72, ['man'], 60, 60, 50, 50),
                      o(73, ['tree'], 100, 100, 50, 50),
                      o(74, ['puppy'], 10, 100, 50, 50)],  # alias of dog
        [('near', 71, 72)] * 31)
  # Validation: 'on' matches the vocabulary; 'ON' is not normalised there.
  for image_id, pred in ((101, 'on'), (102, 'ON')):
    b = 10 * image_id
    image(image_id, 300, 200, [o(b + 1, ['man'], 0, 0, 50, 50),
                               o(b + 2, ['tree'], 60, 60, 50, 50),
                               o(b + 3, ['dog'], 100, 100, 50, 50)],
          [(pred, b + 1, b + 3)])
  # Test split.
  image(201, 240, 260, [o(2011, ['man'], 0, 0, 50, 50),
                        o(2012, ['tree'], 60, 60, 50, 50),
                        o(2013, ['dog'], 100, 100, 50, 50),
                        o(2014, ['shirt'], 150, 150, 50, 50)],
        [('near', 2014, 2012)])
  files = {'image_data.json': images, 'objects.json': objects,
           'relationships.json': rels,
           'vg_splits.json': {'train': [1, 2, 3, 4, 5, 6, 7],
                              'val': [101, 102], 'test': [201]}}
  for name, data in files.items():
    with open(os.path.join(root, name), 'w') as f:
      json.dump(data, f)
  with open(os.path.join(root, 'object_alias.txt'), 'w') as f:
    f.write('man,men\ndog,puppy\nsurfboard,surf board\n')
  with open(os.path.join(root, 'relationship_alias.txt'), 'w') as f:
    f.write('on,on top of,on top\n')
  return {
      'class_names': ['__image__', 'car', 'man', 'tree', 'dog', 'shirt'],
      'predicate_names': ['__in_image__', 'on', 'near'],
      'splits': {'train': [1, 2], 'validation': [101], 'test': [201]},
  }
