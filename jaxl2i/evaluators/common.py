"""What every evaluator shares: eval batches, generators, pretrained nets.

An evaluator is configured by one entry of `config.evals`:

  config.evals.fid = dict(type='fid', every=1000, num_samples=5000, ...)

`type` names a module of jaxl2i/evaluators/ exposing `Evaluator(name, cfg,
*, config, recipe, mesh, workdir)` with `run(state) -> (metrics, protocol)`:
`metrics` are floats, `protocol` says how they were computed (number of
samples, split, resize, which generator, which weights) and is recorded next
to every number.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxl2i import config_lib
from jaxl2i import parallel
from jaxl2i.data import pipeline
from jaxl2i.nets import inception_fid

PyTree = Any

RANDOM_WARNING = ('computed with RANDOM network weights because the weight '
                  'file is unavailable: NOT comparable to published numbers')


def with_defaults(
    cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """cfg completed with config_lib's defaults of its type; unknown keys fail."""
  try:
    return config_lib.evaluator(**cfg.to_dict())
  except config_lib.ConfigError as e:
    raise ValueError(str(e)) from e


UINT8_MODES = ('round', 'truncate')


def to_uint8(images: jax.Array, mode: str = 'round') -> jax.Array:
  """[-1,1] float -> uint8, exactly as the images would be saved as PNG.

  'round': round((x + 1)·127.5) (jaxl2i's PNGs, torchvision save_image);
  'truncate': uint8((x·0.5 + 0.5)·255), the cast LAMA's test.py uses.
  """
  x = (images.astype(jnp.float32) + 1.0) * 127.5
  x = jnp.round(x) if mode == 'round' else jnp.floor(x)
  return jnp.clip(x, 0, 255).astype(jnp.uint8)


def generator_variables(state, which: str) -> PyTree | None:
  """G variables for 'ema' or 'live' (None for 'ema' without an EMA)."""
  g = state.g
  if which == 'ema':
    return None if state.ema_g is None else {'params': state.ema_g, **g.state}
  if which == 'live':
    return {'params': g.params, **g.state}
  raise ValueError(f"generator {which!r}: use 'ema' or 'live'")


class Base:
  """Eval batches, sampling and protocol bookkeeping for one evaluator."""

  def __init__(self, name: str, cfg, *, config, recipe, mesh, workdir: str):
    cfg = with_defaults(cfg)
    self.name, self.cfg, self.config = name, cfg, config
    self.recipe, self.mesh, self.workdir = recipe, mesh, workdir
    self.every = int(cfg.every)
    self.at_end = bool(cfg.at_end)
    bs = cfg.batch_size or config.batch_size
    self.batch_size = math.ceil(bs / jax.device_count()) * jax.device_count()
    self.sample = jax.jit(recipe.sample)
    self.random_weights = False
    if cfg.uint8 not in UINT8_MODES:
      raise ValueError(f'evals.{name}.uint8={cfg.uint8!r}: use one of '
                       f'{UINT8_MODES}')
    if cfg.samples_per_input < 1:
      raise ValueError(f'evals.{name}.samples_per_input must be >= 1')

  def require_recipe(self, method: str, missing: str) -> None:
    """Fails (ValueError) unless the recipe has `method`; `missing` says
    what the recipe lacks, e.g. 'produces no object masks'."""
    if not hasattr(self.recipe, method):
      raise ValueError(f'evaluator {self.name}: recipe '
                       f'{self.config.recipe!r} {missing}')

  def batches(self) -> Iterator[tuple[np.ndarray, PyTree]]:
    """(mask, global batch) over the eval split, every host's rows included.

    `mask` is the global bool [B] validity of the rows as numpy (False for
    the padding of the last batch), in the order of the gathered features.
    """
    ds = pipeline.eval_dataset(
        self.config.data,
        host_batch_size=self.batch_size // jax.process_count(),
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_examples=self.cfg.num_samples or None)   # 0: the whole split
    for host in ds.as_numpy_iterator():
      batch = parallel.to_global(host, self.mesh)
      yield parallel.to_host(batch['_mask']), batch

  def generators(self, state) -> list[tuple[str, PyTree]]:
    out = []
    for which in self.cfg.generators:
      variables = generator_variables(state, which)
      if variables is not None:
        out.append((which, variables))
    return out

  def sample_key(self, i: int, k: int = 0) -> jax.Array:
    """Key of sample k of batch i (same across generators: comparable)."""
    key = jax.random.fold_in(jax.random.key(self.cfg.seed), i)
    return key if k == 0 else jax.random.fold_in(key, k)

  def fake_images(self, variables, batch, i: int) -> Iterator[jax.Array]:
    """`samples_per_input` uint8 samples of batch i (LAMA: 5 per layout)."""
    for k in range(self.cfg.samples_per_input):
      images = self.sample(variables, batch, self.sample_key(i, k))
      yield to_uint8(images, self.cfg.uint8)

  def protocol(self, **extra) -> dict[str, Any]:
    p = dict(type=self.cfg.type, split=self.config.data.eval_split,
             dataset=self.config.data.name,
             num_samples=self.cfg.num_samples or 'the whole split',
             samples_per_input=self.cfg.samples_per_input,
             generators=list(self.cfg.generators),
             images=f'generator output quantised to uint8 ({self.cfg.uint8})'
                    ' as saved PNGs', **extra)
    if self.random_weights:
      p['WARNING'] = RANDOM_WARNING
    return p

  @property
  def dims(self) -> int:
    """Inception feature size of this evaluator (`dims`; 2048 = pool3)."""
    return int(self.cfg.get('dims', inception_fid.FEATURE_DIM))

  def load_inception(self):
    """Jitted uint8 images -> [B, dims] features, replicated on the mesh."""
    variables, self.random_weights = inception_fid.load_inception(
        allow_random=self.cfg.allow_random_weights,
        download=self.cfg.download_weights)
    if self.random_weights:
      logging.warning('evaluator %s: %s', self.name, RANDOM_WARNING)
    variables = jax.device_put(variables, parallel.replicated(self.mesh))
    return inception_fid.inception_fn(variables, self.dims)

  def metric_name(self, base: str) -> str:
    """'fid' -> 'fid_dims64' for non-pool3 Inception features, then
    '..._RANDOM_WEIGHTS' when the network is random."""
    if self.dims != inception_fid.FEATURE_DIM:
      base = f'{base}_dims{self.dims}'
    return f'{base}_RANDOM_WEIGHTS' if self.random_weights else base

  def inception_protocol(self) -> str:
    features = ('pool3 2048-d' if self.dims == inception_fid.FEATURE_DIM else
                f'{self.dims}-d block features (pytorch-fid --dims '
                f'{self.dims}; NOT comparable to 2048-d FIDs)')
    if self.random_weights:
      return f'RANDOM-weight InceptionV3 (no weight file cached), {features}'
    return (f'pytorch-fid InceptionV3 ({inception_fid.WEIGHTS_NAME}), '
            f'bilinear resize to 299 without antialiasing, {features}, '
            'float32')

