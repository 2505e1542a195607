"""Imports released `ZejianLi/LAMA` generator checkpoints (`G_*.pth`).

A checkpoint holds `netG.state_dict()` of `ResnetGenerator{64,128,256}`:
PyTorch module names, OIHW / (out, in) weights, spectral-norm tensors
(`weight_orig`, `weight_u`, `weight_v`) and BatchNorm running statistics.
`torch_to_flax_generator` turns it into the variables of
`jaxl2i.models.lama.LamaGenerator` ({'params', 'batch_stats',
'spectral_norm'}) and checks the result against the module's own variable
tree: every key of the file is consumed, none is missing, every shape fits.

Key-mapping rules (one `Entry` per PyTorch module, see `generator_table`):
* SN Linear `p.weight_orig` [out, in] → `p/dense/kernel` [in, out]; `p.bias`
  → `p/dense/bias`; `p.weight_u` [out] → spectral_norm `p/sn/dense/kernel/u`
  [1, out]; `p.weight_v` [in] → `.../v` [1, in]; σ = u·(W v) → `.../sigma`.
* SN Conv `p.weight_orig` [O, I, kh, kw] → `p/conv/kernel` [kh, kw, I, O];
  `weight_v` [I·kh·kw] is reordered to Flax's (kh, kw, I) flattening.
* BatchNorm weight/bias → scale/bias, running_mean/var → batch_stats
  mean/var; `num_batches_tracked` is accepted and dropped (momentum 0.1 BN
  never reads it). GroupNorm weight/bias → GroupNorm_0 scale/bias.
* Noise `noise_weight_seed` [1, C, 1, 1] → [C]; α, ρ scalars as they are;
  the (un-normalised) label embedding as it is.
* `fc` rows keep PyTorch's order: LamaGenerator reshapes the fc output to
  (B, C, 4, 4) before moving channels last (reference pitfall 10), exactly
  like `view(b, -1, 4, 4)`.

In eval mode `TorchSpectralNorm` divides by v·W·uᵀ from the stored u and v,
which is what `torch.nn.utils.spectral_norm` does in eval mode, so imported
models reproduce the official eval-mode outputs; σ is stored for
completeness. LostGAN-V1 generators (`WillSuen/LostGANs`) have their own
table in `lostgan_v1_import`, which shares the per-kind converters
(`convert_entry`) and the final checks (`build_variables`) of this file.

Reading `.pth` files needs no torch (`jaxl2i.nets.pth`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
from typing import Any, Iterator, Optional

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.models import lama
from jaxl2i.nets import pth

PyTree = Any
Path = tuple[str, ...]

# Wrapper prefixes removed when every key carries them (DataParallel / DDP,
# torch.compile).
_PREFIXES = ('module.', '_orig_mod.')
# PyTorch names of the trunk blocks per resolution (our names: res1..resN).
_TORCH_BLOCK = {64: 'res{}', 128: 'res{}', 256: 'res.{}.model'}
_FIRST_BLOCK = {64: 2, 128: 1, 256: 0}
# The first layer of LostGAN-V1's mask net (LAMA: mask_regress.conv1.conv.).
LOSTGAN_V1_MASK_KEY = 'mask_regress.conv1.0.'
_ADAPTION = ('mask_regress.query_affine.', 'mask_regress.key_affine.',
             'mask_regress.query_local.', 'mask_regress.mask_adjust_alpha')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch module (or scalar parameter) and its Flax counterpart.

  Attributes:
    torch: module prefix in the state_dict (the full key for 'scalar').
    flax: module path in the Flax variables.
    kind: 'sn_linear', 'sn_conv', 'bn', 'bn_stats' (affine=False BN),
      'gn_affine', 'embedding', 'noise' or 'scalar'.
  """
  torch: str
  flax: Path
  kind: str


# -------------------------------------------------------------- the tables


def _isla(t: str, f: Path) -> list[Entry]:
  return [Entry(f'{t}.weight_proj', f + ('weight_proj',), 'sn_linear'),
          Entry(f'{t}.bias_proj', f + ('bias_proj',), 'sn_linear'),
          Entry(f'{t}.batch_norm2d', f + ('batch_norm2d',), 'bn_stats'),
          Entry(f'{t}.rho', f + ('rho',), 'scalar'),
          Entry(f'{t}.alpha', f + ('alpha',), 'scalar')]


