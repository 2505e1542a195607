"""coco_stuff_layout and visual_genome_layout built from tiny official files."""
import io
import os

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i import config_lib
from jaxl2i.data import DatasetUnavailableError
from jaxl2i.data import layout_ops  # pylint: disable=unused-import
from jaxl2i.data import ops
from jaxl2i.data import pipeline
from jaxl2i.data.builders import coco_stuff_layout
from jaxl2i.data.builders import visual_genome_layout
import layout_fixtures as fx

pytestmark = pytest.mark.filterwarnings(  # pycocotools vs numpy 2
    'ignore:__array__ implementation:DeprecationWarning')

REAL_VAL_IDS = (17914, 203744, 580986)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DL = dict(try_download_gcs=False)


def _build(name, manual_dir, data_dir):
  b = tfds.builder(name, data_dir=data_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, **_DL))
  return tfds.builder(name, data_dir=data_dir)  # fresh: as read from disk


def _examples(builder, split, **kw):
  ds = builder.as_dataset(split=split, **kw)
  return {int(ex['image_id']): ex for ex in tfds.as_numpy(ds)}


def _decoded(builder, split):
  ds = builder.as_dataset(split=split).map(ops.get_op('decode'))
  return {int(ex['image_id']): ex for ex in tfds.as_numpy(ds)}


def _data_cfg(name, data_dir, manual_dir, pp_train, pp_eval, max_objects):
  return ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, manual_dir=manual_dir,
      train_split='train', eval_split='validation', pp_train=pp_train,
      pp_eval=pp_eval, shuffle_buffer=4, max_objects=max_objects))


# ----------------------------------------------------------- COCO-Stuff ----
@pytest.fixture(scope='module')
def coco(tmp_path_factory):
  root = tmp_path_factory.mktemp('coco')
  manual, data_dir = str(root / 'manual'), str(root / 'tfds')
  kept = fx.write_coco(manual)
  b = _build('coco_stuff_layout', manual, data_dir)
  return dict(manual=manual, data_dir=data_dir, kept=kept, builder=b,
              train=_decoded(b, 'train'), val=_decoded(b, 'validation'))


def test_coco_survivors_of_each_rule(coco):
  # 102 not in the stuff file, 103 crowd, 104 'other', 105 box == 0.02,
  # 108 nine objects, 110 two objects; 106 kept although its
  # segmentation area is < 0.02 (the box counts), 107 has exactly 8, 109 3.
  assert sorted(coco['train']) == coco['kept']['train'] == [101, 106, 107,
                                                             109]
  assert sorted(coco['val']) == [201]  # 202 too few, 203 not in stuff file
  splits = coco['builder'].info.splits
  assert (splits['train'].num_examples, splits['validation'].num_examples) \
      == (4, 1)
  assert [int(coco['train'][i]['num_objects']) for i in (101, 106, 107, 109)
          ] == [4, 3, 8, 3]


def test_coco_classes_order_and_boxes(coco):
  ex = coco['train'][101]
  # Instances in file order (dog before person), then stuff; crowd, tiny,
  # exactly-0.02 and 'other' annotations are gone.
  np.testing.assert_array_equal(ex['classes'], [18, 1, 157, 124])
  np.testing.assert_allclose(ex['boxes'], [[.4, .25, .7, .75],
                                           [.1, .125, .5, .625],
                                           [0., 0., 1., .2],
                                           [0., .55, 1., 1.]], atol=1e-7)
  ex = coco['train'][107]  # 60 x 45 image
  assert ex['image'].shape == (45, 60, 3)
  np.testing.assert_allclose(ex['boxes'][-1], [0, 0, 1, 10 / 45], atol=1e-7)


