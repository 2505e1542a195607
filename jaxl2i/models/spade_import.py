"""Imports released `NVlabs/SPADE` checkpoints (`latest_net_{G,D,E}.pth`).

Each file holds one `net.state_dict()` (`util.save_network`): PyTorch module
names, OIHW / (out, in) weights, spectral-norm tensors (`weight_orig`,
`weight_u`, `weight_v`) and the running statistics of the SPADE layers'
parameter-free SyncBatchNorms. The converters turn them into the variables of
`spade.SPADEGenerator`, `spade_discriminator.MultiscaleDiscriminator` and
`spade_discriminator.ConvEncoder` ({'params', 'batch_stats', SN_COLLECTION})
and check the result against the module's own variable tree: every key of
the file is consumed, none is missing, every shape fits (one-line
ValueErrors).

The Flax variable tree drives the conversion: a naming rule per network maps
each Flax module path to its PyTorch prefix, and leaves map to keys by kind:
* conv / linear `p.weight` [O, I, kh, kw] / [out, in] → `kernel` HWIO /
  [in, out]; `p.bias` → `bias`;
* spectral norm `p.weight_orig` → `kernel`, `p.weight_u` → SN `u`,
  `p.weight_v` [I·kh·kw] → SN `v` in (kh, kw, I) order
  (`spade.torch_spectral_to_flax`); PyTorch < 1.0 files (`p.weight`, no
  `p.weight_v`) get v solved as torch's load hook does;
* BatchNorm `p.running_mean/var` → batch_stats `mean`/`var`;
  `num_batches_tracked` is dropped (momentum BN never reads it).

Official module names (`models/networks/{generator,architecture,
normalization,discriminator,encoder}.py`):
* G: `fc` (Conv2d, or Linear with --use_vae), `head_0`, `G_middle_0/1`,
  `up_0..3` (`up_4` for 'most'), `conv_img`; blocks: `conv_0`, `conv_1`,
  (`conv_s`), `norm_0`, `norm_1`, (`norm_s`); SPADE layers:
  `param_free_norm`, `mlp_shared.0` (Sequential(conv, ReLU)), `mlp_gamma`,
  `mlp_beta`.
* D: `discriminator_{i}.model{n}`: the first and last stages are
  Sequential(conv[, LReLU]) → `model{n}.0`, the others Sequential(Sequential(
  SN conv, InstanceNorm), LReLU) → `model{n}.0.0` without `.bias`
  (`get_nonspade_norm_layer` deletes it).
* E: `layer{i}.0` (Sequential(SN conv, InstanceNorm), no bias), `fc_mu`,
  `fc_var`.
Weights alone do not tell 'normal' from 'more' upsampling (the extra ×2 has
no parameters), nor the image size of a conv-input G: the caller's settings
decide; `infer_generator_config` reports 'normal' (or 'most').
Reading `.pth` files needs no torch (`jaxl2i.nets.pth`).
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from typing import Any, Callable, Optional

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.models import lama_import
from jaxl2i.models import layers
from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sdisc
from jaxl2i.nets import pth

PyTree = Any
Path = tuple[str, ...]
TorchName = Callable[[Path, bool], str]
SN = spade.SN_COLLECTION
_NETS = {'G': 'conv_img.', 'D': 'discriminator_0.', 'E': 'fc_mu.'}


# ------------------------------------------------------------------ names


def generator_torch_name(path: Path, spectral: bool) -> str:
  """SPADEGenerator / SPADEResnetBlock / SPADE module path → torch prefix."""
  del spectral
  return '.'.join(p + '.0' if p == 'mlp_shared' else p for p in path)


def discriminator_torch_name(path: Path, spectral: bool) -> str:
  """MultiscaleDiscriminator / NLayerDiscriminator path → torch prefix."""
  out = []
  for p in path:
    if p.startswith('scale_'):
      p = 'discriminator_' + p[len('scale_'):]
    elif p.startswith('model'):
      p += '.0.0' if spectral else '.0'
    out.append(p)
  return '.'.join(out)


def encoder_torch_name(path: Path, spectral: bool) -> str:
  """ConvEncoder module path → torch prefix."""
  del spectral
  return '.'.join(p + '.0' if p.startswith('layer') else p for p in path)


def _is_state_dict(obj: Any) -> bool:
  return isinstance(obj, dict) and bool(obj) and all(
      isinstance(v, (np.ndarray, np.generic)) for v in obj.values())


def unwrap_state_dict(obj: Any, net: str = 'G') -> dict[str, np.ndarray]:
  """The {key: array} of network `net` ('G', 'D' or 'E') in a loaded file.

  Accepts a bare state_dict or a dict wrapping one or several (the one under
  'net<net>'/'<net>', else the one with that network's keys); removes a
  `module.` (DataParallel / DDP) or `_orig_mod.` prefix shared by all keys.
  """
  if isinstance(obj, dict) and not _is_state_dict(obj):
    found = {k: v for k, v in obj.items() if _is_state_dict(v)}
    pick = ([found[k] for k in (f'net{net}', net) if k in found] or
            [v for v in found.values() if any(_NETS[net] in k for k in v)] or
            list(found.values())[:1] * (len(found) == 1))
    if len(pick) != 1:
      raise ValueError(f'expected a net{net} state_dict (or a dict holding '
                       f'one), got a dict with keys {sorted(map(str, obj))}')
    obj = pick[0]
  return lama_import.unwrap_state_dict(obj)


def load_state_dict(path: os.PathLike[str] | str,
                    net: str = 'G') -> dict[str, np.ndarray]:
  """Reads `latest_net_<net>.pth` (no torch needed) → unwrapped state_dict."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no such checkpoint file: {path}')
  try:
    obj = pth.read(path)
  except (pickle.UnpicklingError, EOFError, KeyError) as e:
    raise ValueError(f'{path} is not a readable PyTorch checkpoint: '
                     f'{e}') from e
  return unwrap_state_dict(obj, net)


def _need(sd: dict[str, np.ndarray], what: str, *keys: str) -> None:
  missing = [k for k in keys if k not in sd]
  if missing:
    raise ValueError(f'not a SPADE {what} state_dict: missing {missing} '
                     f'(keys start with {sorted(sd)[:4]})')


def infer_generator_config(sd: dict[str, np.ndarray]) -> dict[str, Any]:
  """SPADEGenerator settings of a (unwrapped) `netG` state_dict.

  Returns:
    dict(semantic_nc, ngf, num_upsampling_layers ('normal' — same weights
    as 'more' — or 'most'), use_vae, z_dim, out_channels, spade_hidden,
    spectral, param_free_norm): the keyword arguments of
    `torch_to_flax_generator`.
  """
  spectral = 'head_0.conv_0.weight_orig' in sd
  conv0 = 'head_0.conv_0.weight' + ('_orig' if spectral else '')
  shared = 'head_0.norm_0.mlp_shared.0.weight'
  _need(sd, 'generator', 'fc.weight', 'conv_img.weight', conv0, shared)
  fc = sd['fc.weight']
  use_vae = fc.ndim == 2
  return dict(
      semantic_nc=int(sd[shared].shape[1]),
      ngf=int(sd[conv0].shape[0]) // 16,
      num_upsampling_layers='most' if any(
          k.startswith('up_4.') for k in sd) else 'normal',
      use_vae=use_vae, z_dim=int(fc.shape[1]) if use_vae else spade.Z_DIM,
      out_channels=int(sd['conv_img.weight'].shape[0]),
      spade_hidden=int(sd[shared].shape[0]), spectral=spectral,
      param_free_norm='batch' if (
          'head_0.norm_0.param_free_norm.running_mean' in sd) else 'instance')


def _count(pattern: str, keys) -> int:
  """Number of distinct first groups of `pattern` matching the keys."""
  return len({m.group(1) for m in map(re.compile(pattern).match, keys) if m})


def infer_discriminator_config(sd: dict[str, np.ndarray]) -> dict[str, Any]:
  """dict(in_channels, ndf, n_layers, num_d) of a `netD` state_dict."""
  _need(sd, 'discriminator', 'discriminator_0.model0.0.weight')
  w = sd['discriminator_0.model0.0.weight']
  return dict(in_channels=int(w.shape[1]), ndf=int(w.shape[0]),
              n_layers=_count(r'discriminator_0\.model(\d+)\.', sd) - 1,
              num_d=_count(r'discriminator_(\d+)\.', sd))


def infer_encoder_config(sd: dict[str, np.ndarray]) -> dict[str, Any]:
  """dict(ndf, num_layers, input_size, z_dim) of a `netE` state_dict."""
  _need(sd, 'encoder', 'layer1.0.weight_orig', 'fc_mu.weight')
  n = _count(r'layer(\d+)\.0\.weight_orig$', sd)
  ndf = int(sd['layer1.0.weight_orig'].shape[0])
  last = sd.get(f'layer{n}.0.weight_orig', sd['layer1.0.weight_orig'])
  cells = sd['fc_mu.weight'].shape[1] // max(int(last.shape[0]), 1)
  return dict(ndf=ndf, num_layers=n,
              input_size=int(round(np.sqrt(cells))) * 2**n,
              z_dim=int(sd['fc_mu.weight'].shape[0]))


# ------------------------------------------------------------- converting


def _legacy_v(w: np.ndarray, u: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """v of a PyTorch < 1.0 SN file (weight_orig, weight, weight_u), as
  torch's `SpectralNormLoadStateDictPreHook`: solve W v ∝ u, u·W v = σ."""
  mat, weight = w.reshape(w.shape[0], -1).astype(np.float64), weight.ravel()
  sigma = mat.ravel() @ weight / (weight @ weight.astype(np.float64))
  # v = W⁺u (torch: (WᵀW)⁺Wᵀu) = Wᵀ(WWᵀ)⁺u: an out × out system.
  gram, u64 = mat @ mat.T, u.astype(np.float64)
  try:
    np.linalg.cholesky(gram)   # full row rank: (WWᵀ)⁺ = (WWᵀ)⁻¹
    v = mat.T @ np.linalg.solve(gram, u64)
  except np.linalg.LinAlgError:
    v = mat.T @ (np.linalg.pinv(gram) @ u64)
  return (v * sigma / (u @ mat @ v)).astype(np.float32)


def _module(r: pth.StateDictReader, t: str,
            leaves: set[tuple[str, str]]):
  """Yields ((collection, leaf), value, torch key) of one Flax module whose
  torch keys start with `t` ('' or a prefix ending in '.')."""
  if ('params', 'kernel') in leaves and (SN, 'u') in leaves:
    w, u = r.take(f'{t}weight_orig'), r.take(f'{t}weight_u')
    v = r.take(f'{t}weight_v', optional=True)
    if v is None:
      legacy = r.take(f'{t}weight', optional=True)
      if legacy is None:
        r.missing.append(f'{t}weight_v')
      elif w is not None and u is not None:
        v = _legacy_v(w, u, legacy)
    if w is not None and u is not None and v is not None:
      if w.ndim != 4 or (u.size, v.size) != (w.shape[0], w[0].size):
        raise ValueError(f'{t}weight_orig {w.shape}, weight_u {u.shape} and'
                         f' weight_v {v.shape} are not a spectral-norm conv')
      kernel, state = spade.torch_spectral_to_flax(w, u, v)
      yield ('params', 'kernel'), kernel, f'{t}weight_orig'
      yield (SN, 'u'), state['u'], f'{t}weight_u'
      yield (SN, 'v'), state['v'], f'{t}weight_v'
  elif ('params', 'kernel') in leaves:
    w = r.take(f'{t}weight')
    if w is not None:
      yield ('params', 'kernel'), (
          layers.torch_conv_kernel_to_flax(w) if w.ndim == 4 else
          layers.torch_linear_kernel_to_flax(w)), f'{t}weight'
  if ('params', 'bias') in leaves:
    b = r.take(f'{t}bias')
    if b is not None:
      yield ('params', 'bias'), b, f'{t}bias'
  if ('batch_stats', 'mean') in leaves:
    for tn, fn in (('running_mean', 'mean'), ('running_var', 'var')):
      a = r.take(f'{t}{tn}')
      if a is not None:
        yield ('batch_stats', fn), a, f'{t}{tn}'
    r.take(f'{t}num_batches_tracked', optional=True)


def _names(keys, limit: int = 12) -> str:
  keys = sorted(keys)
  more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
  return ', '.join(keys[:limit]) + more


def torch_to_flax(state_dict: dict[str, np.ndarray], expected: PyTree,
                  torch_name: TorchName, what: str = 'the model'
                  ) -> dict[str, PyTree]:
  """Fills every leaf of `expected` (a variables tree of ShapeDtypeStructs or
  arrays, e.g. from `jax.eval_shape(module.init, ...)`) from a state_dict;
  `torch_name(flax module path, is spectral-norm)` → PyTorch module prefix.

  Raises:
    ValueError: keys missing or unknown (all listed, one line), or a shape
      that does not fit (naming the key).
  """
  sd = lama_import.unwrap_state_dict(dict(state_dict))
  want = traverse_util.flatten_dict(expected)
  modules: dict[Path, set[tuple[str, str]]] = {}
  for col, *path, leaf in want:
    modules.setdefault(tuple(path), set()).add((col, leaf))
  r, leaves_out = pth.StateDictReader(sd, np.float32), {}
  for path, leaves in modules.items():
    t = torch_name(path, (SN, 'u') in leaves)
    for (col, leaf), value, key in _module(r, t + '.' if t else '', leaves):
      leaves_out[(col, *path, leaf)] = (value, key)
  unknown = set(sd) - r.used
  if r.missing or unknown:
    raise ValueError(f'state_dict does not match {what}: missing keys '
                     f'[{_names(r.missing)}]; unknown keys '
                     f'[{_names(unknown)}]')
  flat = {}
  for p, (value, key) in leaves_out.items():
    if value.shape != want[p].shape:
      raise ValueError(f'{key}: shape {value.shape} after conversion does '
                       f'not fit {"/".join(p)} {want[p].shape}')
    flat[p] = value.astype(want[p].dtype)
  absent = set(want) - set(flat)
  if absent:
    raise ValueError('variables not filled from the state_dict: '
                     f'{_names("/".join(p) for p in absent)}')
  return traverse_util.unflatten_dict(flat)


@functools.lru_cache(maxsize=16)
def _eval_shape(module, *shapes: tuple[int, ...]) -> PyTree:
  args = [jnp.zeros(s) for s in shapes]
  rngs = {'params': jax.random.key(0), 'noise': jax.random.key(1)}
  return jax.eval_shape(lambda: module.init(rngs, *args, train=False))


def _merge(inferred: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
  return {**inferred, **{k: v for k, v in given.items() if v is not None}}


def torch_to_flax_generator(
    state_dict: dict[str, np.ndarray], *,
    image_size: Optional[tuple[int, int]] = None, **settings: Any
) -> dict[str, PyTree]:
  """Official `netG` state_dict → SPADEGenerator variables.

  Args:
    state_dict: {key: array} (numpy; a `module.` prefix is removed here).
    image_size: (H, W) the generator will produce; checks a VAE generator's
      `fc` (16·ngf·sh·sw outputs). None: the grid of the file.
    **settings: SPADEGenerator settings and `semantic_nc`, as returned by
      `infer_generator_config`; those not given (or None) are inferred.

  Returns:
    {'params', 'batch_stats' (param_free_norm 'batch'), SN_COLLECTION
    (spectral)} float32 numpy arrays with exactly the tree and shapes of
    `SPADEGenerator(**settings).init`.
  """
  sd = lama_import.unwrap_state_dict(dict(state_dict))
  found = infer_generator_config(sd)
  cfg = _merge(found, settings)
  nc = cfg.pop('semantic_nc')
  num_up = spade.NUM_UP[cfg['num_upsampling_layers']]
  if image_size is None:
    cells = (sd['fc.weight'].shape[0] // (16 * found['ngf'])
             if found['use_vae'] else 1)
    image_size = (cells * 2**num_up, 2**num_up)
  h, w = image_size
  sh, sw = spade.latent_grid(h, w, num_up)
  if cfg['use_vae'] and found['use_vae'] and sd['fc.weight'].shape[0] != (
      16 * cfg['ngf'] * sh * sw):
    raise ValueError(
        f'fc.weight: {sd["fc.weight"].shape[0]} outputs = 16·ngf·(latent '
        f'cells), but {h}×{w} images with {cfg["num_upsampling_layers"]!r} '
        f'upsampling need a {sh}×{sw} grid: the crop size or aspect ratio '
        'differs from the checkpoint\'s')
  g = spade.SPADEGenerator(**cfg)
  shapes = [(1, h, w, nc)] + ([(1, cfg['z_dim'])] if cfg['use_vae'] else [])
  return torch_to_flax(sd, _eval_shape(g, *shapes), generator_torch_name,
                       f'SPADEGenerator({nc} input channels, {cfg})')


def torch_to_flax_discriminator(state_dict: dict[str, np.ndarray],
                                **settings: Any) -> dict[str, PyTree]:
  """Official `netD` state_dict → MultiscaleDiscriminator variables
  ({'params', SN_COLLECTION}); settings: those of
  `infer_discriminator_config` (in_channels = semantic_nc + image channels),
  inferred when not given."""
  sd = lama_import.unwrap_state_dict(dict(state_dict))
  cfg = _merge(infer_discriminator_config(sd), settings)
  c = cfg.pop('in_channels')
  d = sdisc.MultiscaleDiscriminator(**cfg)
  return torch_to_flax(sd, _eval_shape(d, (1, 64, 64, c)),
                       discriminator_torch_name,
                       f'MultiscaleDiscriminator({c} input channels, {cfg})')


def torch_to_flax_encoder(state_dict: dict[str, np.ndarray],
                          **settings: Any) -> dict[str, PyTree]:
  """Official `netE` state_dict → ConvEncoder variables ({'params',
  SN_COLLECTION}); settings: those of `infer_encoder_config`, inferred when
  not given."""
  sd = lama_import.unwrap_state_dict(dict(state_dict))
  cfg = _merge(infer_encoder_config(sd), settings)
  e = sdisc.ConvEncoder(**cfg)
  s = cfg['input_size']
  return torch_to_flax(sd, _eval_shape(e, (1, s, s, 3)), encoder_torch_name,
                       f'ConvEncoder({cfg})')


def vae_generator_variables(g: dict[str, PyTree],
                            e: dict[str, PyTree]) -> dict[str, PyTree]:
  """Variables of `spade_vae.VAEGenerator` from those of its two parts."""
  out: dict[str, PyTree] = {}
  for name, part in (('encoder', e), ('generator', g)):
    for col, tree in part.items():
      out.setdefault(col, {})[name] = tree
  return out
