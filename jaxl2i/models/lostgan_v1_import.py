"""Imports released `WillSuen/LostGANs` LostGAN-V1 generator checkpoints.

A checkpoint holds `netG.state_dict()` of `ResnetGenerator64` /
`ResnetGenerator128` (`model/resnet_generator_v1.py`), usually with the
`module.` prefix of DataParallel (official test.py strips it).
`torch_to_flax_generator` turns it into the variables of
`jaxl2i.models.lostgan_v1.LostGanV1Generator` ({'params', 'batch_stats',
'spectral_norm'}) with the per-kind converters of `lama_import` (SN
Linear / Conv → kernel + u, v, σ; BatchNorm → scale/bias + running
statistics; the plain label embedding as it is; `fc` rows in PyTorch's
channel-major order, which the Flax model reshapes like `view(b, -1, 4, 4)`)
and checks the result against the module's own variable tree: every key of
the file is consumed, none is missing, every shape fits.

Key mapping (official → Flax; Sequential indices become `_i`):
  label_embedding.weight         → label_embedding/embedding
  fc.*                           → fc/dense/* (SN Linear)
  res{k}.conv1|conv2|c_sc.*      → res{k}/…/conv/* (SN Conv, bias)
  res{k}.b{1,2}.weight_proj|bias_proj.* → res{k}/b{1,2}/…/dense/* (SN)
  res{k}.b{1,2}.batch_norm2d.running_*  → batch_stats res{k}/b{1,2}/
                                          batch_norm2d/mean|var
  res{k}.b{1,2}.running_*, num_batches_tracked: buffers of the ISLA
                                          module's own BatchNorm2d base class,
                                          never read: accepted and dropped
  final.0.* (BN) / final.2.* (SN Conv) → final_0 / final_2
  mask_regress.fc.*              → mask_regress/fc (SN Linear)
  mask_regress.conv{i}.0 / .1    → mask_regress/conv{i}_0 (SN Conv) /
                                   conv{i}_1 (BN), i = 1..3
  mask_regress.conv3.3           → mask_regress/conv3_3 (SN Conv 1×1)
Blocks: res2..res5 at 64², res1..res5 at 128². The official empty `mapping`
has no keys.

`architecture` tells a LAMA from a LostGAN-V1 file by its keys (LostGAN-V2
files, with `alpha1` / `res*.conv_mask` keys, are refused).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from flax import traverse_util
import jax
import numpy as np

from jaxl2i.models import lama_import
from jaxl2i.models import lostgan_v1
from jaxl2i.models.lama_import import Entry
from jaxl2i.nets import pth

PyTree = Any
Path = tuple[str, ...]

# The ISLA module's own (unused) BatchNorm2d buffers: optional, dropped.
_UNUSED_BN = 'unused_bn'
_UNUSED_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')
_LAMA_KEYS = ('style_mapping.', 'mask_regress.conv1.conv.')


def architecture(state_dict: dict[str, np.ndarray]) -> str:
  """'lostgan_v1' or 'lama': which generator an unwrapped state_dict is.

  Raises:
    ValueError: a LostGAN-V2 generator, or neither kind.
  """
  keys = list(state_dict)
  has = lambda prefixes: any(k.startswith(prefixes) for k in keys)
  if has(('alpha1',)) or any('.conv_mask.' in k for k in keys):
    raise ValueError('a LostGAN-V2 generator state_dict (alpha1 / conv_mask '
                     'keys): jaxl2i imports LAMA and LostGAN-V1 generators')
  if has((lama_import.LOSTGAN_V1_MASK_KEY,)):
    return 'lostgan_v1'
  if has(_LAMA_KEYS):
    return 'lama'
  raise ValueError('neither a LAMA nor a LostGAN-V1 generator state_dict '
                   '(no mask_regress.conv1.0.* or mask_regress.conv1.conv.* '
                   f'keys); its keys: {lama_import.key_list(keys, 6)}')


def generator_table(resolution: int) -> list[Entry]:
  """Entries of LostGAN-V1 `ResnetGenerator{resolution}` → Flax paths."""
  if resolution not in lostgan_v1.TRUNK:
    raise ValueError(f'LostGAN-V1 has generators for '
                     f'{sorted(lostgan_v1.TRUNK)}, not {resolution}')
  out = [Entry('label_embedding', ('label_embedding',), 'embedding'),
         Entry('fc', ('fc',), 'sn_linear'),
         Entry('final.0', ('final_0',), 'bn'),
         Entry('final.2', ('final_2',), 'sn_conv')]
  first = lostgan_v1.FIRST_BLOCK[resolution]
  for i in range(len(lostgan_v1.TRUNK[resolution]) - 1):
    name = f'res{first + i}'
    out += [Entry(f'{name}.{c}', (name, c), 'sn_conv')
            for c in ('conv1', 'conv2', 'c_sc')]
    for b in ('b1', 'b2'):
      t, f = f'{name}.{b}', (name, b)
      out += [Entry(f'{t}.weight_proj', f + ('weight_proj',), 'sn_linear'),
              Entry(f'{t}.bias_proj', f + ('bias_proj',), 'sn_linear'),
              Entry(f'{t}.batch_norm2d', f + ('batch_norm2d',), 'bn_stats'),
              Entry(t, f, _UNUSED_BN)]
  t, f = 'mask_regress', ('mask_regress',)
  out.append(Entry(f'{t}.fc', f + ('fc',), 'sn_linear'))
  for i in (1, 2, 3):
    out += [Entry(f'{t}.conv{i}.0', f + (f'conv{i}_0',), 'sn_conv'),
            Entry(f'{t}.conv{i}.1', f + (f'conv{i}_1',), 'bn')]
  out.append(Entry(f'{t}.conv3.3', f + ('conv3_3',), 'sn_conv'))
  return out


def infer_generator_config(
    state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """LostGanV1Generator attributes an (unwrapped) state_dict was built with.

  Returns:
    dict(resolution, num_classes, ch, z_dim, embed_dim, mask_hidden); the
    resolution comes from the trunk block names (res2..5: 64, res1..5: 128).

  Raises:
    ValueError: not a LostGAN-V1 generator (one line).
  """
  if architecture(state_dict) != 'lostgan_v1':
    raise ValueError('a LAMA generator state_dict, not a LostGAN-V1 one: '
                     'convert it with jaxl2i.models.lama_import')
  keys = state_dict.keys()
  if any(k.startswith('res1.') for k in keys):
    res = 128
  elif any(k.startswith('res2.') for k in keys):
    res = 64
  else:
    raise ValueError('not a LostGAN-V1 ResnetGenerator state_dict: no trunk '
                     'block (res1. or res2.) among its keys')
  need = ('label_embedding.weight', 'fc.weight_orig', 'final.0.weight',
          'mask_regress.fc.weight_orig')
  missing = [k for k in need if k not in state_dict]
  if missing:
    raise ValueError('not a LostGAN-V1 generator state_dict: missing '
                     f'{missing}')
  emb = np.shape(state_dict['label_embedding.weight'])
  return dict(resolution=res, num_classes=int(emb[0]),
              ch=int(np.shape(state_dict['final.0.weight'])[0]),
              z_dim=int(np.shape(state_dict['fc.weight_orig'])[1]),
              embed_dim=int(emb[1]),
              mask_hidden=int(np.shape(
                  state_dict['mask_regress.fc.weight_orig'])[0]) // 16)


@functools.lru_cache(maxsize=8)
def _expected_flat(resolution, num_classes, ch, z_dim, embed_dim,
                   mask_hidden) -> dict[Path, jax.ShapeDtypeStruct]:
  gen = lostgan_v1.LostGanV1Generator(
      resolution=resolution, num_classes=num_classes, ch=ch, z_dim=z_dim,
      embed_dim=embed_dim, mask_hidden=mask_hidden)
  return traverse_util.flatten_dict(lama_import.expected_variables(gen))


def _looks_like(sd: dict[str, np.ndarray]) -> str:
  """' (it looks like …)' for error messages, or ''."""
  try:
    if architecture(sd) == 'lama':
      return ' (it is a LAMA generator: use jaxl2i.models.lama_import)'
    return (' (it looks like a LostGAN-V1 ResnetGenerator'
            f'{infer_generator_config(sd)["resolution"]})')
  except ValueError:
    return ''


def torch_to_flax_generator(state_dict: dict[str, np.ndarray], *,
                            resolution: int, num_classes: int, ch: int = 64,
                            z_dim: int = 128, embed_dim: Optional[int] = None,
                            mask_hidden: int = 128) -> dict[str, PyTree]:
  """Official LostGAN-V1 generator state_dict → LostGanV1Generator variables.

  Args:
    state_dict: {key: array} of `netG.state_dict()` (numpy, e.g. from
      `lama_import.load_state_dict`; a `module.` prefix or wrapper dict is
      removed here).
    resolution, num_classes, ch, z_dim, embed_dim, mask_hidden: the
      LostGanV1Generator the variables are for (official: ch 64, z_dim 128,
      mask_hidden 128, embed_dim None = 128 at 64², 180 at 128²).

  Returns:
    {'params', 'batch_stats', 'spectral_norm'} of float32 numpy arrays with
    exactly the tree, shapes and dtypes of `LostGanV1Generator(...).init`.

  Raises:
    ValueError: keys missing from or unknown to the table (all listed, one
      line), or a shape that does not fit (naming the key).
  """
  sd = lama_import.unwrap_state_dict(state_dict)
  want = _expected_flat(resolution, num_classes, ch, z_dim, embed_dim,
                        mask_hidden)
  reader = pth.StateDictReader(sd)
  leaves: dict[Path, tuple[np.ndarray, str]] = {}
  for entry in generator_table(resolution):
    if entry.kind == _UNUSED_BN:
      for name in _UNUSED_BUFFERS:
        reader.take(f'{entry.torch}.{name}', optional=True)
      continue
    for path, value, key in lama_import.convert_entry(reader, entry,
                                                      set(want)):
      leaves[path] = (value, key)
  unknown = set(sd) - reader.used
  if reader.missing or unknown:
    raise ValueError(
        f'state_dict does not match LostGAN-V1 ResnetGenerator{resolution}'
        f'{_looks_like(sd)}: missing keys '
        f'[{lama_import.key_list(reader.missing)}]; unknown keys '
        f'[{lama_import.key_list(unknown)}]')
  return lama_import.build_variables(leaves, want)
