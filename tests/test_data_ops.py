"""Data ops one by one on small hand-made examples."""
import numpy as np
import pytest
import tensorflow as tf

from jaxl2i.data import ops


def _example(h=6, w=8, seed=(1, 2)):
  """A small example: every map encodes its pixel's column so moves show."""
  rng = np.random.default_rng(0)
  cols = np.tile(np.arange(w), (h, 1))
  rows = np.tile(np.arange(h)[:, None], (1, w))
  image = np.stack([cols * 10, rows * 10, rng.integers(0, 255, (h, w))],
                   -1).astype(np.uint8)
  label = (cols + 1).astype(np.int32)
  instance = (rows * w + cols).astype(np.int32)
  depth = (cols / w + rows / (10 * h)).astype(np.float32)
  boxes = np.float32([[0.0, 0.0, 0.25, 0.5], [0.5, 0.5, 1.0, 1.0]])
  return {
      'image': tf.constant(image), 'label': tf.constant(label),
      'instance': tf.constant(instance), 'depth': tf.constant(depth),
      'boxes': tf.constant(boxes), 'classes': tf.constant([3, 7], tf.int32),
      'num_objects': tf.constant(2, tf.int32),
      '_seed': tf.constant(seed, tf.int64),
  }


def _np(ex):
  return {k: v.numpy() for k, v in ex.items()}


def test_parse_positional_keyword_and_bare():
  assert ops.parse('random_flip') == ('random_flip', (), {})
  assert ops.parse('resize(286)') == ('resize', (286,), {})
  assert ops.parse("onehot(5, key='label', out='x')") == (
      'onehot', (5,), {'key': 'label', 'out': 'x'})
  assert ops.parse('resize(32, 48)') == ('resize', (32, 48), {})


def test_unknown_and_bad_op_strings_fail_clearly():
  with pytest.raises(ValueError, match=r"unknown data op 'rezise'.*known ops:"
                     r'.*random_crop.*resize'):
    ops.get_op('rezise(3)')
  with pytest.raises(ValueError, match='cannot parse'):
    ops.get_op('resize(size=foo)')
  with pytest.raises(ValueError, match='cannot parse'):
    ops.get_op('resize(')


def test_decode_contract_dtypes():
  ex = {
      'label': tf.zeros([4, 4, 1], tf.uint8),
      'instance': tf.fill([4, 4, 1], tf.constant(300, tf.uint16)),
      'depth': tf.fill([4, 4, 1], tf.constant(65535, tf.uint16)),
      'boxes': tf.zeros([2, 4], tf.float32),
      'classes': tf.constant([1, 2], tf.int64),
      'num_objects': tf.constant(2, tf.int32),
  }
  out = _np(ops.get_op('decode')(ex))
  assert out['label'].shape == (4, 4) and out['label'].dtype == np.int32
  assert out['instance'].dtype == np.int32 and out['instance'][0, 0] == 300
  assert out['depth'].dtype == np.float32 and out['depth'].shape == (4, 4)
  np.testing.assert_allclose(out['depth'], 1.0)
  assert out['classes'].dtype == np.int32


def test_random_flip_moves_everything_together():
  ex = _example()
  # Find a seed that flips and one that does not.
  results = {}
  for s in range(20):
    out = _np(ops.get_op('random_flip')({**ex, '_seed': tf.constant(
        [s, 0], tf.int64)}))
    results[bool(out['image'][0, 0, 0] != 0)] = out
  assert set(results) == {True, False}
  flipped, kept = results[True], results[False]
  orig = _np(ex)
  for k in ('image', 'label', 'instance', 'depth'):
    np.testing.assert_array_equal(kept[k], orig[k])
    np.testing.assert_array_equal(flipped[k], orig[k][:, ::-1])
  np.testing.assert_allclose(flipped['boxes'],
                             [[0.75, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0]])
  # A pixel inside object 0 before the flip is inside its flipped box after.
  h, w = orig['label'].shape
  y, x = 1, 1  # inside box 0 = cols [0, 2), rows [0, 3)
  b = flipped['boxes'][0]
  xf = w - 1 - x
  assert b[0] * w <= xf < b[2] * w and b[1] * h <= y < b[3] * h
  assert flipped['label'][y, xf] == orig['label'][y, x]
  assert flipped['instance'][y, xf] == orig['instance'][y, x]


