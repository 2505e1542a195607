"""CRN's Cityscapes input: the label encoding and MATLAB-style resizing."""

import numpy as np
import tensorflow as tf

from jaxl2i.data import label_ops
from jaxl2i.data import ops
from jaxl2i.data.builders import cityscapes_maps

# datasets/cityscapes.json of the official code: the 19 train-id colours.
CRN_PALETTE = np.array([
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
    [190, 153, 153], [153, 153, 153], [250, 170, 30], [220, 220, 0],
    [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
    [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100],
    [0, 0, 230], [119, 11, 32]], np.uint8)
# cityscapesScripts labels.py colour of every labelId 0..33, and
# 'license plate' (our id 34).
LABEL_COLOURS = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0),
    (81, 0, 81), (128, 64, 128), (244, 35, 232), (250, 170, 160),
    (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110),
    (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142)], np.uint8)


def _get_semantic_map(colour):
  """helper.get_semantic_map + the void channel of demo_*.py (numpy)."""
  hit = np.stack([np.all(colour == c, -1) for c in CRN_PALETTE], -1)
  hit = hit.astype(np.float32)
  return np.concatenate([hit, 1 - hit.sum(-1, keepdims=True)], -1)


def test_crn_labels_equal_the_palette_match_of_the_colour_maps():
  ids = np.arange(-1, 37).reshape(2, 19).astype(np.int32)   # all + strays
  assert len(LABEL_COLOURS) == cityscapes_maps.NUM_CLASSES
  out = ops.get_op('cityscapes_crn_labels')({'label': tf.constant(ids)})
  got = out['label'].numpy()
  valid = (ids >= 0) & (ids < 35)
  colours = LABEL_COLOURS[np.clip(ids, 0, 34)]
  want = _get_semantic_map(colours).argmax(-1)
  np.testing.assert_array_equal(got[valid], want[valid])
  assert (got[~valid] == label_ops.CRN_VOID).all()
  # polegroup shares the pole colour; caravan, trailer, parking are void.
  assert got.ravel()[18 + 1] == 5 and got.ravel()[29 + 1] == 19
  assert label_ops.CRN_CLASS_NAMES[13] == 'car' and len(
      label_ops.CRN_CLASS_NAMES) == label_ops.CRN_NUM_CLASSES == 20


def _cubic(x):
  """MATLAB imresize's cubic kernel (Keys, a = -0.5)."""
  x = np.abs(x)
  return ((1.5 * x**3 - 2.5 * x**2 + 1) * (x <= 1) +
          (-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2) * ((x > 1) & (x <= 2)))


def _matlab_weights(n_in, n_out):
  """MATLAB imresize(…, 'bicubic') with antialiasing, as a [out, in]
  matrix: kernel widened by 1/scale, rows normalised, mirrored borders."""
  scale = n_out / n_in
  width = 4 / scale
  x = np.arange(1, n_out + 1)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = int(np.ceil(width)) + 2
  idx = left[:, None] + np.arange(taps)[None]
  w = scale * _cubic(scale * (u[:, None] - idx))
  w /= w.sum(1, keepdims=True)
  mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
  idx = mirror[np.mod(idx.astype(int) - 1, 2 * n_in)]
  m = np.zeros((n_out, n_in))
  for r in range(n_out):
    np.add.at(m[r], idx[r], w[r])
  return m


def test_bicubic_antialiased_resize_is_matlabs_imresize_inside():
  """extract256full.m: imresize(photo, [256 512]) (bicubic, antialiased);
  labels imresize(…, 'nearest'). Same away from the border."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (64, 128, 3)).astype(np.uint8)
  label = rng.integers(0, 35, (64, 128)).astype(np.int32)
  op = ops.get_op('resize(16, 32, method="bicubic", antialias=True, '
                  'nearest="half_pixel")')
  out = op({'image': tf.constant(image), 'label': tf.constant(label)})
  rows, cols = _matlab_weights(64, 16), _matlab_weights(128, 32)
  want = np.einsum('oh,hwc,pw->opc', rows, image.astype(np.float64), cols)
  want = np.clip(np.round(want), 0, 255)
  got = out['image'].numpy().astype(np.float64)
  inner = (slice(2, -2), slice(2, -2))
  assert np.abs(got[inner] - want[inner]).max() <= 1
  plain = ops.get_op('resize(16, 32, method="bicubic")')(
      {'image': tf.constant(image)})['image'].numpy().astype(np.float64)
  assert np.abs(plain[inner] - want[inner]).mean() > 10   # aliased: far off
  # MATLAB 'nearest': 0-based source floor((i + ½)·4) = 4i + 2.
  np.testing.assert_array_equal(out['label'].numpy(),
                                label[2::4][:, 2::4])