def test_coco_instance_and_label_maps(coco):
  ex = coco['train'][101]
  inst = np.zeros((fx.H, fx.W), np.int32)
  lab = np.zeros((fx.H, fx.W), np.int32)
  # Painted in object order, later over earlier (person over dog, sky and
  # grass over person); dropped annotations leave no trace.
  for k, (cat, (x0, y0, x1, y1)) in enumerate(
      [(18, (20, 10, 35, 30)), (1, (5, 5, 25, 25)), (157, (0, 0, 50, 8)),
       (124, (0, 22, 50, 40))]):
    inst[y0:y1, x0:x1] = k + 1
    lab[y0:y1, x0:x1] = cat
  np.testing.assert_array_equal(ex['instance'], inst)
  np.testing.assert_array_equal(ex['label'], lab)
  assert ex['instance'][14, 2] == 0 and ex['instance'][12, 44] == 0
  assert ex['instance'].dtype == ex['label'].dtype == np.int32


def test_coco_images_stored_as_given_or_converted(coco):
  raw = _examples(coco['builder'], 'train',
                  decoders={'image': tfds.decode.SkipDecoding()})
  with open(os.path.join(coco['manual'], 'train2017',
                         '000000000101.jpg'), 'rb') as f:
    assert raw[101]['image'] == f.read()  # original JPEG bytes
  path = os.path.join(coco['manual'], 'train2017', '{:012d}.jpg')
  assert raw[106]['image'][:8] == b'\x89PNG\r\n\x1a\n'  # CMYK -> RGB PNG
  np.testing.assert_array_equal(
      coco['train'][106]['image'],
      np.asarray(Image.open(path.format(106)).convert('RGB')))
  # JPEGs decode exactly as PIL (the reference) decodes them.
  for i in (101, 109):  # RGB, grayscale
    np.testing.assert_array_equal(
        coco['train'][i]['image'],
        np.asarray(Image.open(path.format(i)).convert('RGB')))


def test_coco_metadata_and_dataset_meta(coco):
  names = coco['builder'].info.features['classes'].feature.names
  assert len(names) == 184 and names[0] == '__pad__'
  assert (names[1], names[18], names[124], names[183]) == (
      'person', 'dog', 'grass', 'other')
  assert names[2] == 'unused_2' and names[182] == 'unused_182'
  cfg = _data_cfg('coco_stuff_layout', coco['data_dir'], coco['manual'],
                  (), (), None)
  meta = pipeline.dataset_meta(cfg)
  assert meta.num_classes == 184 and meta.class_names == tuple(names)
  assert meta.max_objects == 8 and meta.ignore_label is None
  assert meta.image_size == (None, None)  # images keep their own sizes
  assert dict(meta.num_examples) == {'train': 4, 'validation': 1}


def test_coco_pipeline_batches(coco):
  cfg = _data_cfg('coco_stuff_layout', coco['data_dir'], coco['manual'],
                  ('decode', 'resize(64)', 'random_flip', 'pad_objects(8)'),
                  ('decode', 'resize(64)', 'pad_objects(8)'), 8)
  (b,) = [tfds.as_numpy(x) for x in pipeline.train_dataset(
      cfg, host_batch_size=3, seed=0).take(1)]
  expect = {'image': ((3, 64, 64, 3), np.uint8),
            'label': ((3, 64, 64), np.int32),
            'instance': ((3, 64, 64), np.int32),
            'boxes': ((3, 8, 4), np.float32), 'classes': ((3, 8), np.int32),
            'objects_mask': ((3, 8), bool), 'num_objects': ((3,), np.int32),
            'image_id': ((3,), np.int32)}
  assert set(b) == set(expect)
  for k, (shape, dtype) in expect.items():
    assert b[k].shape == shape and b[k].dtype == dtype, k
  np.testing.assert_array_equal(b['objects_mask'].sum(1), b['num_objects'])
  assert (b['instance'].max(axis=(1, 2)) <= b['num_objects']).all()
  (e,) = [tfds.as_numpy(x) for x in pipeline.eval_dataset(
      cfg, host_batch_size=2)]
  assert e['image'].shape == (2, 64, 64, 3)
  np.testing.assert_array_equal(e['_mask'], [True, False])
  np.testing.assert_array_equal(e['classes'][0], [3, 3, 124, 0, 0, 0, 0, 0])
  assert e['image_id'][0] == 201 and e['num_objects'][0] == 3


