"""The synthetic_scenes builder: TFDS conformance and the data contract."""
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds


tfds_testing = tfds.testing

from jaxl2i.data import ops
from jaxl2i.data.builders import scene_render
from jaxl2i.data.builders import synthetic_scenes


class SyntheticScenesTest(tfds_testing.DatasetBuilderTestCase):
  """Builds `tiny` through TFDS's builder test harness."""
  DATASET_CLASS = synthetic_scenes.SyntheticScenes
  BUILDER_CONFIG_NAMES_TO_TEST = ['tiny']
  SPLITS = {'train': 64, 'validation': 16}
  # Procedural: nothing is downloaded, but the harness wants a directory.
  EXAMPLE_DIR = tempfile.gettempdir()
  SKIP_CHECKSUMS = True


def test_registered_and_metadata(tmp_path):
  assert 'synthetic_scenes' in tfds.list_builders(with_community_datasets=False)
  b = tfds.builder('synthetic_scenes/tiny', data_dir=str(tmp_path))
  md = b.info.metadata
  names = b.info.features['classes'].feature.names
  assert names[0] == '__pad__'
  assert md['num_classes'] == len(names) == 12
  assert names[1:1 + len(md['stuff_classes'])] == md['stuff_classes']
  assert names[1 + len(md['stuff_classes']):] == md['thing_classes']
  assert {'sky', 'grass', 'water', 'wall'} <= set(md['stuff_classes'])
  assert len(md['thing_classes']) >= 5
  assert md['max_objects'] == 11 and md['ignore_label'] is None
  assert 'larger = nearer' in md['depth_convention']


def test_examples_are_deterministic():
  a = synthetic_scenes.make_example(32, 0, 5)
  b = synthetic_scenes.make_example(32, 0, 5)
  c = synthetic_scenes.make_example(32, 1, 5)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
  assert a['image'] != c['image']  # splits differ


@pytest.fixture(scope='module')
def decoded(tmp_path_factory):
  """All tiny training examples after the `decode` op, as numpy."""
  b = tfds.builder('synthetic_scenes/tiny',
                   data_dir=str(tmp_path_factory.mktemp('tfds')))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False))
  ds = b.as_dataset(split='train').map(ops.get_op('decode'))
  return list(tfds.as_numpy(ds))


def test_contract_shapes_and_dtypes(decoded):
  assert len(decoded) == 64
  for ex in decoded:
    o = int(ex['num_objects'])
    assert ex['image'].shape == (32, 32, 3) and ex['image'].dtype == np.uint8
    for k in ('label', 'instance'):
      assert ex[k].shape == (32, 32) and ex[k].dtype == np.int32
    assert ex['depth'].shape == (32, 32) and ex['depth'].dtype == np.float32
    assert ex['boxes'].shape == (o, 4) and ex['boxes'].dtype == np.float32
    assert ex['classes'].shape == (o,) and ex['classes'].dtype == np.int32
    assert 2 <= o <= 11


def test_boxes_labels_instances_depth_are_consistent(decoded):
  n_stuff = len(scene_render.STUFF_CLASSES)
  num_things = []
  for ex in decoded:
    b, c = ex['boxes'], ex['classes']
    assert (b >= 0).all() and (b <= 1).all()
    assert (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
    lab, inst = ex['label'], ex['instance']
    assert lab.min() >= 1 and lab.max() < len(scene_render.CLASS_NAMES)
    assert (c >= 1).all()
    assert 0.0 <= ex['depth'].min() and ex['depth'].max() <= 1.0
    is_stuff = c <= n_stuff
    assert is_stuff.sum() <= 3 and not is_stuff[is_stuff.argmin():].any()
    num_things.append(int((~is_stuff).sum()))
    ys, xs = np.mgrid[:32, :32]
    for j in range(len(c)):
      m = inst == j + 1
      if not m.any():
        assert not is_stuff[j]  # only things can be fully occluded
        continue
      # Instance j+1 carries class c[j] and lies inside box j.
      np.testing.assert_array_equal(lab[m], c[j])
      x0, y0, x1, y1 = b[j] * 32
      assert (xs[m] >= x0).all() and (xs[m] + 1 <= x1).all()
      assert (ys[m] >= y0).all() and (ys[m] + 1 <= y1).all()
    assert inst.min() >= 1 and inst.max() <= len(c)
  assert min(num_things) >= 1 and max(num_things) <= 8
  assert max(num_things) >= 4  # scenes are not all trivial


def test_nearer_things_are_lower_and_bigger(decoded):
  """Disparity of a thing grows with its base row (ground plane geometry)."""
  n_stuff = len(scene_render.STUFF_CLASSES)
  bottoms, disp = [], []
  for ex in decoded:
    for j, cls in enumerate(ex['classes']):
      m = ex['instance'] == j + 1
      if cls > n_stuff and m.any() and ex['boxes'][j, 3] < 1.0:
        bottoms.append(ex['boxes'][j, 3])
        disp.append(ex['depth'][m].mean())
  assert np.corrcoef(bottoms, disp)[0, 1] > 0.8


def test_stored_depth_roundtrip():
  ex = synthetic_scenes.make_example(32, 0, 3)
  raw = scene_render.render_scene(
      np.random.default_rng([synthetic_scenes._SEED, 0, 3]), 32)
  d = tf.io.decode_png(ex['depth'], dtype=tf.uint16)
  out = ops.get_op('decode')({'depth': d})['depth'].numpy()
  assert np.abs(out - raw['depth']).max() <= 0.5 / 65535 + 1e-7


def test_varied_colours_keep_the_layout_and_vary_the_things():
  """`varied64`: the same layouts as res64, thing colours far more varied."""
  spread = {False: [], True: []}
  for i in range(40):
    ex = {v: scene_render.render_scene(np.random.default_rng([3, i]), 32, v)
          for v in (False, True)}
    for k in ('boxes', 'classes', 'label', 'instance', 'depth'):
      np.testing.assert_array_equal(ex[False][k], ex[True][k])
    for v, e in ex.items():
      for j, c in enumerate(e['classes']):
        m = e['instance'] == j + 1
        if scene_render.CLASS_NAMES[c] == 'car' and m.sum() >= 4:
          spread[v].append(e['image'][m].mean(0))
  std = {v: np.std(np.float32(s), axis=0).mean() for v, s in spread.items()}
  assert len(spread[True]) >= 10
  assert std[True] > 2 * std[False], std
  cfg = synthetic_scenes.SyntheticScenes.builder_configs['varied64']
  assert cfg.varied and cfg.size == 64
  assert not synthetic_scenes.SyntheticScenes.builder_configs['res64'].varied