def _res_block(t: str, f: Path) -> list[Entry]:
  out = [Entry(f'{t}.{n}', f + (n,), 'sn_conv')
         for n in ('conv1', 'conv2', 'c_sc')]
  out += _isla(f'{t}.b1', f + ('b1',)) + _isla(f'{t}.b2', f + ('b2',))
  out += [Entry(f'{t}.noise1', f + ('noise1',), 'noise'),
          Entry(f'{t}.noise2', f + ('noise2',), 'noise'),
          Entry(f'{t}.alpha', f + ('alpha',), 'scalar')]
  return out


def _mask_net(mask_adaption: bool) -> list[Entry]:
  t, f = 'mask_regress', ('mask_regress',)
  out = [Entry(f'{t}.fc', f + ('fc',), 'sn_linear'),
         Entry(f'{t}.final.0', f + ('final_bn',), 'bn'),
         Entry(f'{t}.final.2', f + ('final_conv',), 'sn_conv')]
  for i in (1, 2, 3):   # MaskRegressBlock: conv = Sequential(BN, LReLU, SN)
    out += [Entry(f'{t}.conv{i}.conv.0', f + (f'conv{i}', 'bn'), 'bn'),
            Entry(f'{t}.conv{i}.conv.2', f + (f'conv{i}', 'conv'), 'sn_conv'),
            Entry(f'{t}.conv{i}.alpha', f + (f'conv{i}', 'alpha'), 'scalar')]
  if not mask_adaption:
    return out
  out += [Entry(f'{t}.query_affine', f + ('query_affine',), 'sn_linear'),
          Entry(f'{t}.key_affine', f + ('key_affine',), 'sn_linear'),
          Entry(f'{t}.mask_adjust_alpha', f + ('mask_adjust_alpha',),
                'scalar')]
  for i in (0, 1):   # MaskAdjustBlock: conv = Sequential(GN, LReLU, SN)
    g, q = f + (f'query_local_{i}',), f'{t}.query_local.{i}'
    out += [Entry(f'{q}.conv.0', g + ('GroupNorm_0',), 'gn_affine'),
            Entry(f'{q}.conv.2', g + ('conv',), 'sn_conv'),
            Entry(f'{q}.alpha', g + ('alpha',), 'scalar')]
  return out


def generator_table(resolution: int, *,
                    mask_adaption: bool = True) -> list[Entry]:
  """Entries of `ResnetGenerator{resolution}` (LAMA) → LamaGenerator."""
  if resolution not in lama.TRUNK:
    raise ValueError(f'resolution must be one of {sorted(lama.TRUNK)}, '
                     f'got {resolution}')
  out = [Entry('label_embedding', ('label_embedding',), 'embedding'),
         Entry('fc', ('fc',), 'sn_linear'),
         Entry('final.0', ('final_bn',), 'bn'),
         Entry('final.2', ('final_conv',), 'sn_conv')]
  out += [Entry(f'style_mapping.{2 * i}', (f'style_mapping_{i}',),
                'sn_linear') for i in range(3)]
  for i in range(len(lama.TRUNK[resolution]) - 1):
    t = _TORCH_BLOCK[resolution].format(i + _FIRST_BLOCK[resolution])
    out += _res_block(t, (f'res{i + 1}',))
  return out + _mask_net(mask_adaption)


# ----------------------------------------------------------- state_dicts


def _is_state_dict(obj: Any) -> bool:
  return (isinstance(obj, dict) and bool(obj) and
          all(isinstance(v, (np.ndarray, np.generic)) for v in obj.values()))


