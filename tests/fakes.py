"""Deterministic fake batches and dataset metadata for trainer tests."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i import config_lib
from jaxl2i import state as state_lib

NUM_CLASSES = 11


@dataclasses.dataclass(frozen=True)
class FakeMeta:
  """Quacks like jaxl2i.data.pipeline.DatasetMeta."""
  num_classes: int = NUM_CLASSES
  class_names: tuple = tuple(f'c{i}' for i in range(NUM_CLASSES))
  image_size: tuple = (32, 32)
  ignore_label: int | None = None
  max_objects: int = 4
  num_examples: dict = dataclasses.field(default_factory=dict)


def batch(batch_size=8, size=32, seed=0, max_objects=4):
  """A batch of the data contract: image correlated with label, boxes."""
  rng = np.random.default_rng(seed)
  label = np.zeros((batch_size, size, size), np.int32)
  instance = np.zeros((batch_size, size, size), np.int32)
  label[:, : size // 2] = 1
  label[:, size // 2:] = 2
  boxes = np.zeros((batch_size, max_objects, 4), np.float32)
  classes = np.zeros((batch_size, max_objects), np.int32)
  for b in range(batch_size):
    for o in range(max_objects - 1):
      x0, y0 = rng.uniform(0, 0.6, 2)
      w, h = rng.uniform(0.2, 0.4, 2)
      boxes[b, o] = (x0, y0, x0 + w, y0 + h)
      classes[b, o] = rng.integers(5, NUM_CLASSES)
      r0, r1 = int(y0 * size), int((y0 + h) * size)
      c0, c1 = int(x0 * size), int((x0 + w) * size)
      label[b, r0:r1, c0:c1] = classes[b, o]
      instance[b, r0:r1, c0:c1] = o + 1   # object slot o = instance id o+1
  colours = rng.integers(0, 256, (NUM_CLASSES, 3)).astype(np.uint8)
  image = colours[label]
  edges = np.zeros(instance.shape, bool)   # 4-neighbour instance changes
  dy = instance[:, 1:] != instance[:, :-1]
  dx = instance[:, :, 1:] != instance[:, :, :-1]
  edges[:, 1:] |= dy
  edges[:, :-1] |= dy
  edges[:, :, 1:] |= dx
  edges[:, :, :-1] |= dx
  depth = np.broadcast_to(np.linspace(0, 1, size, dtype=np.float32)[:, None],
                          label.shape).copy()
  depth[instance > 0] = 0.9
  return {
      'edges': edges.astype(np.float32),
      'depth': depth,
      'image': image,
      'label': label,
      'instance': instance,
      'boxes': boxes,
      'classes': classes,
      'objects_mask': classes > 0,
      'num_objects': (classes > 0).sum(-1).astype(np.int32),
  }


def filled(shapes, seed=0):
  """Well-scaled values in the structure of `shapes` (ShapeDtypeStructs from
  jax.eval_shape), drawn with numpy: no initialiser is compiled (a LAMA or
  SPADE init compiles for longer than its training step on CPU).

  Kernels N(0, 1/fan_in); BN scales and variances 1, means 0; CBN tables
  `embed` [classes, 2C] γ ≈ 1, β ≈ 0; spectral-norm vectors (`u`, `v`,
  `.../u`) unit-norm, stored σ 1; integer leaves 0; the rest N(0, 0.1²).
  """
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(getattr(path[-1], 'key', path[-1])).rsplit('/', 1)[-1]
    if not jnp.issubdtype(s.dtype, jnp.floating):
      return jnp.zeros(s.shape, s.dtype)
    if name in ('scale', 'var', 'sigma'):
      return jnp.ones(s.shape, s.dtype)
    if name in ('u', 'v'):
      x = rng.standard_normal(s.shape)
      return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True),
                         s.dtype)
    if name == 'mean':
      return jnp.zeros(s.shape, s.dtype)
    if name == 'embed':
      c = s.shape[-1] // 2
      x = 0.1 * rng.standard_normal(s.shape)
      x[:, :c] += 1.0
      return jnp.asarray(x, s.dtype)
    if name == 'kernel':
      fan_in = math.prod(s.shape[:-1])
      return jnp.asarray(rng.standard_normal(s.shape) / math.sqrt(fan_in),
                         s.dtype)
    return jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def filled_state(recipe, batch, tx_g, tx_d, ema_decay, seed=0):
  """A step-0 GanState with `filled` G / D variables of recipe.init's shapes
  and fresh optimizer states (state.state_from_variables)."""
  g_vars, d_vars = filled(
      jax.eval_shape(recipe.init, jax.random.key(seed), batch), seed)
  return state_lib.state_from_variables(jax.random.key(seed), g_vars, d_vars,
                                        tx_g, tx_d, ema_decay)


def save_workdir(workdir, state, config, meta, step=1):
  """A workdir as the trainer leaves it: the checkpoint of `step`,
  config.json and dataset_meta.json."""
  # Imported here: the multi-host workers import this module and need
  # neither orbax nor TensorFlow (~5 s of import each).
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i.data import pipeline
  # pylint: enable=g-import-not-at-top
  workdir = str(workdir)
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=1,
                                    asynchronous=False)
  ckpt.save(step, state, force=True)
  ckpt.close()
  config_lib.write_json(config, workdir)
  pipeline.save_meta(meta, workdir)
  return workdir
