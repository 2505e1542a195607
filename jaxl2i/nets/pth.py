"""Reads PyTorch `.pth` state_dicts into numpy without importing torch.

Both serialisation formats written by `torch.save` are supported:
- the zip format (torch >= 1.6): `<root>/data.pkl` + `<root>/data/<key>`
  (+ an optional `<root>/byteorder` record);
- the legacy stream format (torch < 1.6, used by the published VGG-19 and FID
  Inception files): pickled magic number, protocol version, system info, the
  object, the list of storage keys, then per storage an int64 element count and
  the raw bytes.

The unpickler resolves only the few globals a state_dict needs (OrderedDict,
tensor/parameter rebuild functions, storage types) and refuses everything else,
so reading an untrusted file cannot run code. The very old tar format (torch
< 0.1.10) is not supported. tests/parity/test_inception_parity.py checks this
reader against `torch.load` on files in both formats.
"""
import collections
import dataclasses
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
_PROTOCOL = 1001  # torch/serialization.py PROTOCOL_VERSION

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64,
    'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: type


@dataclasses.dataclass
class _Storage:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass
class _Tensor:
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *unused):
  return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(data, *unused):
  return data


_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
}


def _text(s) -> str:
  return s.decode('ascii') if isinstance(s, bytes) else s


class _Unpickler(pickle.Unpickler):
  """Unpickler that builds placeholders for storages and tensors."""

  def __init__(self, f, storages: dict[str, _Storage]):
    super().__init__(f, encoding='utf-8')
    self._storages = storages

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if (module, name) in _GLOBALS:
      return _GLOBALS[(module, name)]
    raise pickle.UnpicklingError(
        f'{module}.{name} is not allowed in a state_dict file')

  def persistent_load(self, pid):
    if _text(pid[0]) != 'storage':
      raise pickle.UnpicklingError(f'Unknown persistent id {pid[0]!r}')
    storage_type, key, _, numel = pid[1:5]
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError('Storage views are not supported')
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'Unsupported storage {storage_type!r}')
    key = _text(key)
    if key not in self._storages:
      self._storages[key] = _Storage(key, np.dtype(storage_type.dtype),
                                     int(numel))
    return self._storages[key]


def _materialise(obj, data: dict[str, np.ndarray]):
  """Replaces `_Tensor` placeholders (recursively) by numpy arrays."""
  if isinstance(obj, _Tensor):
    flat = data[obj.storage.key]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[obj.offset:], shape=obj.shape,
        strides=tuple(s * item for s in obj.stride))
    return np.array(view)  # Contiguous copy.
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v, data)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, data) for v in obj)
  return obj


def _read_zip(path) -> object:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl')]
    if len(pkl) != 1:
      raise ValueError(f'{path}: expected one */data.pkl, found {pkl}')
    root = pkl[0][:-len('data.pkl')]
    big = (root + 'byteorder' in names and
           z.read(root + 'byteorder').strip() == b'big')
    storages: dict[str, _Storage] = {}
    with z.open(pkl[0]) as f:
      obj = _Unpickler(f, storages).load()
    data = {}
    for key, s in storages.items():
      dtype = s.dtype.newbyteorder('>') if big else s.dtype
      arr = np.frombuffer(z.read(f'{root}data/{key}'), dtype=dtype)
      data[key] = arr[:s.numel].astype(s.dtype)
  return _materialise(obj, data)


def _read_legacy(path) -> object:
  with open(path, 'rb') as f:
    if pickle.load(f) != _MAGIC:
      raise ValueError(f'{path} is neither a zip nor a legacy torch file')
    if pickle.load(f) != _PROTOCOL:
      raise ValueError(f'{path}: unsupported legacy protocol version')
    sys_info = pickle.load(f)
    little = sys_info.get('little_endian', True)
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = [_text(k) for k in pickle.load(f)]
    data = {}
    for key in keys:
      s = storages[key]
      numel = int(np.frombuffer(f.read(8), '<i8' if little else '>i8')[0])
      dtype = s.dtype.newbyteorder('<' if little else '>')
      raw = f.read(numel * s.dtype.itemsize)
      if len(raw) != numel * s.dtype.itemsize:
        raise ValueError(f'{path} is truncated (storage {key})')
      data[key] = np.frombuffer(raw, dtype=dtype).astype(s.dtype)
  return _materialise(obj, data)


def read(path: os.PathLike[str] | str) -> object:
  """Loads a `torch.save`d object of dicts/lists/tensors; tensors -> numpy."""
  if zipfile.is_zipfile(path):
    return _read_zip(path)
  return _read_legacy(path)


def load_state_dict(path: os.PathLike[str] | str) -> dict[str, np.ndarray]:
  """Reads a `.pth` state_dict as {name: np.ndarray} (native dtypes).

  A checkpoint dict holding the weights under 'state_dict' is unwrapped.
  """
  obj = read(path)
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict):
    raise ValueError(f'{path} does not hold a state_dict')
  return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}


class StateDictReader:
  """Takes keys out of a state_dict, remembering what was used or absent.

  Importers read every tensor through `take` and then report `missing` keys
  and the keys of the file that were never used (`set(sd) - used`).
  """

  def __init__(self, sd: dict[str, np.ndarray], dtype=None):
    self.sd, self.dtype = sd, dtype
    self.used: set[str] = set()
    self.missing: list[str] = []

  def take(self, key: str, optional: bool = False) -> np.ndarray | None:
    """The tensor `key` (as `dtype` if given); None and, unless `optional`,
    recorded in `missing` when the file lacks it."""
    if key not in self.sd:
      if not optional:
        self.missing.append(key)
      return None
    self.used.add(key)
    return np.asarray(self.sd[key], self.dtype)