def unwrap_state_dict(obj: Any) -> dict[str, np.ndarray]:
  """The generator's {key: array} from a loaded checkpoint object.

  Accepts a bare state_dict, or a dict wrapping one (e.g. {'netG': sd} or
  {'state_dict': sd, 'epoch': ...}): the single nested state_dict, or the one
  holding a generator (`mask_regress.*` keys) when there are several.
  Removes a `module.` (DataParallel / DDP) or `_orig_mod.` prefix shared by
  every key.
  """
  if not _is_state_dict(obj):
    found = ([v for v in obj.values() if _is_state_dict(v)]
             if isinstance(obj, dict) else [])
    if len(found) > 1:
      found = [v for v in found
               if any('mask_regress.' in k for k in v)]
    if len(found) != 1:
      kind = (f'a dict with keys {sorted(map(str, obj))[:10]}'
              if isinstance(obj, dict) else type(obj).__name__)
      raise ValueError(f'expected a generator state_dict (or a dict holding '
                       f'one), got {kind}')
    obj = found[0]
  sd = {str(k): v for k, v in obj.items()}
  changed = True
  while changed:
    changed = False
    for p in _PREFIXES:
      if all(k.startswith(p) for k in sd):
        sd = {k[len(p):]: v for k, v in sd.items()}
        changed = True
  return sd


