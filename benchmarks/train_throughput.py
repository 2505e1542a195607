r"""Training throughput of one full D+G iteration (img/s), any recipe.

  python benchmarks/train_throughput.py --config=configs/coco_lama.py:res=128
  python benchmarks/train_throughput.py --config=configs/coco_lama.py:res=256 \
      --batch_size=6 --dtype=bfloat16

Runs the trainer's own jitted step (jaxl2i.step, state donated, the recipe's
D-then-G update with G's per-group Adam) on synthetic batches of the config's
shape: random images, `--objects` random boxes and classes per image (LAMA's
COCO has up to 8), label/instance maps. No dataset and no weight files are
needed. Reports compile time, step time (median of the timed steps, each
synchronised), img/s and peak device memory, as one JSON line.

The official LAMA code on one H100 runs 122.8 img/s at 128² (batch 20) and
35.9 img/s at 256² (batch 6) for a full D+G iteration (issue #4); the
official SPADE code 49.5 img/s on COCO-Stuff 256² at batch 16 (issue #5):

  python benchmarks/train_throughput.py --config=configs/coco_spade.py \
      --batch_size=16 --num_classes=183 --dtype=bfloat16
"""

import dataclasses
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

_CONFIG = flags.DEFINE_string('config', 'configs/coco_lama.py:res=128',
                              'Config file[:variant].')
_BATCH = flags.DEFINE_integer('batch_size', 0, '0: the config batch size.')
_DTYPE = flags.DEFINE_string('dtype', '', "'' (config), float32, bfloat16.")
_OBJECTS = flags.DEFINE_integer('objects', 8, 'Valid objects per image.')
_CLASSES = flags.DEFINE_integer('num_classes', 184, 'Class vocabulary size.')
_STEPS = flags.DEFINE_integer('steps', 30, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
_RANDOM = flags.DEFINE_bool(
    'random_weights', True, 'Loss networks (VGG-19) may use random weights '
    'when their files are not cached (same speed).')


@dataclasses.dataclass(frozen=True)
class Meta:
  """What recipes read of jaxl2i.data.pipeline.DatasetMeta (no TF needed)."""
  num_classes: int
  max_objects: int
  class_names: tuple = ()
  image_size: tuple = (None, None)
  ignore_label: int | None = None
  num_examples: dict = dataclasses.field(default_factory=dict)


def synthetic_batch(rng: np.random.Generator, batch: int, size: int,
                    slots: int, objects: int, num_classes: int) -> dict:
  """A batch of the data contract with `objects` valid boxes per image."""
  x0 = rng.uniform(0, 0.7, (batch, slots, 2))
  wh = rng.uniform(0.1, 0.3, (batch, slots, 2))
  boxes = np.concatenate([x0, x0 + wh], -1).astype(np.float32)
  classes = rng.integers(1, num_classes, (batch, slots)).astype(np.int32)
  valid = np.arange(slots)[None] < objects
  label = rng.integers(0, num_classes, (batch, size, size)).astype(np.int32)
  return {
      'edges': rng.integers(0, 2, (batch, size, size)).astype(np.float32),
      'image': rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
      'label': label,
      'instance': rng.integers(0, slots + 1, (batch, size, size)).astype(
          np.int32),
      'boxes': boxes, 'classes': np.where(valid, classes, 0),
      'objects_mask': np.broadcast_to(valid, (batch, slots)).copy(),
      'num_objects': np.full((batch,), objects, np.int32),
  }


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib
  from jaxl2i import parallel
  from jaxl2i import runtime
  from jaxl2i import state as state_lib
  from jaxl2i import step as step_lib
  from jaxl2i.recipes import base
  # pylint: enable=g-import-not-at-top
  runtime.setup()
  path, _, arg = _CONFIG.value.partition(':')
  config = config_lib.load(path, arg or None)
  if _BATCH.value:
    config.batch_size = _BATCH.value
  if _DTYPE.value:
    config.dtype = _DTYPE.value
  if _RANDOM.value and 'vgg_allow_random' in config.loss:
    config.loss.vgg_allow_random = True
  slots = max(config.data.get('max_objects') or 8, _OBJECTS.value)
  meta = Meta(num_classes=_CLASSES.value, max_objects=slots)
  config_lib.validate(config, jax.device_count())
  recipe = base.get_recipe(config, meta)
  size = config.model.get('resolution') or 256
  mesh = parallel.make_mesh()
  # WGAN-GP recipes step on n_critic stacked batches (P(None, 'data')).
  n_critic = recipe.n_critic
  rep = parallel.replicated(mesh)
  dat = parallel.data_sharded(mesh, stacked=n_critic > 1)
  tx_g, _ = state_lib.make_optimizer(config, 'g')
  tx_d, _ = state_lib.make_optimizer(config, 'd')
  rng = np.random.default_rng(0)
  make = lambda: synthetic_batch(rng, config.batch_size, size, slots,
                                 _OBJECTS.value, _CLASSES.value)
  example = jax.device_put(make(), parallel.data_sharded(mesh))
  batches = [jax.device_put(
      make() if n_critic == 1 else
      jax.tree.map(lambda *x: np.stack(x), *[make() for _ in range(n_critic)]),
      dat) for _ in range(2)]
  state = jax.jit(lambda k, b: state_lib.init_state(
      k, recipe, b, tx_g, tx_d, config.ema.decay), out_shardings=rep)(
          jax.random.key(0), example)
  frozen = jax.device_put(recipe.frozen_params(), rep)
  step = jax.jit(step_lib.make_train_step(
      recipe, tx_g, tx_d, config.ema.decay,
      unroll_critic=config.optim.unroll_critic),
                 in_shardings=(rep, dat, rep), out_shardings=(rep, rep),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, batches[0], frozen).compile()
  compile_s = time.perf_counter() - start
  for i in range(_WARMUP.value):
    state, metrics = compiled(state, batches[i % 2], frozen)
  jax.block_until_ready(metrics)
  times = []
  for i in range(_STEPS.value):
    t = time.perf_counter()
    state, metrics = compiled(state, batches[i % 2], frozen)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  stats = jax.devices()[0].memory_stats() or {}
  result = dict(
      config=_CONFIG.value, recipe=config.recipe, dtype=config.dtype,
      batch_size=config.batch_size, resolution=size, objects=_OBJECTS.value,
      devices=jax.device_count(), device=jax.devices()[0].device_kind,
      compile_s=round(compile_s, 1), step_ms=round(step_s * 1e3, 2),
      step_ms_mean=round(statistics.mean(times) * 1e3, 2),
      img_per_s=round(config.batch_size / step_s, 1),
      peak_memory_gib=round(stats.get('peak_bytes_in_use', 0) / 2**30, 2),
      g_params=state_lib.count_params(state.g.params),
      d_params=state_lib.count_params(state.d.params)
      if state.d is not None else 0,
      finite=bool(all(np.isfinite(float(v)) for v in metrics.values())))
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