def test_random_flip_keeps_empty_boxes_zero():
  ex = _example()
  ex['boxes'] = tf.zeros([3, 4])
  out = ops.get_op('flip')(ex)
  np.testing.assert_array_equal(out['boxes'].numpy(), 0)


def test_random_ops_are_deterministic_and_seed_dependent():
  pp = ops.build(['random_crop(4)', 'random_flip'])
  a = _np(pp(_example(seed=(5, 6))))
  b = _np(pp(_example(seed=(5, 6))))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  crops = {tuple(_np(pp(_example(seed=(s, 0))))['instance'][0, :2])
           for s in range(16)}
  assert len(crops) > 3


def test_random_crop_renormalises_boxes_and_crops_maps_together():
  ex = _example(h=6, w=8)
  out = _np(ops.get_op('random_crop(4, 6)')(ex))
  assert out['image'].shape == (4, 6, 3) and out['label'].shape == (4, 6)
  top, left = divmod(int(out['instance'][0, 0]), 8)
  orig = _np(ex)
  np.testing.assert_array_equal(out['depth'],
                                orig['depth'][top:top + 4, left:left + 6])
  np.testing.assert_array_equal(out['label'],
                                orig['label'][top:top + 4, left:left + 6])
  # Box 1 covers pixels x in [4, 8), y in [3, 6) of the original.
  exp = np.clip([(4 - left) / 6, (3 - top) / 4, (8 - left) / 6,
                 (6 - top) / 4], 0, 1)
  np.testing.assert_allclose(out['boxes'][1], exp, atol=1e-6)


def test_center_crop_collapses_outside_boxes_but_keeps_slots():
  ex = _example(h=6, w=8)
  ex['boxes'] = tf.constant([[0.0, 0.0, 0.1, 0.1], [0.25, 0.25, 0.75, 0.75]])
  out = _np(ops.get_op('center_crop(4)')(ex))  # rows 1..4, cols 2..5
  np.testing.assert_array_equal(out['boxes'][0], 0.0)
  np.testing.assert_allclose(out['boxes'][1],
                             [0.0, (1.5 - 1) / 4, 1.0, (4.5 - 1) / 4])
  np.testing.assert_array_equal(out['classes'], [3, 7])
  np.testing.assert_array_equal(out['label'], _np(ex)['label'][1:5, 2:6])


@pytest.mark.parametrize('in_hw,out_hw', [((6, 8), (3, 4)), ((6, 8), (4, 5)),
                                          ((5, 7), (9, 13))])
def test_resize_nearest_matches_pytorch_floor_rule(in_hw, out_hw):
  ex = _example(*in_hw)
  out = _np(ops.get_op(f'resize({out_hw[0]}, {out_hw[1]})')(ex))
  rows = np.floor(np.arange(out_hw[0]) * in_hw[0] / out_hw[0]).astype(int)
  cols = np.floor(np.arange(out_hw[1]) * in_hw[1] / out_hw[1]).astype(int)
  orig = _np(ex)
  np.testing.assert_array_equal(out['label'], orig['label'][rows][:, cols])
  np.testing.assert_array_equal(out['instance'],
                                orig['instance'][rows][:, cols])
  assert out['image'].dtype == np.uint8 and out['image'].shape == (
      *out_hw, 3)
  assert out['depth'].dtype == np.float32 and out['depth'].shape == out_hw
  np.testing.assert_array_equal(out['boxes'], orig['boxes'])


def test_resize_nearest_matches_torch_when_available():
  torch = pytest.importorskip('torch')
  lab = np.random.default_rng(0).integers(0, 50, (13, 17)).astype(np.int32)
  out = ops.get_op('resize(7, 11)')({'label': tf.constant(lab)})['label']
  ref = torch.nn.functional.interpolate(
      torch.from_numpy(lab).float()[None, None], size=(7, 11),
      mode='nearest')[0, 0].numpy().astype(np.int32)
  np.testing.assert_array_equal(out.numpy(), ref)