def load_state_dict(path: os.PathLike[str] | str) -> dict[str, np.ndarray]:
  """Reads a `G_*.pth` file (no torch needed) → unwrapped state_dict."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no such checkpoint file: {path}')
  try:
    obj = pth.read(path)
  except (pickle.UnpicklingError, EOFError, KeyError) as e:
    raise ValueError(f'{path} is not a readable PyTorch checkpoint: '
                     f'{e}') from e
  return unwrap_state_dict(obj)


def infer_generator_config(
    state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """LamaGenerator attributes that a (unwrapped) state_dict was built with.

  Returns:
    dict(resolution, num_classes, ch, z_dim, embed_dim, mask_hidden,
    mask_adaption); the resolution comes from the trunk block names (res2..5:
    64, res1..5: 128, res.0..5.model: 256).
  """
  keys = state_dict.keys()
  if any(k.startswith(LOSTGAN_V1_MASK_KEY) for k in keys):
    raise ValueError('a LostGAN-V1 generator state_dict (its mask net has '
                     f'{LOSTGAN_V1_MASK_KEY}* keys): convert it with '
                     'jaxl2i.models.lostgan_v1_import')
  if any(k.startswith('res.0.model.') for k in keys):
    res = 256
  elif any(k.startswith('res1.') for k in keys):
    res = 128
  elif any(k.startswith('res2.') for k in keys):
    res = 64
  else:
    raise ValueError('not a LAMA ResnetGenerator state_dict: no trunk block '
                     '(res1., res2. or res.0.model.) among its keys')
  need = ('label_embedding.weight', 'fc.weight_orig', 'final.0.weight',
          'mask_regress.fc.weight_orig')
  missing = [k for k in need if k not in state_dict]
  if missing:
    raise ValueError(f'not a LAMA generator state_dict: missing {missing}')
  emb = state_dict['label_embedding.weight'].shape
  return dict(resolution=res, num_classes=int(emb[0]),
              ch=int(state_dict['final.0.weight'].shape[0]),
              z_dim=int(state_dict['fc.weight_orig'].shape[1]),
              embed_dim=int(emb[1]),
              mask_hidden=int(
                  state_dict['mask_regress.fc.weight_orig'].shape[0]) // 16,
              mask_adaption=any(k.startswith(_ADAPTION) for k in keys))


# ------------------------------------------------------------- converting


Leaf = tuple[Path, np.ndarray, str]   # (collection + path, value, torch key)


def _f32(a: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(a, dtype=np.float32)


def _spectral(r: pth.StateDictReader, e: Entry, layer: str,
              expected: set[Path]) -> Iterator[Leaf]:
  """SN Linear / Conv: raw kernel, bias and u, v, σ (see module doc)."""
  w, u, v = (r.take(f'{e.torch}.{n}')
             for n in ('weight_orig', 'weight_u', 'weight_v'))
  bias_path = ('params',) + e.flax + (layer, 'bias')
  bias = r.take(f'{e.torch}.bias', optional=bias_path not in expected)
  if w is None or u is None or v is None:
    return
  w, u, v = _f32(w), _f32(u), _f32(v)
  expected_ndim = 4 if layer == 'conv' else 2
  if w.ndim != expected_ndim:
    raise ValueError(f'{e.torch}.weight_orig: expected a {expected_ndim}-D '
                     f'weight, got shape {w.shape}')
  mat = w.reshape(w.shape[0], -1).astype(np.float64)
  if mat.shape != (u.size, v.size):
    raise ValueError(f'{e.torch}: weight_u {u.shape} / weight_v '
                     f'{v.shape} do not fit weight_orig {w.shape}')
  # torch eval: W / σ with σ = u·(W v) from the stored vectors.
  sigma = np.float32(u.astype(np.float64) @ mat @ v.astype(np.float64))
  if layer == 'conv':   # OIHW → HWIO; v from (I, kh, kw) to (kh, kw, I)
    kernel = w.transpose(2, 3, 1, 0)
    v = v.reshape(w.shape[1:]).transpose(1, 2, 0)
  else:
    kernel = w.T
  sn = ('spectral_norm',) + e.flax + ('sn',)
  yield ('params',) + e.flax + (layer, 'kernel'), kernel, \
      f'{e.torch}.weight_orig'
  if bias is not None:
    yield bias_path, _f32(bias), f'{e.torch}.bias'
  yield sn + (f'{layer}/kernel/u',), u.reshape(1, -1), f'{e.torch}.weight_u'
  yield sn + (f'{layer}/kernel/v',), v.reshape(1, -1), f'{e.torch}.weight_v'
  yield sn + (f'{layer}/kernel/sigma',), np.asarray(sigma), \
      f'{e.torch}.weight_orig'


def convert_entry(r: pth.StateDictReader, e: Entry,
                  expected: set[Path]) -> Iterator[Leaf]:
  """Leaves of one table entry (missing keys are recorded in `r`)."""
  p, k = ('params',) + e.flax, e.kind
  if k in ('sn_linear', 'sn_conv'):
    yield from _spectral(r, e, 'dense' if k == 'sn_linear' else 'conv',
                         expected)
  elif k in ('bn', 'bn_stats', 'gn_affine'):
    names = {'weight': 'scale', 'bias': 'bias'} if k != 'bn_stats' else {}
    for tn, fn in names.items():
      a = r.take(f'{e.torch}.{tn}')
      if a is not None:
        yield p + (fn,), _f32(a), f'{e.torch}.{tn}'
    if k != 'gn_affine':
      s = ('batch_stats',) + e.flax
      for tn, fn in (('running_mean', 'mean'), ('running_var', 'var')):
        a = r.take(f'{e.torch}.{tn}')
        if a is not None:
          yield s + (fn,), _f32(a), f'{e.torch}.{tn}'
      r.take(f'{e.torch}.num_batches_tracked', optional=True)
  elif k == 'embedding':
    a = r.take(f'{e.torch}.weight')
    if a is not None:
      yield p + ('embedding',), _f32(a), f'{e.torch}.weight'
  elif k == 'noise':
    a = r.take(f'{e.torch}.noise_weight_seed')
    if a is not None:   # [1, C, 1, 1] → [C]
      yield p + ('noise_weight_seed',), _f32(a).reshape(-1), \
          f'{e.torch}.noise_weight_seed'
  elif k == 'scalar':
    a = r.take(e.torch)
    if a is not None:
      yield p, _f32(a).reshape(()) if a.size == 1 else _f32(a), e.torch
  else:
    raise ValueError(f'unknown entry kind {k!r}')


def key_list(keys, limit: int = 12) -> str:
  keys = sorted(keys)
  more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
  return ', '.join(keys[:limit]) + more


def expected_variables(generator: lama.LamaGenerator) -> PyTree:
  """ShapeDtypeStructs of the generator's variables (no computation)."""
  z = generator.z_dim
  args = (jnp.zeros((1, z)), jnp.zeros((1, 1, z)), jnp.zeros((1, 1, 4)),
          jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool))
  rngs = {'params': jax.random.key(0), 'noise': jax.random.key(1)}
  return jax.eval_shape(
      lambda: generator.init(rngs, *args, train=False))