def test_coco_layout2im_config_keeps_crowds(coco):
  """coco_stuff_layout/layout2im: Layout2Im's loader has no iscrowd test."""
  b = _build('coco_stuff_layout/layout2im', coco['manual'], coco['data_dir'])
  train = _decoded(b, 'train')
  # 103 (1 + crowd + 1 stuff) now has 3 objects; 101 keeps its crowd person.
  assert sorted(train) == [101, 103, 106, 107, 109]
  np.testing.assert_array_equal(train[101]['classes'], [18, 1, 1, 157, 124])
  np.testing.assert_array_equal(train[103]['classes'], [3, 1, 124])
  assert sorted(_decoded(b, 'validation')) == [201]
  assert b.info.metadata['keep_crowd'] is True
  assert coco['builder'].info.metadata['keep_crowd'] is False
  # Layout2Im's pipeline: PIL-like resize, no flip, objects shuffled on
  # every read (padded slots stay last), fixed seeds at evaluation.
  pp = config_lib.load_module(os.path.join(
      ROOT, 'configs', 'synthetic_layout2im.py')).layout2im_pp(64, 8)
  cfg = _data_cfg('coco_stuff_layout/layout2im', coco['data_dir'],
                  coco['manual'], pp, pp, 8)
  (batch,) = [tfds.as_numpy(x) for x in pipeline.train_dataset(
      cfg, host_batch_size=5, seed=0).take(1)]
  assert set(batch) == {'image', 'boxes', 'classes', 'objects_mask'}
  for i in range(5):
    n = int(batch['objects_mask'][i].sum())
    assert batch['objects_mask'][i, :n].all() and (batch['classes'][i, n:]
                                                   == 0).all()
  ds = pipeline.eval_dataset(cfg, host_batch_size=1)
  orders = {tuple(e['classes'][0]) for _ in range(2)
            for e in tfds.as_numpy(ds)}
  assert len(orders) == 1 and sorted(next(iter(orders))[:3]) == [3, 3, 124]


# ------------------------------------------- COCO-Stuff real samples ----
@pytest.fixture(scope='module')
def samples(shared_dir):
  return os.path.join(shared_dir, 'data', 'coco_stuff_samples')


@pytest.fixture(scope='module')
def coco_real(tmp_path_factory, samples):
  root = tmp_path_factory.mktemp('coco_real')
  manual = str(root / 'manual')
  objs = fx.write_coco_from_samples(manual, samples, REAL_VAL_IDS)
  b = _build('coco_stuff_layout', manual, str(root / 'tfds'))
  return dict(objs=objs, train=_decoded(b, 'train'),
              val=_decoded(b, 'validation'))


def _expected_survivors(objs):
  """{id: [(cat, mask)]} by the reference rules, from the masks alone."""
  out = {}
  for image_id, (split, items) in objs.items():
    kept = []
    for cat, m in items:
      ys, xs = np.nonzero(m)
      box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
      if cat != 183 and box / m.size > 0.02:
        kept.append((cat, m))
    if 3 <= len(kept) <= 8:
      out[image_id] = (split, kept)
  return out


