"""Weight manager: cache, sha256 verification, downloads, offline errors.

Downloads come from a local HTTP server on 127.0.0.1 (ephemeral port).
"""
import hashlib
import http.server
import socket
import sys
import threading
import types

import numpy as np
import pytest

from jaxl2i.nets import pth
from jaxl2i.nets import weights

PAYLOAD = np.random.default_rng(0).bytes(300_000)  # Several 64 KiB chunks.
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
  """/good: the payload; /short: half of it under the full Content-Length."""
  requests = []

  def do_GET(self):  # pylint: disable=invalid-name
    type(self).requests.append(self.path)
    if self.path not in ('/good', '/short'):
      self.send_error(404)
      return
    self.send_response(200)
    self.send_header('Content-Length', str(len(PAYLOAD)))
    self.end_headers()
    if self.path == '/good':
      self.wfile.write(PAYLOAD)
    else:
      self.wfile.write(PAYLOAD[:len(PAYLOAD) // 2])
      self.wfile.flush()
      self.close_connection = True

  def log_message(self, *args):
    pass


@pytest.fixture(scope='module')
def server():
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXL2I_CACHE', str(tmp_path / 'cache'))
  monkeypatch.delenv('JAXL2I_OFFLINE', raising=False)
  monkeypatch.setattr(weights, '_CHUNK', 1 << 16)
  _Handler.requests.clear()
  return tmp_path / 'cache'


def _register(monkeypatch, url, sha=DIGEST[:8], name='test-abc.bin'):
  entry = weights.WeightFile(name=name, url=url, sha256=sha,
                             how_to_get='Test file.', short_name='tst')
  monkeypatch.setitem(weights._REGISTRY, name, entry)  # pylint: disable=protected-access
  return entry


def _files(directory):
  if not directory.exists():
    return []
  return sorted(p.name for p in directory.iterdir())


def _unused_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('sha', [DIGEST[:8], DIGEST])
def test_download_good_checksum(server, cache, monkeypatch, sha):
  _register(monkeypatch, f'{server}/good', sha=sha)
  path = weights.fetch('test-abc.bin')
  assert path == cache / 'test-abc.bin'
  assert path.read_bytes() == PAYLOAD
  assert _files(cache) == ['test-abc.bin', 'test-abc.bin.sha256']
  # A second fetch is a cache hit: no request, even offline.
  monkeypatch.setenv('JAXL2I_OFFLINE', '1')
  assert weights.fetch('tst') == path
  assert _Handler.requests == ['/good']


def test_download_bad_checksum_leaves_nothing(server, cache, monkeypatch):
  _register(monkeypatch, f'{server}/good', sha='0123abcd')
  with pytest.raises(weights.WeightsChecksumError, match=DIGEST):
    weights.fetch('test-abc.bin')
  assert _files(cache) == []


def test_interrupted_download_leaves_nothing(server, cache, monkeypatch):
  _register(monkeypatch, f'{server}/short')
  with pytest.raises(weights.WeightsUnavailableError, match='interrupted'):
    weights.fetch('test-abc.bin')
  assert _Handler.requests == ['/short']
  assert _files(cache) == []


def _assert_helpful(err, entry, cache):
  msg = str(err)
  assert entry.name in msg and entry.url in msg
  assert str(cache / entry.name) in msg
  assert 'python -m jaxl2i.nets.convert --name tst' in msg


def test_offline_switch(server, cache, monkeypatch):
  entry = _register(monkeypatch, f'{server}/good')
  monkeypatch.setenv('JAXL2I_OFFLINE', '1')
  with pytest.raises(weights.WeightsUnavailableError) as e:
    weights.fetch('test-abc.bin')
  _assert_helpful(e.value, entry, cache)
  assert 'JAXL2I_OFFLINE' in str(e.value)
  assert _Handler.requests == []  # No download was attempted.
  with pytest.raises(weights.WeightsUnavailableError):
    monkeypatch.delenv('JAXL2I_OFFLINE')
    weights.fetch('test-abc.bin', download=False)
  assert _Handler.requests == [] and _files(cache) == []


@pytest.mark.parametrize('path', ['', '/missing'])
def test_unreachable_or_missing_url(server, cache, monkeypatch, path):
  url = (f'http://127.0.0.1:{_unused_port()}/x' if not path
         else f'{server}{path}')
  entry = _register(monkeypatch, url)
  with pytest.raises(weights.WeightsUnavailableError) as e:
    weights.fetch('test-abc.bin')
  _assert_helpful(e.value, entry, cache)
  assert _files(cache) == []


def test_corrupt_cached_file_is_reported(cache, monkeypatch):
  _register(monkeypatch, 'http://127.0.0.1:9/x')
  cache.mkdir()
  (cache / 'test-abc.bin').write_bytes(b'not the file')
  with pytest.raises(weights.WeightsChecksumError, match='delete it'):
    weights.fetch('test-abc.bin')


def test_digest_sidecar_follows_file_changes(tmp_path):
  f = tmp_path / 'f.bin'
  f.write_bytes(b'one')
  assert weights.file_digest(f) == hashlib.sha256(b'one').hexdigest()
  assert (tmp_path / 'f.bin.sha256').is_file()
  f.write_bytes(b'two!')  # Different size, so the stamp changes.
  assert weights.file_digest(f) == hashlib.sha256(b'two!').hexdigest()


def test_install_verifies_and_copies(cache, tmp_path, monkeypatch):
  _register(monkeypatch, 'http://127.0.0.1:9/x')
  src = tmp_path / 'download.bin'
  src.write_bytes(PAYLOAD)
  assert weights.install('tst', src).read_bytes() == PAYLOAD
  src.write_bytes(b'wrong')
  (cache / 'test-abc.bin').unlink()
  with pytest.raises(weights.WeightsChecksumError):
    weights.install('tst', src)
  assert not (cache / 'test-abc.bin').exists()


def test_registry_and_cache_dir(monkeypatch, tmp_path):
  assert weights.get('vgg19').name == 'vgg19-dcbb9e9d.pth'
  assert weights.get('inception').sha256 == '6726825d'
  for entry in (weights.get('vgg19'), weights.get('inception')):
    assert entry.url.endswith('/' + entry.name)
    assert entry.sha256 in entry.name  # Hub convention: name holds a prefix.
  with pytest.raises(KeyError, match='vgg19-dcbb9e9d.pth'):
    weights.get('nope')
  monkeypatch.delenv('JAXL2I_CACHE', raising=False)
  monkeypatch.setenv('HOME', str(tmp_path))
  assert weights.cache_dir() == tmp_path / '.cache' / 'jaxl2i'
  assert weights.matches(DIGEST, DIGEST[:10].upper())
  assert not weights.matches(DIGEST, '') and not weights.matches(DIGEST, 'ff0')


def test_load_params_converts_once(cache, tmp_path, monkeypatch):
  """Conversion runs once per (source digest, converter version)."""
  calls = []
  fake = types.ModuleType('jaxl2i_fake_converter')
  fake.CONVERTER_VERSION = 1

  def convert(state_dict):
    calls.append(1)
    return {'params': {'w': state_dict['w'] * 2.0}}

  fake.convert = convert
  monkeypatch.setitem(sys.modules, 'jaxl2i_fake_converter', fake)
  monkeypatch.setattr(pth, 'load_state_dict',
                      lambda p: {'w': np.frombuffer(p.read_bytes()[:8], '<f4')})
  cache.mkdir()
  data = np.arange(2, dtype='<f4').tobytes()
  (cache / 'src.pth').write_bytes(data)
  monkeypatch.setitem(weights._REGISTRY, 'src.pth', weights.WeightFile(  # pylint: disable=protected-access
      name='src.pth', url='http://127.0.0.1:9/src.pth',
      sha256=hashlib.sha256(data).hexdigest()[:8],
      converter='jaxl2i_fake_converter:convert'))
  first = weights.load_params('src.pth', download=False)
  second = weights.load_params('src.pth', download=False)
  np.testing.assert_array_equal(first['params']['w'], [0.0, 2.0])
  np.testing.assert_array_equal(second['params']['w'], [0.0, 2.0])
  assert len(calls) == 1
  fake.CONVERTER_VERSION = 2  # A new converter version converts again.
  weights.load_params('src.pth', download=False)
  assert len(calls) == 2
  assert len([p for p in _files(cache) if p.endswith('.npz')]) == 2
