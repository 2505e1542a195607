"""MatConvNet's imagenet-vgg-verydeep-19.mat: reader, converter, weight
manager (MD5), and CRN's VGG-19 (average pools, [0,255] − mean) against the
official build_vgg19 written in TensorFlow on the same file's arrays.

The test writes a .mat with the official variable layout (a 1×43 `layers`
cell array of structs name/type/weights{W,b}/…, relu and pool structs, fc6-8
and the softmax, and `meta.normalization`). Conv layers have VGG-19's real
shapes (80 MB, written in ~0.2 s); fc6-fc8, which nothing reads, are tiny.
"""

import dataclasses
import hashlib

import jax
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from jaxl2i.nets import matconvnet
from jaxl2i.nets import vgg19
from jaxl2i.nets import weights

CRN_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32,
                    34)   # vgg_layers[i] of demo_256p.py's build_vgg19


def _cell(*items):
  out = np.empty((1, len(items)), object)
  for i, x in enumerate(items):
    out[0, i] = x
  return out


def _conv(name, w, b):
  return {'name': name, 'type': 'conv', 'weights': _cell(w, b),
          'size': np.array([w.shape], float), 'pad': np.ones((1, 4)),
          'stride': np.ones((1, 2)), 'precious': 0, 'dilate': 1,
          'opts': np.empty((0, 0), object)}


def _layers(rng):
  layers, cin = [], 3
  for b, widths in enumerate(vgg19.BLOCKS, start=1):
    for l, w in enumerate(widths, start=1):
      k = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, w))
      layers.append(_conv(f'conv{b}_{l}', k.astype(np.float32),
                          rng.normal(0, 0.1, (w, 1)).astype(np.float32)))
      layers.append({'name': f'relu{b}_{l}', 'type': 'relu', 'leak': 0,
                     'precious': 0})
      cin = w
    layers.append({'name': f'pool{b}', 'type': 'pool', 'method': 'max',
                   'pool': np.full((1, 2), 2.0), 'stride': np.full((1, 2), 2.0),
                   'pad': np.zeros((1, 4)), 'precious': 0,
                   'opts': np.empty((0, 0), object)})
  for i, name in enumerate(('fc6', 'fc7', 'fc8'), start=6):
    layers.append(_conv(name, np.ones((1, 1, 2, 2), np.float32),
                        np.ones((2, 1), np.float32)))
    if i < 8:
      layers.append({'name': f'relu{i}', 'type': 'relu', 'leak': 0,
                     'precious': 0})
  layers.append({'name': 'prob', 'type': 'softmax', 'precious': 0})
  return layers


@pytest.fixture(scope='module')
def mat_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('vgg') / 'imagenet-vgg-verydeep-19.mat'
  layers = _layers(np.random.default_rng(0))
  assert len(layers) == 43
  meta = {'normalization': {'averageImage': np.array(
      [[vgg19.MATCONVNET_MEAN]]), 'imageSize': np.array([[224, 224, 3]])}}
  scipy.io.savemat(str(path), {'layers': _cell(*layers), 'meta': meta})
  return path


def test_reader_keeps_the_files_arrays(mat_file):
  raw = scipy.io.loadmat(str(mat_file))['layers'][0]
  got = matconvnet.read_simplenn(mat_file)
  assert sorted(k for k in got if k.endswith('.weight')) == sorted(
      [f'{n}.weight' for k, n, _ in vgg19.LAYERS if k == 'conv'] +
      ['fc6.weight', 'fc7.weight', 'fc8.weight'])
  for i, (kind, name, _) in zip(CRN_CONV_INDICES, (
      x for x in vgg19.LAYERS if x[0] == 'conv')):
    del kind
    # demo_256p.py: weights = vgg_layers[i][0][0][2][0][0], bias [0][1].
    np.testing.assert_array_equal(got[f'{name}.weight'], raw[i][0][0][2][0][0])
    np.testing.assert_array_equal(got[f'{name}.bias'],
                                  raw[i][0][0][2][0][1].ravel())
  params = vgg19.convert_matconvnet_vgg19(got)['params']
  assert len(params) == 16
  np.testing.assert_array_equal(params['conv3_2']['kernel'],
                                got['conv3_2.weight'])
  with pytest.raises(ValueError, match='conv5_4 missing'):
    vgg19.convert_matconvnet_vgg19(
        {k: v for k, v in got.items() if not k.startswith('conv5_4')})