@functools.lru_cache(maxsize=8)
def _expected_flat(resolution, num_classes, ch, z_dim, embed_dim, mask_hidden,
                   mask_adaption) -> dict[Path, jax.ShapeDtypeStruct]:
  gen = lama.LamaGenerator(resolution=resolution, num_classes=num_classes,
                           ch=ch, z_dim=z_dim, embed_dim=embed_dim,
                           mask_hidden=mask_hidden,
                           mask_adaption=mask_adaption)
  return traverse_util.flatten_dict(expected_variables(gen))


def torch_to_flax_generator(state_dict: dict[str, np.ndarray], *,
                            resolution: int, num_classes: int,
                            mask_adaption: bool = True, ch: int = 64,
                            z_dim: int = 128, embed_dim: Optional[int] = None,
                            mask_hidden: int = 128) -> dict[str, PyTree]:
  """Official LAMA generator state_dict → LamaGenerator variables.

  Args:
    state_dict: {key: array} of `netG.state_dict()` (numpy, e.g. from
      `load_state_dict`; a `module.` prefix or wrapper dict is removed here).
    resolution, num_classes, mask_adaption, ch, z_dim, embed_dim,
      mask_hidden: the LamaGenerator the variables are for (the official
      models: ch 64, z_dim 128, mask_hidden 128, embed_dim by resolution).
      With mask_adaption False (the "without adaption" ablation) the
      adaption keys may be absent, or present with mask_adjust_alpha = 0
      (the adaption is then the identity) and are dropped.

  Returns:
    {'params', 'batch_stats', 'spectral_norm'} of float32 numpy arrays with
    exactly the tree, shapes and dtypes of `LamaGenerator(...).init`.

  Raises:
    ValueError: keys missing from or unknown to the table (all listed), or a
      shape that does not fit (naming the key).
  """
  sd = unwrap_state_dict(state_dict)
  want = _expected_flat(resolution, num_classes, ch, z_dim, embed_dim,
                        mask_hidden, mask_adaption)
  reader = pth.StateDictReader(sd)
  leaves: dict[Path, tuple[np.ndarray, str]] = {}
  for entry in generator_table(resolution, mask_adaption=mask_adaption):
    for path, value, key in convert_entry(reader, entry, set(want)):
      leaves[path] = (value, key)
  if not mask_adaption:
    extra = [k for k in sd if k.startswith(_ADAPTION)]
    alpha = sd.get('mask_regress.mask_adjust_alpha')
    if extra and (alpha is None or np.any(np.asarray(alpha) != 0)):
      raise ValueError('the checkpoint uses mask adaption (mask_adjust_alpha'
                       f' = {alpha}); convert it with mask_adaption=True')
    reader.used.update(extra)
  unknown = set(sd) - reader.used
  if reader.missing or unknown:
    try:
      hint = infer_generator_config(sd)
      hint = (f' (it looks like a ResnetGenerator{hint["resolution"]}, '
              f'mask_adaption={hint["mask_adaption"]})')
    except ValueError:
      hint = ''
    raise ValueError(
        f'state_dict does not match ResnetGenerator{resolution}{hint}: '
        f'missing keys [{key_list(reader.missing)}]; unknown keys '
        f'[{key_list(unknown)}]')
  return build_variables(leaves, want)


def build_variables(leaves: dict[Path, tuple[np.ndarray, str]],
                    want: dict[Path, jax.ShapeDtypeStruct]) -> PyTree:
  """Converted leaves {path: (value, torch key)} → the variables of `want`
  (the module's flattened variable tree); ValueError naming the key of a
  leaf without a variable or of the wrong shape, or the unfilled variables.
  """
  for path, (value, key) in leaves.items():
    if path not in want:
      raise ValueError(f'{key}: no variable {"/".join(path)} in the model')
    if value.shape != want[path].shape:
      raise ValueError(f'{key}: shape {value.shape} after conversion does not '
                       f'fit {"/".join(path)} {want[path].shape}')
  absent = set(want) - set(leaves)
  if absent:
    raise ValueError('variables not filled from the state_dict: '
                     f'{key_list("/".join(p) for p in absent)}')
  flat = {p: v.astype(want[p].dtype) for p, (v, _) in leaves.items()}
  return traverse_util.unflatten_dict(flat)
