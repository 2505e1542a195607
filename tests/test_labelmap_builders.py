"""cityscapes_maps, ade20k_maps and coco_stuff_maps on tiny official files
(and coco_stuff_maps on the real SPADE samples)."""
import glob
import os

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i import config_lib
from jaxl2i.data import DatasetUnavailableError
from jaxl2i.data import ops
from jaxl2i.data import pipeline
from jaxl2i.data.builders import ade20k_maps
from jaxl2i.data.builders import cityscapes_maps
from jaxl2i.data.builders import coco_stuff_maps
import labelmap_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DL = dict(try_download_gcs=False)


def _build(name, manual_dir, data_dir):
  b = tfds.builder(name, data_dir=data_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, **_DL))
  return tfds.builder(name, data_dir=data_dir)  # fresh: as read from disk


def _decoded(builder, split):
  ds = builder.as_dataset(split=split).map(ops.get_op('decode'))
  return {ex['file_name'].decode(): ex for ex in tfds.as_numpy(ds)}


def _raw_images(builder, split):
  ds = builder.as_dataset(split=split,
                          decoders={'image': tfds.decode.SkipDecoding()})
  return {ex['file_name'].decode(): ex['image'] for ex in tfds.as_numpy(ds)}


def _build_error(name, manual, tmp_path):
  b = tfds.builder(name, data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(DatasetUnavailableError) as e:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), **_DL))
  return str(e.value)


def _read(path):
  with open(path, 'rb') as f:
    return f.read()


# ----------------------------------------------------------- Cityscapes ----
@pytest.fixture(scope='module')
def city(tmp_path_factory):
  root = tmp_path_factory.mktemp('city')
  out = {}
  for cfg, gt, folders in (('fine', 'gtFine', ('train', 'val')),
                           ('coarse', 'gtCoarse',
                            ('train', 'train_extra', 'val'))):
    manual, data_dir = str(root / cfg), str(root / 'tfds')
    want = fx.write_cityscapes(manual, gt, folders)
    b = _build(f'cityscapes_maps/{cfg}', manual, data_dir)
    out[cfg] = dict(manual=manual, data_dir=data_dir, want=want, builder=b,
                    ex={s: _decoded(b, s) for s in ('train', 'validation')})
  return out


@pytest.mark.parametrize('cfg,splits', [
    ('fine', {'train': ('train',), 'validation': ('val',)}),
    ('coarse', {'train': ('train', 'train_extra'), 'validation': ('val',)})])
def test_cityscapes_examples(city, cfg, splits):
  c = city[cfg]
  for split, folders in splits.items():
    want = {k: v for f in folders for k, v in c['want'][f].items()}
    got = c['ex'][split]
    assert sorted(got) == sorted(want)  # test/ folder and extra files unread
    assert c['builder'].info.splits[split].num_examples == len(want)
    raw = _raw_images(c['builder'], split)
    for name, (image, label, inst) in want.items():
      ex = got[name]
      np.testing.assert_array_equal(ex['image'], image)
      np.testing.assert_array_equal(ex['label'], label)  # labelIds as is
      np.testing.assert_array_equal(ex['instance'], inst)  # 26000, 26, ...
      assert ex['label'].dtype == ex['instance'].dtype == np.int32
      assert ex['label'].shape == (fx.CITY_H, fx.CITY_W)
      folder = next(f for f in folders if name in c['want'][f])
      city_name = name.split('_')[0]
      assert raw[name] == _read(os.path.join(
          c['manual'], 'leftImg8bit', folder, city_name, name))  # PNG as is
  assert (c['ex']['train'][next(iter(c['ex']['train']))]['instance']
          >= 24000).any()


def test_cityscapes_metadata(city):
  md = city['fine']['builder'].info.metadata
  names = md['class_names']
  assert md['num_classes'] == len(names) == 35
  assert (names[0], names[7], names[23], names[26], names[33], names[34]) == (
      'unlabeled', 'road', 'sky', 'car', 'bicycle', 'license plate')
  assert md['ignore_label'] is None and md['max_objects'] == 0
  assert tuple(md['image_size']) == (fx.CITY_H, fx.CITY_W)  # from the data
  assert md['reference_num_examples'] == {'train': 2975, 'validation': 500}
  assert city['coarse']['builder'].info.metadata['reference_num_examples'][
      'train'] == 22973


