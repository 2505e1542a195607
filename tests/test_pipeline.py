"""Input pipelines on the tiny synthetic_scenes build."""
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxl2i.data import DatasetUnavailableError
from jaxl2i.data import builders
from jaxl2i.data import pipeline

PP_TRAIN = ('decode', 'resize(40)', 'random_crop(32)', 'random_flip',
            'instance_edges', 'onehot(12)', 'pad_objects(8)')
PP_EVAL = ('decode', 'instance_edges', 'pad_objects(8)')


def _cfg(data_dir, **kw):
  cfg = ml_collections.ConfigDict(dict(
      name='synthetic_scenes/tiny', data_dir=data_dir, manual_dir=None,
      train_split='train', eval_split='validation', pp_train=PP_TRAIN,
      pp_eval=PP_EVAL, shuffle_buffer=32, max_objects=8))
  cfg.update(kw)
  return cfg


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  """Config on a tiny build made once for this module (by get_builder)."""
  c = _cfg(str(tmp_path_factory.mktemp('tfds')))
  assert not tf.io.gfile.exists(f'{c.data_dir}/synthetic_scenes')
  assert pipeline.get_builder(c).is_prepared()  # generated on first use
  return c


def test_get_builder_uses_a_build_another_process_finished(tmp_path,
                                                           monkeypatch):
  """Two first uses at once (a run beside the tests): the slower one's
  rename fails with FileExistsError and it reads the other's build."""
  c = _cfg(str(tmp_path / 'race'))
  builders.import_builder(c.name)
  cls = type(tfds.builder(c.name, data_dir=c.data_dir))
  original = cls.download_and_prepare

  def racing(self, **kwargs):
    monkeypatch.setattr(cls, 'download_and_prepare', original)
    tfds.builder(c.name, data_dir=c.data_dir).download_and_prepare(**kwargs)
    raise FileExistsError('Cannot rename incomplete.X: already exists.')

  monkeypatch.setattr(cls, 'download_and_prepare', racing)
  assert pipeline.get_builder(c).is_prepared()

  def failing(self, **kwargs):
    raise FileExistsError('something else exists')

  monkeypatch.setattr(cls, 'download_and_prepare', failing)
  with pytest.raises(FileExistsError, match='something else'):
    pipeline.get_builder(_cfg(str(tmp_path / 'other')))


def _take(ds, n):
  return [tfds.as_numpy(b) for b in ds.take(n)]


def test_dataset_meta(cfg):
  meta = pipeline.dataset_meta(cfg)
  assert meta.num_classes == 12 and meta.class_names[0] == '__pad__'
  assert meta.image_size == (32, 32) and meta.ignore_label is None
  assert meta.max_objects == 8
  assert dict(meta.num_examples) == {'train': 64, 'validation': 16}
  meta2 = pipeline.dataset_meta(_cfg(cfg.data_dir, max_objects=None))
  assert meta2.max_objects == 11


def test_train_batches_shapes_and_dtypes(cfg):
  (b,) = _take(pipeline.train_dataset(cfg, host_batch_size=4, seed=0), 1)
  expect = {
      'image': ((4, 32, 32, 3), np.uint8), 'label': ((4, 32, 32), np.int32),
      'instance': ((4, 32, 32), np.int32), 'depth': ((4, 32, 32), np.float32),
      'edges': ((4, 32, 32), np.uint8),
      'label_onehot': ((4, 32, 32, 12), np.uint8),
      'boxes': ((4, 8, 4), np.float32), 'classes': ((4, 8), np.int32),
      'objects_mask': ((4, 8), bool), 'num_objects': ((4,), np.int32),
  }
  assert set(b) == set(expect)  # no `_seed` left
  for k, (shape, dtype) in expect.items():
    assert b[k].shape == shape and b[k].dtype == dtype, k
  np.testing.assert_array_equal(b['objects_mask'].sum(1), b['num_objects'])
  np.testing.assert_array_equal(b['classes'][~b['objects_mask']], 0)


def test_train_is_deterministic_for_a_seed(cfg):
  a = _take(pipeline.train_dataset(cfg, host_batch_size=4, seed=3), 3)
  b = _take(pipeline.train_dataset(cfg, host_batch_size=4, seed=3), 3)
  c = _take(pipeline.train_dataset(cfg, host_batch_size=4, seed=4), 3)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x['image'], y['image'])
             for x, y in zip(a, c))


def _ids(batches):
  """Identify examples by their (unaugmented) bytes."""
  return {b.tobytes() for batch in batches for b in batch['instance']}


def test_even_splits_are_disjoint(cfg):
  c = _cfg(cfg.data_dir, pp_train=('decode', 'pad_objects(8)'),
           shuffle_buffer=0)
  p0 = _take(pipeline.train_dataset(c, host_batch_size=8, seed=0,
                                    process_index=0, process_count=2), 4)
  p1 = _take(pipeline.train_dataset(c, host_batch_size=8, seed=0,
                                    process_index=1, process_count=2), 4)
  ids0, ids1 = _ids(p0), _ids(p1)
  assert len(ids0) > 24 and len(ids1) > 24  # 32 examples each, few clashes
  assert not ids0 & ids1