def test_reader_rejects_other_files(tmp_path):
  scipy.io.savemat(str(tmp_path / 'x.mat'), {'net': np.zeros(3)})
  with pytest.raises(ValueError, match='no `layers` cell array'):
    matconvnet.read_simplenn(tmp_path / 'x.mat')
  (tmp_path / 'y.mat').write_bytes(b'not a mat file')
  with pytest.raises(ValueError, match='not a readable .mat'):
    matconvnet.read_simplenn(tmp_path / 'y.mat')


def _build_vgg19_tf(image, raw):
  """demo_256p.py build_vgg19 up to conv5_2 on the file's raw arrays."""
  def conv(x, i):
    w = raw[i][0][0][2][0][0]
    b = raw[i][0][0][2][0][1].reshape(-1)
    return tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], 'SAME') + b)
  pool = lambda x: tf.nn.avg_pool(x, [1, 2, 2, 1], [1, 2, 2, 1], 'SAME')
  net = {}
  x = image - np.array(vgg19.MATCONVNET_MEAN).reshape(1, 1, 1, 3)
  idx = iter(CRN_CONV_INDICES)
  for b, widths in enumerate(vgg19.BLOCKS, start=1):
    for l in range(1, len(widths) + 1):
      x = net[f'conv{b}_{l}'] = conv(x, next(idx))
      if (b, l) == (5, 2):
        return net
    x = pool(x)


def test_crn_vgg_matches_the_official_graph_through_the_manager(
    mat_file, tmp_path, monkeypatch):
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path / 'cache'))
  entry = weights.get('vgg19_matconvnet')
  assert entry.name == mat_file.name and not entry.sha256
  with pytest.raises(weights.WeightsChecksumError, match='md5'):
    weights.install(entry.name, mat_file)   # not the published file
  md5 = hashlib.md5(mat_file.read_bytes()).hexdigest()
  registry = weights._REGISTRY  # pylint: disable=protected-access
  monkeypatch.setitem(registry, entry.name, dataclasses.replace(entry, md5=md5))
  weights.install(entry.name, mat_file)
  variables, random = vgg19.load_matconvnet_vgg19(download=False)
  assert not random
  image = np.random.default_rng(1).uniform(0, 255, (1, 32, 48, 3))
  image = image.astype(np.float32)
  raw = scipy.io.loadmat(str(mat_file))['layers'][0]
  want = _build_vgg19_tf(image, raw)
  taps = tuple(f'relu{b}_2' for b in range(1, 6))
  x = image - np.asarray(vgg19.MATCONVNET_MEAN, np.float32)
  got = jax.jit(lambda v, x: vgg19.VGG19Features(pool='avg').apply(
      v, x, taps))(variables, x)
  for t in taps:
    ref = want[t.replace('relu', 'conv')].numpy()
    err = np.abs(np.asarray(got[t]) - ref).max()
    assert err <= 1e-5 * max(1.0, np.abs(ref).max()), (t, err)


def test_missing_file_says_what_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path))
  with pytest.raises(weights.WeightsUnavailableError) as e:
    vgg19.load_matconvnet_vgg19(download=False)
  msg = str(e.value)
  assert "its md5 is '106118b7cf60435e6d8e04f6a6dc3657'" in msg
  assert 'vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat' in msg
  assert '--name vgg19_matconvnet' in msg
  variables, random = vgg19.load_matconvnet_vgg19(allow_random=True,
                                                  download=False)
  assert random and len(variables['params']) == 16