def test_coco_real_samples(coco_real, samples):
  want = _expected_survivors(coco_real['objs'])
  got = {**coco_real['train'], **coco_real['val']}
  assert sorted(got) == sorted(want)
  assert 3 <= len(want) <= len(coco_real['objs']) - 3  # the rules bite
  assert {i for i, (s, _) in want.items() if s == 'val'} == set(
      coco_real['val'])
  for image_id, (_, kept) in want.items():
    ex = got[image_id]
    name = f'{image_id:012d}.png'
    sample_label = np.array(Image.open(os.path.join(samples, 'train_label',
                                                    name)))
    assert ex['image'].shape[:2] == sample_label.shape
    np.testing.assert_array_equal(ex['classes'], [c for c, _ in kept])
    covered = np.zeros(sample_label.shape, bool)
    for k, (cat, m) in enumerate(kept):
      np.testing.assert_array_equal(ex['instance'] == k + 1, m)
      assert (ex['label'][m] == cat).all()
      covered |= m
    assert (ex['instance'][~covered] == 0).all()
    assert (ex['label'][~covered] == 0).all()
    # The painted label map is the sample's (COCO ids = sample ids + 1).
    np.testing.assert_array_equal(ex['label'][covered] - 1,
                                  sample_label[covered])


# --------------------------------------------------------- Visual Genome ----
@pytest.fixture(scope='module')
def vg(tmp_path_factory):
  root = tmp_path_factory.mktemp('vg')
  manual, data_dir = str(root / 'manual'), str(root / 'tfds')
  want = fx.write_vg(manual)
  b = _build('visual_genome_layout/tiny', manual, data_dir)
  return dict(manual=manual, data_dir=data_dir, want=want, builder=b,
              ex={s: _decoded(b, s) for s in ('train', 'validation', 'test')})


def test_vg_vocabularies(vg):
  # Counts: car 31, man 6 (alias men), tree 5, dog 4 (alias puppy), shirt
  # 4 (tie: dog seen first), rare 2 (< 3); 'big' only in the removed 199 px
  # image.
  info = vg['builder'].info
  assert info.features['classes'].feature.names == vg['want']['class_names']
  assert info.metadata['class_names'] == vg['want']['class_names']
  assert info.metadata['num_classes'] == 6
  # on 4 (incl. 'ON' and alias 'on top of'), near 32; 'has' 1 (< 2; the
  # two in the removed image do not count).
  assert info.metadata['predicate_names'] == vg['want']['predicate_names']


def test_vg_survivors_of_each_rule(vg):
  # 3 too few objects, 4 no valid relationship, 5 too small, 6 31 objects,
  # 7 31 relationships; 102's 'ON' is not normalised outside training.
  for split, ids in vg['want']['splits'].items():
    assert sorted(vg['ex'][split]) == ids, split
    assert vg['builder'].info.splits[split].num_examples == len(ids)


def test_vg_objects_order_boxes_and_images(vg):
  t1, t2 = vg['ex']['train'][1], vg['ex']['train'][2]
  # Related objects first (image order), then orphans; o14 (31 px) gone.
  np.testing.assert_array_equal(t1['classes'], [2, 3, 4, 3])
  assert t1['num_in_relations'] == 3 and t1['num_objects'] == 4
  np.testing.assert_allclose(t1['boxes'][0], [10 / 300, 10 / 200, 60 / 300,
                                              90 / 200], rtol=1e-6)
  assert t1['image'].shape == (200, 300, 3)
  # men -> man, ['rare', 'dog'] -> dog; 'has' dropped: related = dog, tree.
  np.testing.assert_array_equal(t2['classes'], [4, 3, 2, 5])
  assert t2['num_in_relations'] == 2
  np.testing.assert_allclose(t2['boxes'][3], [.88, .88, 1.04, 1.04],
                             rtol=1e-6)  # not clipped, as in the reference
  np.testing.assert_array_equal(vg['ex']['validation'][101]['classes'],
                                [2, 4, 3])
  np.testing.assert_array_equal(vg['ex']['test'][201]['classes'],
                                [3, 5, 2, 4])
  assert 'instance' not in t1 and 'label' not in t1


