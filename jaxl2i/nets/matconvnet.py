"""Reads MatConvNet `simplenn` model files (.mat) without MATLAB.

The file CRN's loss uses, `imagenet-vgg-verydeep-19.mat` (MatConvNet's
pretrained-model page, MD5 106118b7cf60435e6d8e04f6a6dc3657), is read with
scipy.io.loadmat. Layout assumed, as that file and MatConvNet's documented
`simplenn` format have it:

  layers   1×N cell array; each cell a 1×1 struct with at least the fields
           `name` (char, e.g. 'conv1_1') and `type` (char: 'conv', 'relu',
           'pool', 'softmax', ...). Layers of type 'conv' (the fully
           connected fc6-fc8 are 'conv' too) have
           `weights`: a 1×2 cell {W, b}, W single [kh, kw, in, out],
           b single [out, 1] (or [1, out]).
           Other fields (size, pad, stride, method, precious, dilate, opts,
           leak) are not read.
  meta     struct with `normalization.averageImage` etc. (not read: CRN
           subtracts a fixed mean, reference/crn.md §5).

scipy gives the cell array as an object array of shape (1, N) whose entries
are (1, 1) structured arrays; fields are read by name, so the older files
whose struct fields come in another order read the same.

W is returned as stored. CRN's build_vgg19 feeds it unchanged to
tf.nn.conv2d as an HWIO filter (`vgg_layers[i][0][0][2][0][0]`), so it is
used unchanged as a Flax kernel (also HWIO, cross-correlation).
"""
from __future__ import annotations

import os

import numpy as np
import scipy.io


def _text(value) -> str:
  """A MATLAB char array as scipy returns it -> str."""
  return str(np.asarray(value).ravel()[0]) if np.size(value) else ''


def _field(struct: np.ndarray, name: str):
  names = struct.dtype.names or ()
  if name not in names:
    raise ValueError(f'MatConvNet layer struct has no field {name!r} '
                     f'(fields: {", ".join(names)})')
  return struct[name]


def read_simplenn(path: os.PathLike[str] | str) -> dict[str, np.ndarray]:
  """A simplenn .mat -> {'<layer>.weight': W, '<layer>.bias': b} (float32).

  W keeps the file's [kh, kw, in, out] layout; b is flattened to [out].
  Only layers of type 'conv' carry weights.

  Raises:
    ValueError: not a simplenn file (no `layers` cell array, a layer without
      name/type, a conv layer without its {W, b} pair).
  """
  try:
    data = scipy.io.loadmat(os.fspath(path))
  except (ValueError, TypeError, OSError,
          scipy.io.matlab.MatReadError) as e:
    raise ValueError(f'{path} is not a readable .mat file: {e}') from e
  if 'layers' not in data or data['layers'].dtype != object:
    raise ValueError(f'{path} has no `layers` cell array: not a MatConvNet '
                     'simplenn model')
  out = {}
  for cell in data['layers'].ravel():
    struct = np.asarray(cell).ravel()[0]
    name = _text(_field(struct, 'name'))
    if _text(_field(struct, 'type')) != 'conv':
      continue
    pair = np.asarray(_field(struct, 'weights')).ravel()
    if pair.size != 2:
      raise ValueError(f'conv layer {name!r} of {path} has {pair.size} '
                       'weight arrays, expected {W, b}')
    w, b = (np.asarray(a, np.float32) for a in pair)
    out[f'{name}.weight'] = w
    out[f'{name}.bias'] = b.reshape(-1)
  return out
