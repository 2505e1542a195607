"""Weight manager: published weight files, checksums, cache and conversion.

A registered `WeightFile` names a published PyTorch weight file. `fetch` returns
its verified path in the cache directory, downloading it when allowed, and
raises `WeightsUnavailableError` (saying which file, where to get it and where
to put it) when it cannot. `load_params` returns the Flax variables converted
from that file, converting once and caching the result as an `.npz` beside it.

Checksums. `WeightFile.sha256` is either a full sha256 hex digest or a prefix of
one. The published files used here follow the PyTorch hub convention: the hex
string in the file name (`vgg19-dcbb9e9d.pth`) is the start of the file's
sha256 digest, and only that prefix is known offline, so the registry holds
prefixes and verification compares the start of the digest. A file whose
publisher gives only an MD5 (MatConvNet's models) registers `md5` instead of
`sha256`. No digest is invented here; a full digest can be registered when one
is established.

Formats. A file is read into a flat {name: np.ndarray} by its entry's
`reader` (default: the torch-free .pth reader `jaxl2i.nets.pth`), then turned
into Flax variables by its `converter`.

Environment:
  JAXL2I_CACHE: cache directory (default `~/.cache/jaxl2i`).
  JAXL2I_OFFLINE=1: never try to download.
"""
import dataclasses
import hashlib
import http.client
import importlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request

from absl import logging
import numpy as np

_CHUNK = 1 << 20  # Bytes read per step when downloading or hashing.
_TIMEOUT_S = 30.0  # Socket timeout of a download.


class WeightsError(Exception):
  """Base class of the weight manager's errors."""


class WeightsUnavailableError(WeightsError):
  """The weight file is not in the cache and could not be downloaded."""


class WeightsChecksumError(WeightsError):
  """A weight file's sha256 does not match the registered digest."""


@dataclasses.dataclass(frozen=True)
class WeightFile:
  """A published weight file.

  Attributes:
    name: file name in the cache, e.g. 'vgg19-dcbb9e9d.pth'.
    url: where the file is published.
    sha256: full lowercase hex sha256 digest, or a prefix of it (see module
      docstring).
    size_hint: expected size in bytes, informational only (None if unknown).
    how_to_get: one sentence appended to the offline error message.
    converter: 'module:function' converting a state_dict (name -> np.ndarray)
      into a Flax variables dict; the module must define CONVERTER_VERSION.
    short_name: name used by `python -m jaxl2i.nets.convert --name`.
    md5: full lowercase hex MD5 digest, checked instead when `sha256` is ''.
    reader: 'module:function' reading the file (a path) into a flat
      {name: np.ndarray}; '' = `jaxl2i.nets.pth.load_state_dict`.
  """
  name: str
  url: str
  sha256: str
  size_hint: int | None = None
  how_to_get: str = ''
  converter: str = ''
  short_name: str = ''
  md5: str = ''
  reader: str = ''


def _registry() -> dict[str, WeightFile]:
  """Built-in entries (a fresh dict; `register` adds to `_REGISTRY`)."""
  entries = [
      WeightFile(
          name='pt_inception-2015-12-05-6726825d.pth',
          # URL as in pytorch_fid/inception.py (FID_WEIGHTS_URL).
          url=('https://github.com/mseitzer/pytorch-fid/releases/download/'
               'fid_weights/pt_inception-2015-12-05-6726825d.pth'),
          sha256='6726825d',
          how_to_get=('It is the TF 2015-12-05 FID Inception ported by '
                      'pytorch-fid (github.com/mseitzer/pytorch-fid).'),
          converter='jaxl2i.nets.inception_fid:convert_inception',
          short_name='inception'),
      WeightFile(
          name='vgg19-dcbb9e9d.pth',
          # URL as in torchvision/models/vgg.py (VGG19_Weights.IMAGENET1K_V1).
          url='https://download.pytorch.org/models/vgg19-dcbb9e9d.pth',
          sha256='dcbb9e9d',
          how_to_get=('It is torchvision\'s ImageNet VGG-19 '
                      '(torchvision.models.VGG19_Weights.IMAGENET1K_V1).'),
          converter='jaxl2i.nets.vgg19:convert_vgg19',
          short_name='vgg19'),
  ]
  return {e.name: e for e in entries}