def test_vg_pipeline_with_layout_ops(vg):
  pp = ('decode', 'resize(64)', 'random_flip', 'sg2im_select_objects(10)',
        'add_image_object', 'pad_objects(11)')
  cfg = _data_cfg('visual_genome_layout/tiny', vg['data_dir'], vg['manual'],
                  pp, pp[:3] + ('sg2im_select_objects(10, randomize=False)',)
                  + pp[4:], 11)
  (b,) = [tfds.as_numpy(x) for x in pipeline.train_dataset(
      cfg, host_batch_size=2, seed=1).take(1)]
  assert b['image'].shape == (2, 64, 64, 3)
  assert b['classes'].shape == (2, 11) and b['boxes'].shape == (2, 11, 4)
  assert 'num_in_relations' not in b
  for i in range(2):
    n = b['num_objects'][i]
    assert n == 5 and b['objects_mask'][i].sum() == n  # 4 objects + image
    assert b['classes'][i, n - 1] == 0
    np.testing.assert_array_equal(b['boxes'][i, n - 1], [0, 0, 1, 1])
  (e,) = [tfds.as_numpy(x) for x in pipeline.eval_dataset(
      cfg, host_batch_size=1)]
  np.testing.assert_array_equal(e['classes'][0, :4], [2, 4, 3, 0])
  meta = pipeline.dataset_meta(cfg)
  assert meta.num_classes == 6 and meta.max_objects == 11
  # Without the layout ops: plain padding also batches.
  cfg.pp_eval = ('decode', 'resize(64)', 'pad_objects(8)')
  (e,) = [tfds.as_numpy(x) for x in pipeline.eval_dataset(
      cfg, host_batch_size=2)]
  assert e['classes'].shape == (2, 8) and e['num_in_relations'][0] == 2


# ------------------------------------------------------------ layout ops ----
def _layout(n, r, seed=(0, 0)):
  return {'classes': tf.range(1, n + 1), 'boxes': tf.zeros([n, 4]),
          'num_objects': tf.constant(n), 'num_in_relations': tf.constant(r),
          '_seed': tf.constant(seed, tf.int64)}


@pytest.mark.parametrize('n,r,want', [(14, 12, 10), (14, 9, 9), (14, 5, 9),
                                      (6, 2, 6)])
def test_sg2im_select_objects(n, r, want):
  # > 9 related: 10 of them; else all related + orphans up to 9 in total.
  out = ops.get_op('sg2im_select_objects(10)')(_layout(n, r))
  c = out['classes'].numpy()
  assert len(c) == len(set(c)) == want == int(out['num_objects'])
  related = set(range(1, r + 1))  # classes 1..r are the related objects
  if r > 9:
    assert set(c) <= related
  else:
    assert set(c[:r]) == related
  fixed = ops.get_op('sg2im_select_objects(10, randomize=False)')
  np.testing.assert_array_equal(fixed(_layout(n, r))['classes'],
                                np.arange(1, want + 1))


@pytest.mark.parametrize('n,r,want', [(14, 12, 9), (14, 10, 9), (14, 9, 9),
                                      (14, 5, 9), (6, 2, 6)])
def test_sg2im_select_objects_of_layout2im(n, r, want):
  # vg_custom_mask.py: at most 9 in total, related objects preferred.
  op = ops.get_op('sg2im_select_objects(10, max_related=9)')
  out = op(_layout(n, r))
  c = out['classes'].numpy()
  assert len(c) == len(set(c)) == want == int(out['num_objects'])
  related = set(range(1, r + 1))
  if r >= 9:
    assert set(c) <= related
  else:
    assert set(c[:r]) == related


