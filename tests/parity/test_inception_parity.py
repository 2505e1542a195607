"""Parity of the Flax FID Inception with pytorch-fid's InceptionV3([3]).

pytorch-fid's own model is built (its download is monkeypatched to return a
random state_dict with kaiming-scaled convs and randomised BN statistics, so
pool3 features are O(1)); the same state_dict goes through jaxl2i's .pth reader
and converter into the Flax port. Also checks the torch-free .pth reader
against torch.load for both serialisation formats and the resize against
F.interpolate.
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

torchvision = pytest.importorskip('torchvision')
pi = pytest.importorskip('pytorch_fid.inception')

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxl2i.nets import inception_fid
from jaxl2i.nets import pth
from jaxl2i.nets import weights

TOL = 1e-4  # Max abs difference of pool3 features.


def _skeleton():
  """Same layers as pytorch_fid.inception.fid_inception_v3 (keys/shapes)."""
  net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # pylint: disable=protected-access
  net.Mixed_5b = pi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pi.FIDInceptionE_1(1280)
  net.Mixed_7c = pi.FIDInceptionE_2(2048)
  return net


def _random_state_dict(rng):
  out = {}
  for k, v in _skeleton().state_dict().items():
    shape = tuple(v.shape)
    if k.endswith('conv.weight'):  # Kaiming normal keeps activations O(1).
      a = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif k.endswith('bn.weight'):
      a = rng.uniform(0.7, 1.3, shape)
    elif k.endswith(('bn.bias', 'running_mean')):
      a = rng.normal(0.0, 0.2, shape)
    elif k.endswith('running_var'):
      a = rng.uniform(0.6, 1.6, shape)
    elif k.endswith('num_batches_tracked'):
      out[k] = v
      continue
    else:  # fc
      a = rng.normal(0.0, 0.01, shape)
    out[k] = torch.from_numpy(a.astype(np.float32))
  return out


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  rng = np.random.default_rng(0)
  sd = _random_state_dict(rng)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(pi, 'load_state_dict_from_url', lambda *a, **k: sd)
    model = pi.InceptionV3([3]).eval()
    blocks = pi.InceptionV3([0, 1, 2]).eval()
  # Round trip through a legacy-format .pth, as the published file is.
  path = tmp_path_factory.mktemp('inc') / 'inception.pth'
  torch.save(sd, path, _use_new_zipfile_serialization=False)
  variables = inception_fid.convert_inception(pth.load_state_dict(path))
  return model, inception_fid.inception_fn(variables), (blocks, variables), rng


def test_block_features_match_pytorch_fid_dims(setup):
  """--dims 64 / 192 / 768: global average of blocks 0 / 1 / 2, as
  pytorch-fid's calculate_activation_statistics pools them."""
  _, _, (blocks, variables), rng = setup
  images = rng.integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    refs = [torch.nn.functional.adaptive_avg_pool2d(o, 1)[:, :, 0, 0].numpy()
            for o in blocks(x)]
  for dims, ref in zip((64, 192, 768), refs):
    out = np.asarray(inception_fid.inception_fn(variables, dims)(images))
    assert out.shape == (2, dims) and ref.shape == (2, dims)
    assert np.abs(ref).mean() > 0.05
    assert np.abs(out - ref).max() <= TOL, dims
  with pytest.raises(ValueError, match='dims=100'):
    inception_fid.inception_fn(variables, 100)


@pytest.mark.parametrize('size', [64, 320])
def test_pool3_matches_pytorch_fid(setup, size):
  model, fn, _, rng = setup
  images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    ref = model(x)[0][:, :, 0, 0].numpy()
  out = np.asarray(fn(images))
  assert out.shape == (2, 2048) and out.dtype == np.float32
  diff = np.abs(out - ref).max()
  mag = np.abs(ref).mean()
  print(f'inception {size}px: max|diff| {diff:.2e}, mean|f| {mag:.3f}, '
        f'max|f| {np.abs(ref).max():.3f}')
  assert 0.1 < mag < 10.0  # Features are O(1), so TOL is meaningful.
  assert diff <= TOL
  # The float [0, 1] input convention gives the same features.
  np.testing.assert_allclose(np.asarray(fn(images / 255.0)), out, atol=1e-5)


@pytest.mark.parametrize('src,dst', [((64, 48), (299, 299)),
                                     ((320, 333), (299, 299)),
                                     ((7, 600), (13, 299))])
def test_resize_matches_interpolate(src, dst):
  x = np.random.default_rng(1).uniform(size=(2, *src, 3)).astype(np.float32)
  ref = torch.nn.functional.interpolate(
      torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode='bilinear',
      align_corners=False).permute(0, 2, 3, 1).numpy()
  out = np.asarray(inception_fid.resize_bilinear(x, dst))
  np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize('zipped', [True, False])
def test_pth_reader_matches_torch_load(tmp_path, zipped):
  g = torch.Generator().manual_seed(0)
  sd = {'w': torch.randn(4, 3, 2, 2, generator=g),
        't': torch.randn(5, 3, generator=g).t(),  # Non-contiguous view.
        'h': torch.randn(3, generator=g).half(),
        'n': torch.tensor(7)}
  path = tmp_path / 'x.pth'
  torch.save(sd, path, _use_new_zipfile_serialization=zipped)
  ref = torch.load(path, weights_only=True)
  got = pth.load_state_dict(path)
  assert list(got) == list(ref)
  for k, v in ref.items():
    assert got[k].dtype == v.numpy().dtype
    np.testing.assert_array_equal(got[k], v.numpy())


def test_load_params_converts_and_caches(tmp_path, monkeypatch):
  """weights.load_params on a registered .pth: converts once, then npz."""
  sd = _random_state_dict(np.random.default_rng(2))
  path = tmp_path / 'fid-test.pth'
  torch.save(sd, path)
  digest = weights.sha256_file(path)
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path))
  monkeypatch.setitem(weights._REGISTRY, 'fid-test.pth', weights.WeightFile(  # pylint: disable=protected-access
      name='fid-test.pth', url='http://127.0.0.1:9/none', sha256=digest[:8],
      converter='jaxl2i.nets.inception_fid:convert_inception'))
  first = weights.load_params('fid-test.pth', download=False)
  npz = weights.converted_path('fid-test.pth', path)
  assert npz.is_file()
  second = weights.load_params('fid-test.pth', download=False)
  k = 'Mixed_7c/branch_pool/conv/kernel'
  kernel = first['params']['Mixed_7c']['branch_pool']['conv']['kernel']
  np.testing.assert_array_equal(
      kernel, sd[k.replace('/', '.').replace('.kernel', '.weight')]
      .numpy().transpose(2, 3, 1, 0))
  flat1, flat2 = weights.flatten(first), weights.flatten(second)
  assert sorted(flat1) == sorted(flat2)
  for key in flat1:
    np.testing.assert_array_equal(flat1[key], flat2[key])