def test_cityscapes_pix2pix_config_runs_on_the_builder(city):
  c = config_lib.load(os.path.join(REPO, 'configs', 'cityscapes_pix2pix.py'),
                      'tiny')
  assert c.data.name == 'cityscapes_maps/fine'
  c.data.data_dir = city['fine']['data_dir']
  c.data.manual_dir = city['fine']['manual']
  (b,) = [tfds.as_numpy(x) for x in pipeline.train_dataset(
      c.data, host_batch_size=2, seed=0).take(1)]
  assert set(b) == {'image', 'label'}
  assert b['image'].shape == (2, 32, 32, 3) and b['image'].dtype == np.uint8
  assert b['label'].shape == (2, 32, 32) and b['label'].dtype == np.int32
  assert 0 <= b['label'].min() and b['label'].max() < 35
  (e,) = [tfds.as_numpy(x) for x in pipeline.eval_dataset(
      c.data, host_batch_size=2)]
  np.testing.assert_array_equal(e['_mask'], [True, False])
  # 16x32 -> 32x32: labels nearest (PyTorch floor rule) on both axes.
  (_, label, _), = city['fine']['want']['val'].values()
  np.testing.assert_array_equal(e['label'][0], label[np.arange(32) // 2])
  full = config_lib.load(os.path.join(REPO, 'configs',
                                      'cityscapes_pix2pix.py'))
  x = {'image': tf.zeros([1024, 2048, 3], tf.uint8),
       'label': tf.zeros([1024, 2048], tf.int32),
       '_seed': tf.constant([1, 2], tf.int64)}
  for pp, size in ((full.data.pp_train, 256), (full.data.pp_eval, 256)):
    y = ops.build(pp[1:])(x)
    assert y['image'].shape == (size, size, 3) and y['label'].shape == (
        size, size)


def test_dataset_meta_of_label_maps(city):
  cfg = ml_collections.ConfigDict(dict(
      name='cityscapes_maps/fine', data_dir=city['fine']['data_dir'],
      manual_dir=city['fine']['manual'], max_objects=None))
  meta = pipeline.dataset_meta(cfg)
  assert meta.num_classes == 35 and meta.class_names[34] == 'license plate'
  assert meta.ignore_label is None and meta.max_objects == 0
  assert tuple(meta.image_size) == (fx.CITY_H, fx.CITY_W)
  assert dict(meta.num_examples) == {'train': 2, 'validation': 1}


def test_cityscapes_missing_files_messages(city, tmp_path):
  manual = tmp_path / 'empty'
  msg = _build_error('cityscapes_maps/coarse', manual, tmp_path)
  for rel, package in cityscapes_maps.required(
      cityscapes_maps.CONFIGS[1]).items():
    assert f'  - {rel} (folder): from {package}' in msg
  assert cityscapes_maps.DOWNLOADS in msg and str(manual) in msg
  assert 'gtFine/' not in msg.split('\n')[1]
  # A label map without its instance map.
  fine = city['fine']['manual']
  victim = glob.glob(os.path.join(fine, 'gtFine', 'val', '*',
                                  '*_instanceIds.png'))[0]
  os.rename(victim, victim + '.bak')
  try:
    msg = _build_error('cityscapes_maps/fine', fine, tmp_path)
  finally:
    os.rename(victim + '.bak', victim)
  assert 'cityscapes_maps: 1 missing file(s) beside the label maps' in msg
  assert f'  - {os.path.relpath(victim, fine)}' in msg.split('\n')


# -------------------------------------------------------------- ADE20K ----
@pytest.fixture(scope='module')
def ade(tmp_path_factory):
  root = tmp_path_factory.mktemp('ade')
  manual, data_dir = str(root / 'manual'), str(root / 'tfds')
  want = fx.write_ade(manual)
  depth = fx.write_ade_depth(manual)
  out = dict(manual=manual, want=want, depth_src=depth)
  for cfg in ('default', 'depth'):
    b = _build(f'ade20k_maps/{cfg}', manual, data_dir)
    out[cfg] = dict(builder=b, ex={s: _decoded(b, s)
                                   for s in ('train', 'validation')})
  return out


def test_ade_examples_in_spade_convention(ade):
  for split, folder in (('train', 'training'), ('validation', 'validation')):
    got = ade['default']['ex'][split]
    assert sorted(got) == sorted(ade['want'][folder])
    raw = _raw_images(ade['default']['builder'], split)
    for name, (image, ann) in ade['want'][folder].items():
      ex = got[name]
      np.testing.assert_array_equal(ex['image'], image)  # as PIL decodes
      assert raw[name] == _read(os.path.join(
          ade['manual'], fx.ADE, 'images', folder, name))  # JPEG as stored
      want = np.where(ann == 0, 150, ann.astype(np.int32) - 1)
      np.testing.assert_array_equal(ex['label'], want)
      assert ex['label'][0, :3].tolist() == [150, 0, 149]
      assert set(ex) == {'image', 'label', 'file_name'}


def test_ade_metadata_and_names(ade, tmp_path):
  md = ade['default']['builder'].info.metadata
  names = md['class_names']
  assert md['num_classes'] == len(names) == 151
  assert md['ignore_label'] == 150 and md['max_objects'] == 0
  assert md['image_size'] is None
  assert (names[0], names[1], names[7], names[21], names[149],
          names[150]) == ('wall', 'building', 'bed', 'water', 'flag',
                          'dontcare')
  assert names[2] == 'obj3'  # first name before ';'
  assert ade20k_maps.class_names(str(tmp_path))[:2] == ['class_0',
                                                        'class_1']
  assert 'depth_scale' not in md
  assert ade['depth']['builder'].info.metadata['depth_scale'] == 65535.0


def _normalised(d):
  return np.round((d - d.min()) / (d.max() - d.min()) * 65535) / 65535


def test_ade_depth_normalised_resized_encoded(ade):
  got = {**ade['depth']['ex']['train'], **ade['depth']['ex']['validation']}
  # 16-bit PNG (wins over the .npy of the same stem), same size as label.
  d1 = got['ADE_train_00000001.jpg']['depth']
  assert d1.dtype == np.float32 and d1.shape == (20, 24)
  np.testing.assert_allclose(
      d1, _normalised(ade['depth_src']['ADE_train_00000001.jpg']), atol=1e-7)
  assert d1.min() == 0.0 and d1.max() == 1.0
  # monodepth2's [1,1,9,13] _disp.npy: bilinear (half-pixel) to 18x26.
  disp = ade['depth_src']['ADE_train_00000002.jpg']
  up = tf.image.resize(disp[..., None].astype(np.float32), (18, 26),
                       method='bilinear', antialias=False).numpy()[..., 0]
  d2 = got['ADE_train_00000002.jpg']['depth']
  np.testing.assert_allclose(d2, _normalised(up.astype(np.float64)),
                             atol=1e-7)
  # Larger = nearer is kept: the largest disparity stays the largest.
  assert np.unravel_index(d2.argmax(), d2.shape) == np.unravel_index(
      up.argmax(), up.shape)
  # A constant map -> all 0.
  assert (got['ADE_val_00000001.jpg']['depth'] == 0).all()
  # Same image and label as the default config.
  np.testing.assert_array_equal(
      got['ADE_train_00000002.jpg']['label'],
      ade['default']['ex']['train']['ADE_train_00000002.jpg']['label'])


def test_ade_missing_files_and_depth_messages(tmp_path):
  manual = tmp_path / 'ade'
  msg = _build_error('ade20k_maps', manual, tmp_path)  # absent
  for rel in ade20k_maps.REQUIRED:
    assert f'  - {rel} (folder): from {ade20k_maps.URL}' in msg
  assert str(manual) in msg
  fx.write_ade(str(manual), n_extra_train=6)  # 8 train + 1 val, no depth
  msg = _build_error('ade20k_maps/depth', manual, tmp_path)
  lines = msg.split('\n')
  assert lines[0].startswith('ade20k_maps/depth: 9 missing depth map(s)')
  listed = [l[4:] for l in lines if l.startswith('  - ')]
  assert listed == [os.path.join(str(manual), 'depth', 'training',
                                 f'ADE_train_{i:08d}.png')
                    for i in range(1, 6)]  # the first 5
  for s in ('monodepth2', 'test_simple.py', 'mono+stereo_640x192',
            '_disp.npy', 'depth/{training,validation}/'):
    assert s in msg


# ---------------------------------------------------------- COCO-Stuff ----
@pytest.fixture(scope='module')
def samples(shared_dir):
  return os.path.join(shared_dir, 'data', 'coco_stuff_samples')


@pytest.fixture(scope='module')
def coco_real(tmp_path_factory, samples):
  b = _build('coco_stuff_maps', samples,
             str(tmp_path_factory.mktemp('coco_real')))
  return dict(builder=b, ex=_decoded(b, 'train'),
              raw=_raw_images(b, 'train'))


def test_coco_real_samples(coco_real, samples):
  names = sorted(os.listdir(os.path.join(samples, 'train_img')))
  assert sorted(coco_real['ex']) == names and len(names) == 13
  assert list(coco_real['builder'].info.splits) == ['train']  # no val_*
  for name in names:
    ex, stem = coco_real['ex'][name], name[:-4]
    label = np.array(Image.open(os.path.join(samples, 'train_label',
                                             stem + '.png')))
    inst = np.array(Image.open(os.path.join(samples, 'train_inst',
                                            stem + '.png')))
    np.testing.assert_array_equal(
        ex['label'], np.where(label == 255, 182, label))
    np.testing.assert_array_equal(ex['instance'], inst)  # 8-bit, as is
    path = os.path.join(samples, 'train_img', name)
    assert coco_real['raw'][name] == _read(path)
    np.testing.assert_array_equal(ex['image'],
                                  np.asarray(Image.open(path).convert('RGB')))
  assert any((ex['label'] == 182).any() for ex in coco_real['ex'].values())
  md = coco_real['builder'].info.metadata
  assert md['source'] == 'spade_folders'
  assert md['num_classes'] == 183 and md['ignore_label'] == 182
  n = md['class_names']
  assert (n[0], n[90], n[91], n[181], n[182]) == (
      'person', 'hair brush', 'banner', 'wood', 'dontcare')


def test_coco_official_files_generate_spade_instances(tmp_path):
  manual = str(tmp_path / 'manual')
  want = fx.write_coco_official(manual)
  b = _build('coco_stuff_maps', manual, str(tmp_path / 'tfds'))
  assert b.info.metadata['source'] == 'official'
  for split, year in (('train', 'train2017'), ('validation', 'val2017')):
    got = _decoded(b, split)
    assert sorted(got) == sorted(want[year])
    for name, (label, inst) in want[year].items():
      np.testing.assert_array_equal(got[name]['label'],
                                    np.where(label == 255, 182, label))
      np.testing.assert_array_equal(got[name]['instance'], inst)
  ex = _decoded(b, 'train')
  # Rect (3,2)-(10,8) -> rows 1..6, cols 2..8 (the -1 shift); RLE skipped.
  assert (ex['000000000101.jpg']['instance'][1:7, 2:9] == 0).all()
  assert set(np.unique(ex['000000000101.jpg']['instance'][
      ex['000000000101.jpg']['instance'] <= 3])) >= {0, 1, 2, 3}
  np.testing.assert_array_equal(ex['000000000102.jpg']['instance'],
                                want['train2017']['000000000102.jpg'][0])


def test_polygon_fill_matches_skimage():
  rng = np.random.default_rng(0)
  for t in range(60):
    n = int(rng.integers(3, 9))
    r, c = rng.uniform(-3, 14, n), rng.uniform(-3, 20, n)
    if t % 2:
      r, c = np.round(r), np.round(c)
    a, b = np.zeros((11, 17), bool), np.zeros((11, 17), bool)
    a[coco_stuff_maps.polygon_fill(r, c, a.shape)] = True
    b[fx.skimage_polygon(r, c, b.shape)] = True
    np.testing.assert_array_equal(a, b)


def test_coco_missing_files_messages(tmp_path):
  manual = tmp_path / 'coco'
  msg = _build_error('coco_stuff_maps', manual, tmp_path)  # absent: both
  for rel in (*coco_stuff_maps.SPADE_REQUIRED,
              *coco_stuff_maps.OFFICIAL_REQUIRED):
    assert f'  - {rel}' in msg
  assert coco_stuff_maps.STUFFTHINGMAPS_URL in msg and str(manual) in msg
  # Official files started: only they are listed.
  fx.write_coco_official(str(manual))
  os.remove(manual / 'annotations' / 'instances_val2017.json')
  msg = _build_error('coco_stuff_maps', manual, tmp_path)
  assert ('  - annotations/instances_val2017.json: from '
          f'{coco_stuff_maps.ANNOTATIONS_URL}') in msg.split('\n')
  assert 'train_img' not in msg.split('\n')[1]
  assert sum(l.startswith('  - ') for l in msg.split('\n')) == 1


def test_get_builder_explains_unprepared(tmp_path):
  for name, url in (('cityscapes_maps/fine', cityscapes_maps.DOWNLOADS),
                    ('ade20k_maps/depth', ade20k_maps.MONODEPTH2),
                    ('coco_stuff_maps', coco_stuff_maps.STUFFTHINGMAPS_URL)):
    cfg = ml_collections.ConfigDict(dict(
        name=name, data_dir=str(tmp_path), manual_dir=str(tmp_path / 'm')))
    with pytest.raises(DatasetUnavailableError, match='not prepared') as e:
      pipeline.get_builder(cfg)
    assert url in str(e.value) and f'--dataset={name}' in str(e.value)