@pytest.mark.parametrize('batch,count,num,expect_real', [
    (6, 1, None, [6, 6, 4]),
    (8, 1, None, [8, 8]),
    (4, 2, None, [4, 4]),
    (3, 2, 7, [3, 1]),  # shards of 4 and 3 examples: both give 2 batches
])
def test_eval_pads_last_batch_with_mask(cfg, batch, count, num, expect_real):
  for index in range(count):
    bs = list(tfds.as_numpy(pipeline.eval_dataset(
        cfg, host_batch_size=batch, process_index=index, process_count=count,
        num_examples=num)))
    real = [int(b['_mask'].sum()) for b in bs]
    if count == 2 and num == 7 and index == 1:
      expect_real = [3, 0]
    assert real == expect_real
    for b in bs:
      assert b['image'].shape == (batch, 32, 32, 3)
      assert b['_mask'].dtype == bool and b['_mask'].shape == (batch,)
      pad = ~b['_mask']
      assert (b['image'][pad] == 0).all() and (b['classes'][pad] == 0).all()
      assert not b['_mask'][np.argmin(b['_mask']):].any() or b['_mask'].all()


def test_eval_pads_layout2im_batches(cfg):
  """shuffle_objects gathers with a perm of dynamic length; the padded
  object axis must stay static or the padding batch cannot be built."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.pp_eval = ('decode', 'pad_objects(8)', 'shuffle_objects',
               'keep("image", "boxes", "classes", "objects_mask")')
  bs = list(tfds.as_numpy(pipeline.eval_dataset(c, host_batch_size=5,
                                                num_examples=7)))
  assert [int(b['_mask'].sum()) for b in bs] == [5, 2]
  assert bs[1]['boxes'].shape == (5, 8, 4)
  assert not bs[1]['objects_mask'][2:].any() and bs[1]['objects_mask'][0].any()


def test_eval_covers_split_once(cfg):
  bs = list(tfds.as_numpy(pipeline.eval_dataset(cfg, host_batch_size=5)))
  real = np.concatenate([b['instance'][b['_mask']] for b in bs])
  assert len(real) == 16 and len({r.tobytes() for r in real}) == 16


def test_unknown_dataset_fails_clearly(tmp_path):
  c = _cfg(str(tmp_path), name='cityscapes')
  with pytest.raises(DatasetUnavailableError,
                     match=r"jaxl2i has no builder for dataset 'cityscapes' "
                     r'yet \(available: ade20k_maps, cityscapes_maps, '
                     r'coco_stuff_layout, coco_stuff_maps, synthetic_scenes, '
                     r'visual_genome_layout\)'):
    pipeline.train_dataset(c, host_batch_size=2, seed=0)
  assert issubclass(DatasetUnavailableError, RuntimeError)


def test_unknown_op_fails_before_reading(cfg):
  c = _cfg(cfg.data_dir, pp_train=('decode', 'flop'))
  with pytest.raises(ValueError, match="unknown data op 'flop'"):
    pipeline.train_dataset(c, host_batch_size=2, seed=0)


def test_pipeline_under_tfds_mock_data(tmp_path):
  """The pipeline code path on mocked examples (no build), as STYLE.md asks."""
  c = _cfg(str(tmp_path / 'unbuilt'),
           pp_train=('decode', 'random_flip', 'pad_objects(8)',
                     "keep('image', 'label', 'boxes', 'classes', "
                     "'objects_mask')"))

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    rng = np.random.default_rng(0)
    ex = {
        'image': rng.integers(0, 255, (32, 32, 3)).astype(np.uint8),
        'label': np.full((32, 32, 1), 2, np.uint8),
        'instance': np.ones((32, 32, 1), np.uint16),
        'depth': np.zeros((32, 32, 1), np.uint16),
        'boxes': np.float32([[0.1, 0.2, 0.3, 0.4]]),
        'classes': np.int64([2]),
        'num_objects': np.int32(1),
    }
    return tf.data.Dataset.from_tensors(ex).repeat(10)

  # Under mock_data download_and_prepare is a no-op: nothing is generated.
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    (b,) = _take(pipeline.train_dataset(c, host_batch_size=8, seed=0), 1)
  assert not (tmp_path / 'unbuilt' / 'synthetic_scenes').exists()
  assert b['image'].shape == (8, 32, 32, 3) and b['label'].dtype == np.int32
  assert set(b) == {'image', 'label', 'boxes', 'classes', 'objects_mask'}
  flipped = b['boxes'][:, 0, 0] > 0.5
  assert 0 < flipped.sum() < 8
  kept = np.float32([0.1, 0.2, 0.3, 0.4])
  mirrored = np.float32([0.7, 0.2, 0.9, 0.4])
  np.testing.assert_allclose(b['boxes'][~flipped, 0],
                             np.tile(kept, ((~flipped).sum(), 1)))
  np.testing.assert_allclose(b['boxes'][flipped, 0],
                             np.tile(mirrored, (flipped.sum(), 1)), rtol=1e-6)
  np.testing.assert_array_equal(b['classes'][:, 1:], 0)

