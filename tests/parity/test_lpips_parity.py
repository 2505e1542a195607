"""Parity of jaxl2i.nets.lpips with `lpips.LPIPS(net='alex', version='0.1')`.

The reference is built with `pnet_rand=True` (random AlexNet trunk, nothing
downloaded) and `pretrained=True` (the real v0.1 linear heads shipped in the
lpips package); its state_dict goes through jaxl2i's converters into the Flax
port. Also checks the registered sha256 of the heads file, the torch-free
.pth reader on it, and the offline error of the weight manager.
"""
import pathlib

from absl import logging
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

torchvision = pytest.importorskip('torchvision')
lpips_ref = pytest.importorskip('lpips')

# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxl2i.nets import lpips
from jaxl2i.nets import pth
from jaxl2i.nets import weights

TOL = 1e-5  # Max abs difference of LPIPS distances.


def _heads_file():
  return pathlib.Path(lpips_ref.__file__).parent / 'weights/v0.1/alex.pth'


@pytest.fixture(scope='module')
def reference():
  torch.manual_seed(0)
  model = lpips_ref.LPIPS(net='alex', version='0.1', pretrained=True,
                          pnet_rand=True, verbose=False).eval()
  state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  return model, state


def _inputs(rng, n, h, w):
  x0 = rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32)
  # x1: a perturbed x0 and an unrelated image, so distances vary in size.
  x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), -1, 1).astype(np.float32)
  x1[0] = rng.uniform(-1, 1, (h, w, 3))
  return x0, x1


@pytest.mark.parametrize('h,w', [(64, 64), (72, 48)])
def test_lpips_matches_reference(reference, h, w):
  model, state = reference
  variables = lpips.convert_lpips(state)
  fn = lpips.lpips_fn(variables)
  x0, x1 = _inputs(np.random.default_rng(h * w), 3, h, w)
  with torch.no_grad():
    ref = model(torch.from_numpy(x0.transpose(0, 3, 1, 2)),
                torch.from_numpy(x1.transpose(0, 3, 1, 2)))
  ref = ref.numpy().reshape(-1).astype(np.float64)
  got = np.asarray(fn(jnp.asarray(x0), jnp.asarray(x1)), np.float64)
  logging.info('LPIPS %dx%d: reference %s jaxl2i %s max |diff| %.2e', h, w,
               ref, got, np.abs(ref - got).max())
  assert got.shape == (3,)
  assert (ref > 0).all()
  np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(fn(x0, x0)), 0.0, atol=1e-7)


def test_torchvision_key_layout_converts_the_same(reference):
  _, state = reference
  # Rename lpips's trunk keys (net.slice{k}.{i}.*) to torchvision's
  # (features.{i}.*); both layouts must give the same params.
  tv_state = {}
  for key, value in state.items():
    parts = key.split('.')
    if parts[0] == 'net':
      tv_state['features.' + '.'.join(parts[2:])] = value
  tv_state['classifier.1.weight'] = np.zeros((4096, 9216), np.float32)
  a = lpips.convert_alexnet(tv_state)
  b = lpips.convert_alexnet(state)
  flat_a, flat_b = weights.flatten(a), weights.flatten(b)
  assert sorted(flat_a) == sorted(flat_b) and len(flat_a) == 10
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_heads_file_digest_reader_and_offline_error(tmp_path, monkeypatch):
  path = _heads_file()
  entry = weights.get(lpips.LIN_WEIGHTS)
  assert weights.sha256_file(path) == entry.sha256  # Full digest registered.
  assert entry.size_hint == path.stat().st_size
  from_reader = lpips.convert_lin_heads(pth.load_state_dict(path))
  from_torch = lpips.convert_lin_heads(
      {k: v.numpy() for k, v in torch.load(path, map_location='cpu').items()})
  for k, v in weights.flatten(from_torch).items():
    np.testing.assert_array_equal(weights.flatten(from_reader)[k], v)
  assert all((v >= 0).all() for v in weights.flatten(from_torch).values())
  # Through the weight manager: the heads install and convert offline; the
  # AlexNet trunk is missing, so load_lpips must say which file to fetch.
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path))
  monkeypatch.setenv('JAXL2I_OFFLINE', '1')
  weights.install(lpips.LIN_WEIGHTS, path)
  heads = weights.load_params(lpips.LIN_WEIGHTS)
  np.testing.assert_array_equal(heads['params']['lin2']['kernel'],
                                from_torch['params']['lin2']['kernel'])
  with pytest.raises(weights.WeightsUnavailableError,
                     match='alexnet-owt-7be5be79'):
    lpips.load_lpips()