_REGISTRY: dict[str, WeightFile] = _registry()


def register(entry: WeightFile) -> WeightFile:
  """Adds (or replaces) a registry entry; returns it."""
  _REGISTRY[entry.name] = entry
  return entry


def get(name: str) -> WeightFile:
  """Returns the entry with this file name or short name."""
  if name in _REGISTRY:
    return _REGISTRY[name]
  for entry in _REGISTRY.values():
    if entry.short_name and entry.short_name == name:
      return entry
  raise KeyError(f'Unknown weight file {name!r}; registered: '
                 f'{sorted(_REGISTRY)}')


def cache_dir() -> pathlib.Path:
  """`$JAXL2I_CACHE` or `~/.cache/jaxl2i` (not created here)."""
  env = os.environ.get('JAXL2I_CACHE')
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path('~/.cache/jaxl2i').expanduser()


def _offline() -> bool:
  return os.environ.get('JAXL2I_OFFLINE', '').lower() in ('1', 'true', 'yes')


def matches(digest: str, expected: str) -> bool:
  """True if the hex `digest` equals or starts with the `expected` prefix."""
  expected = expected.lower()
  return bool(expected) and digest.lower()[:len(expected)] == expected


def hash_file(path: os.PathLike[str] | str, algorithm: str = 'sha256') -> str:
  """Hex digest ('sha256' or 'md5') of a file, read in chunks."""
  h = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def sha256_file(path: os.PathLike[str] | str) -> str:
  """Hex sha256 of a file, read in chunks."""
  return hash_file(path, 'sha256')


def file_digest(path: pathlib.Path, algorithm: str = 'sha256') -> str:
  """Digest of `path`, memoised in a `<path>.<algorithm>` sidecar file.

  The sidecar records size and mtime; a changed file is hashed again.
  """
  st = path.stat()
  stamp = f'{st.st_size} {st.st_mtime_ns}'
  try:
    text = _sidecar(path, algorithm).read_text().split()
    if len(text) == 3 and ' '.join(text[:2]) == stamp:
      return text[2]
  except OSError:
    pass
  digest = hash_file(path, algorithm)
  _remember_digest(path, digest, algorithm)
  return digest


def _sidecar(path: pathlib.Path, algorithm: str) -> pathlib.Path:
  return path.with_name(f'{path.name}.{algorithm}')


def _remember_digest(path: pathlib.Path, digest: str,
                     algorithm: str = 'sha256') -> None:
  st = path.stat()
  try:
    _atomic_write_bytes(_sidecar(path, algorithm),
                        f'{st.st_size} {st.st_mtime_ns} {digest}\n'.encode())
  except OSError:  # A read-only cache still works, just slower.
    pass


def _expected(entry: WeightFile) -> tuple[str, str]:
  """(algorithm, registered digest or prefix) a file is verified with."""
  return ('sha256', entry.sha256) if entry.sha256 else ('md5', entry.md5)


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    _remove(tmp)
    raise