def test_shuffle_objects_permutes_the_real_objects_only():
  boxes = np.arange(24, dtype=np.float32).reshape(6, 4) / 24
  inst = np.array([[0, 1, 2, 3], [4, 4, 9, 1]], np.int32)   # 9: not a slot
  ex = lambda seed: {
      'classes': tf.constant([4, 5, 6, 7, 0, 0]), 'boxes': tf.constant(boxes),
      'num_objects': tf.constant(4), 'objects_mask': tf.range(6) < 4,
      'instance': tf.constant(inst), '_seed': tf.constant(seed, tf.int64)}
  op = ops.get_op('shuffle_objects')
  orders = set()
  for seed in range(6):
    out = {k: v.numpy() for k, v in op(ex((seed, 1))).items()}
    c = out['classes']
    assert sorted(c[:4]) == [4, 5, 6, 7] and list(c[4:]) == [0, 0]
    np.testing.assert_array_equal(out['boxes'], boxes[[*(c[:4] - 4), 4, 5]])
    np.testing.assert_array_equal(out['objects_mask'], [1, 1, 1, 1, 0, 0])
    moved = (inst >= 1) & (inst <= 4)     # each pixel keeps its object
    np.testing.assert_array_equal(c[out['instance'][moved] - 1],
                                  np.array([4, 5, 6, 7])[inst[moved] - 1])
    np.testing.assert_array_equal(out['instance'][~moved], inst[~moved])
    orders.add(tuple(c))
  assert len(orders) > 2
  np.testing.assert_array_equal(op(ex((3, 1)))['classes'],
                                op(ex((3, 1)))['classes'])


def test_sg2im_select_objects_draws_from_the_seed():
  op = ops.get_op('sg2im_select_objects(10)')
  draws = {tuple(op(_layout(14, 12, (s, 0)))['classes'].numpy())
           for s in range(4)}
  assert len(draws) > 1
  a = op(_layout(14, 12, (3, 0)))['classes'].numpy()
  np.testing.assert_array_equal(a, op(_layout(14, 12, (3, 0)))['classes'])


def test_add_image_object():
  ex = ops.get_op('add_image_object')({**_layout(3, 1),
                                       'classes': tf.constant([4, 5, 6, 0])})
  np.testing.assert_array_equal(ex['classes'], [4, 5, 6, 0])
  assert int(ex['num_objects']) == 4
  np.testing.assert_array_equal(ex['boxes'][-1], [0, 0, 1, 1])


# ---------------------------------------------------------- missing data ----
def _build_error(name, manual, tmp_path):
  b = tfds.builder(name, data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(DatasetUnavailableError) as e:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual, **_DL))
  return str(e.value)


def test_coco_missing_files_message(tmp_path):
  manual = tmp_path / 'coco'
  msg = _build_error('coco_stuff_layout', str(manual), tmp_path)  # absent
  for rel in coco_stuff_layout.missing_files(None):
    assert rel in msg
  for url in ('http://images.cocodataset.org/zips/train2017.zip',
              'http://images.cocodataset.org/zips/val2017.zip',
              coco_stuff_layout.ANNOTATIONS_URL, coco_stuff_layout.STUFF_URL):
    assert url in msg
  assert str(manual) in msg
  # Only the stuff archive missing: only its files are named.
  fx.write_coco(str(manual))
  for split in ('train', 'val'):
    os.remove(manual / 'annotations' / f'stuff_{split}2017.json')
  msg = _build_error('coco_stuff_layout', str(manual), tmp_path)
  assert 'stuff_train2017.json' in msg and 'stuff_val2017.json' in msg
  assert 'instances_' not in msg and 'train2017.zip' not in msg
  assert coco_stuff_layout.STUFF_URL in msg


def test_vg_missing_files_message(tmp_path):
  manual = tmp_path / 'vg'
  manual.mkdir()  # exists but empty
  msg = _build_error('visual_genome_layout', str(manual), tmp_path)
  for rel, url in visual_genome_layout.SOURCES.items():
    assert f'{rel}' in msg and url in msg
  assert str(manual) in msg and 'sg2im' in msg


def test_get_builder_explains_unprepared(tmp_path):
  for name, url in (('coco_stuff_layout', coco_stuff_layout.STUFF_URL),
                    ('visual_genome_layout', visual_genome_layout.SPLITS_URL)):
    cfg = _data_cfg(name, str(tmp_path), str(tmp_path / 'm'), (), (), None)
    with pytest.raises(DatasetUnavailableError, match='not prepared') as e:
      pipeline.get_builder(cfg)
    assert url in str(e.value) and str(tmp_path / 'm') in str(e.value)