def test_resize_bilinear_image_matches_torch_without_antialias():
  torch = pytest.importorskip('torch')
  img = np.random.default_rng(1).integers(0, 255, (8, 10, 3)).astype(np.uint8)
  out = ops.get_op('resize(5, 7)')({'image': tf.constant(img)})['image']
  ref = torch.nn.functional.interpolate(
      torch.from_numpy(img).float().permute(2, 0, 1)[None], size=(5, 7),
      mode='bilinear', align_corners=False, antialias=False)[0]
  ref = ref.permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)
  assert np.abs(out.numpy().astype(int) - ref.astype(int)).max() <= 1


def test_resize_antialias_matches_pil_bilinear():
  """resize(S, antialias=True): PIL's `Image.resize(BILINEAR)` (the sg2im /
  Layout2Im loaders) to one level; without antialiasing far from it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
  pil = np.asarray(Image.fromarray(img).resize((16, 16), Image.BILINEAR))
  diff = lambda spec: np.abs(ops.get_op(spec)({'image': tf.constant(img)})[
      'image'].numpy().astype(int) - pil).max()
  assert diff('resize(16, antialias=True)') <= 1
  assert diff('resize(16)') > 20


def test_instance_edges_on_two_regions():
  inst = np.zeros((4, 5), np.int32)
  inst[:, 3:] = 7  # vertical boundary between columns 2 and 3
  out = ops.get_op('instance_edges')({'instance': tf.constant(inst)})
  e = out['edges'].numpy()
  exp = np.zeros((4, 5), np.uint8)
  exp[:, 2:4] = 1
  assert e.dtype == np.uint8
  np.testing.assert_array_equal(e, exp)
  inst2 = np.zeros((3, 3), np.int32)
  inst2[1, 1] = 2  # one pixel: itself and its 4 neighbours, not the corners
  e2 = ops.get_op('instance_edges')({'instance': tf.constant(inst2)})
  np.testing.assert_array_equal(e2['edges'].numpy(),
                                [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_pad_objects_pads_and_truncates():
  ex = _example()
  out = _np(ops.get_op('pad_objects(4)')(ex))
  assert out['boxes'].shape == (4, 4) and out['classes'].shape == (4,)
  np.testing.assert_array_equal(out['classes'], [3, 7, 0, 0])
  np.testing.assert_array_equal(out['objects_mask'], [True, True, False,
                                                      False])
  np.testing.assert_array_equal(out['boxes'][2:], 0.0)
  assert out['num_objects'] == 2
  short = _np(ops.get_op('pad_objects(1)')(ex))
  np.testing.assert_array_equal(short['classes'], [3])
  np.testing.assert_array_equal(short['objects_mask'], [True])
  np.testing.assert_allclose(short['boxes'], _np(ex)['boxes'][:1])
  assert short['num_objects'] == 1


def test_onehot_and_ignore_ids():
  lab = tf.constant([[0, 2], [255, 1]], tf.int32)
  out = ops.get_op('onehot(3)')({'label': lab})['label_onehot'].numpy()
  assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
  np.testing.assert_array_equal(out[0, 0], [1, 0, 0])
  np.testing.assert_array_equal(out[0, 1], [0, 0, 1])
  np.testing.assert_array_equal(out[1, 0], [0, 0, 0])  # ignore id


def test_keep_drops_fields_but_internal_keys():
  out = ops.get_op("keep('image', 'boxes')")(_example())
  assert set(out) == {'image', 'boxes', '_seed'}


def test_ops_run_inside_tf_data_graph():
  pp = ops.build(['decode', 'resize(10, 12)', 'random_crop(8)', 'random_flip',
                  'instance_edges', 'onehot(10)', 'pad_objects(3)'])
  ds = tf.data.Dataset.from_tensors(_example()).map(pp)
  out = next(iter(ds))
  assert out['image'].shape == (8, 8, 3)
  assert out['label_onehot'].shape == (8, 8, 10)
  assert out['boxes'].shape == (3, 4)