def _remove(path: os.PathLike[str] | str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _unavailable(entry: WeightFile, dest: pathlib.Path,
                 reason: str) -> WeightsUnavailableError:
  cmd = f'python -m jaxl2i.nets.convert --name {entry.short_name or entry.name}'
  algorithm, expected = _expected(entry)
  digest = (f'its sha256 starts with {expected!r}' if algorithm == 'sha256'
            else f'its {algorithm} is {expected!r}')
  return WeightsUnavailableError(
      f'Pretrained weight file {entry.name!r} is not available ({reason}). '
      f'Download it from {entry.url} and put it at {dest} ({digest}); it '
      f'is converted to Flax on first use, or run '
      f'`{cmd} --src <file>` to verify, copy and convert it. '
      f'{entry.how_to_get}'.strip())


def _verify(entry: WeightFile, path: pathlib.Path) -> pathlib.Path:
  algorithm, expected = _expected(entry)
  digest = file_digest(path, algorithm)
  if not matches(digest, expected):
    raise WeightsChecksumError(
        f'{path} has {algorithm} {digest}, expected {expected!r}(...) for '
        f'{entry.name}; delete it and fetch it again from {entry.url}.')
  return path


def _download(entry: WeightFile, dest: pathlib.Path) -> None:
  """Streams `entry.url` into a temp file beside `dest`, verifies, renames."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f'.{dest.name}.',
                             suffix='.part')
  algorithm, expected = _expected(entry)
  h = hashlib.new(algorithm)
  received = 0
  try:
    with os.fdopen(fd, 'wb') as f:
      try:
        with urllib.request.urlopen(entry.url, timeout=_TIMEOUT_S) as resp:
          length = resp.headers.get('Content-Length')
          while chunk := resp.read(_CHUNK):
            f.write(chunk)
            h.update(chunk)
            received += len(chunk)
      except (urllib.error.URLError, http.client.HTTPException,
              OSError) as e:
        # URLError (refused, DNS, HTTP status) means nothing was received.
        if received or isinstance(e, http.client.IncompleteRead):
          raise _unavailable(entry, dest, f'download interrupted after '
                             f'{received} bytes: {e!r}') from e
        raise _unavailable(entry, dest, f'download failed: {e!r}') from e
      if length is not None and received != int(length):
        raise _unavailable(entry, dest, f'download interrupted: got '
                           f'{received} of {length} bytes')
    digest = h.hexdigest()
    if not matches(digest, expected):
      raise WeightsChecksumError(
          f'Downloaded {entry.url} has {algorithm} {digest}, expected '
          f'{expected!r}(...); the file was discarded.')
    os.replace(tmp, dest)
  except BaseException:
    _remove(tmp)
    raise
  _remember_digest(dest, digest, algorithm)
  logging.info('Downloaded %s (%d bytes) to %s', entry.url, received, dest)


def fetch(name: str, *, download: bool = True) -> pathlib.Path:
  """Returns the verified path of a registered weight file.

  Args:
    name: registered file name or short name.
    download: try to download a missing file (unless JAXL2I_OFFLINE=1).

  Raises:
    WeightsUnavailableError: missing and not downloadable (offline,
      unreachable, interrupted).
    WeightsChecksumError: the cached or downloaded file has a wrong sha256.
  """
  entry = get(name)
  dest = cache_dir() / entry.name
  if dest.is_file():
    return _verify(entry, dest)
  if not download:
    raise _unavailable(entry, dest, 'not in the cache, download disabled')
  if _offline():
    raise _unavailable(entry, dest, 'not in the cache and JAXL2I_OFFLINE=1')
  _download(entry, dest)
  return dest


def install(name: str, src: os.PathLike[str] | str) -> pathlib.Path:
  """Verifies a local copy of a registered file and copies it into the cache."""
  entry = get(name)
  src = pathlib.Path(src)
  algorithm, expected = _expected(entry)
  digest = hash_file(src, algorithm)
  if not matches(digest, expected):
    raise WeightsChecksumError(f'{src} has {algorithm} {digest}, expected '
                               f'{expected!r}(...) for {entry.name}.')
  dest = cache_dir() / entry.name
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f'.{dest.name}.')
  try:
    with os.fdopen(fd, 'wb') as out, open(src, 'rb') as f:
      shutil.copyfileobj(f, out, _CHUNK)
    os.replace(tmp, dest)
  except BaseException:
    _remove(tmp)
    raise
  _remember_digest(dest, digest, algorithm)
  return dest


def flatten(tree: dict, prefix: str = '') -> dict:
  """Nested dict -> {'a/b/c': leaf} (leaves unchanged)."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '/'))
    else:
      out[key] = v
  return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b/c': array} -> nested dict."""
  tree: dict = {}
  for key, v in flat.items():
    node = tree
    *parents, leaf = key.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def random_variables(shapes: dict, seed: int = 0) -> dict:
  """Random variables for a tree of shapes, made on host with numpy.

  'kernel': He normal (std sqrt(2/fan_in), fan_in = prod(shape[:-1])), so
  activations keep their scale through the ReLU stacks of Inception, VGG and
  AlexNet (LeCun's 1/fan_in halves the variance per layer and ~90 layers of
  Inception collapse every image to the same features); 'bias' and 'mean':
  0; 'scale' and 'var': 1. Used as the stand-in when real weights are
  unavailable; cheap (no network compile).
  """
  rng = np.random.default_rng(seed)
  out = {}
  for key, leaf in flatten(shapes).items():
    shape, kind = tuple(leaf.shape), key.rsplit('/', 1)[-1]
    if kind == 'kernel':
      v = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif kind in ('scale', 'var'):
      v = np.ones(shape)
    elif kind in ('bias', 'mean'):
      v = np.zeros(shape)
    else:
      raise ValueError(f'No random initialiser for {key}')
    out[key] = v.astype(np.float32)
  return unflatten(out)


def _resolve_converter(entry: WeightFile):
  module_name, fn_name = entry.converter.split(':')
  module = importlib.import_module(module_name)
  return getattr(module, fn_name), int(module.CONVERTER_VERSION)


def _read(entry: WeightFile, src: pathlib.Path) -> dict[str, np.ndarray]:
  """The file's flat {name: array} through the entry's reader."""
  if not entry.reader:
    from jaxl2i.nets import pth  # pylint: disable=g-import-not-at-top
    return pth.load_state_dict(src)
  module_name, fn_name = entry.reader.split(':')
  return getattr(importlib.import_module(module_name), fn_name)(src)


def converted_path(name: str, src: pathlib.Path) -> pathlib.Path:
  """Cache path of the converted params of the verified source `src`."""
  entry = get(name)
  _, version = _resolve_converter(entry)
  stem = entry.name.rsplit('.', 1)[0]
  digest = file_digest(src)
  return src.with_name(f'{stem}.flax-v{version}-{digest[:16]}.npz')


def load_params(name: str, *, download: bool = True) -> dict:
  """Flax variables converted from a registered file (converted once, cached).

  Returns:
    Nested dict of float32 numpy arrays, e.g. {'params': ..., 'batch_stats':
    ...}, as produced by the entry's converter.
  """
  entry = get(name)
  src = fetch(name, download=download)
  npz = converted_path(name, src)
  if npz.is_file():
    with np.load(npz) as data:
      return unflatten({k: data[k] for k in data.files})
  convert, _ = _resolve_converter(entry)
  variables = convert(_read(entry, src))
  fd, tmp = tempfile.mkstemp(dir=npz.parent, prefix=f'.{npz.name}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **flatten(variables))
    os.replace(tmp, npz)
  except BaseException:
    _remove(tmp)
    raise
  logging.info('Converted %s to %s', src, npz)
  return variables


def load_or_random(name: str, init_variables, *, allow_random: bool,
                   download: bool) -> tuple[dict, bool]:
  """(load_params(name), False), or (init_variables(), True) when the file is
  unavailable and `allow_random`; the caller must label random results.

  Raises:
    WeightsUnavailableError: unavailable and allow_random is False.
  """
  try:
    return load_params(name, download=download), False
  except WeightsUnavailableError as e:
    if not allow_random:
      raise
    logging.warning('%s unavailable, using RANDOM weights (results are not '
                    'comparable to published ones): %s', name, e)
    return init_variables(), True
