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

With --memory_only nothing runs: the step is lowered and compiled for an
abstract state (jax.eval_shape, no arrays allocated) and XLA's compiled
memory analysis is reported instead (a compile-time estimate of the backend
it runs on; on the CPU backend not a GPU measurement). CRN at 1024×2048:

  python benchmarks/train_throughput.py \
      --config=configs/cityscapes_crn.py:res=1024,remat --batch_size=4 \
      --memory_only

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
_MEMORY = flags.DEFINE_bool(
    'memory_only', False, 'Only compile for an abstract state and report '
    "XLA's memory analysis (no step runs, nothing is allocated).")
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


def synthetic_batch(rng: np.random.Generator, batch: int,
                    size: tuple[int, int], slots: int, objects: int,
                    num_classes: int) -> dict:
  """A batch of the data contract, images of size (H, W), with `objects`
  valid boxes per image."""
  x0 = rng.uniform(0, 0.7, (batch, slots, 2))
  wh = rng.uniform(0.1, 0.3, (batch, slots, 2))
  boxes = np.concatenate([x0, x0 + wh], -1).astype(np.float32)
  classes = rng.integers(1, num_classes, (batch, slots)).astype(np.int32)
  valid = np.arange(slots)[None] < objects
  hw = (batch, *size)
  label = rng.integers(0, num_classes, hw).astype(np.int32)
  return {
      'edges': rng.integers(0, 2, hw).astype(np.float32),
      'image': rng.integers(0, 256, hw + (3,), dtype=np.uint8),
      'label': label,
      'instance': rng.integers(0, slots + 1, hw).astype(np.int32),
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
  from jaxl2i import user_inputs
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
  classes = config.model.get('num_classes') or _CLASSES.value
  meta = Meta(num_classes=classes, max_objects=slots)
  config_lib.validate(config, jax.device_count())
  recipe = base.get_recipe(config, meta)
  # The size the model is evaluated at (its eval resize, e.g. 256×512 for
  # Cityscapes SPADE), else its resolution.
  try:
    size = user_inputs.model_spec(config, meta).size
  except config_lib.ConfigError:
    size = None
  size = size or (config.model.get('resolution') or 256,) * 2
  mesh = parallel.make_mesh()
  # WGAN-GP recipes step on n_critic stacked batches (P(None, 'data')).
  n_critic = recipe.n_critic
  rep = parallel.replicated(mesh)
  dat = parallel.data_sharded(mesh, stacked=n_critic > 1)
  tx_g, _ = state_lib.make_optimizer(config, 'g')
  tx_d, _ = state_lib.make_optimizer(config, 'd')
  init = lambda k, b: state_lib.init_state(k, recipe, b, tx_g, tx_d,
                                           config.ema.decay)
  step = jax.jit(step_lib.make_train_step(
      recipe, tx_g, tx_d, config.ema.decay,
      unroll_critic=config.optim.get('unroll_critic', True)),
                 in_shardings=(rep, dat, rep), out_shardings=(rep, rep),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  make = lambda: synthetic_batch(rng, config.batch_size, size, slots,
                                 _OBJECTS.value, classes)
  # The state is initialised on one batch; a step takes n_critic of them.
  example = make()
  stacked = lambda: jax.tree.map(lambda *x: np.stack(x),
                                 *[make() for _ in range(n_critic)])
  host = [example, make()] if n_critic == 1 else [stacked(), stacked()]
  if _MEMORY.value:
    print(json.dumps(memory_analysis(config, recipe, step, init, example,
                                     host[0])))
    return
  batches = [jax.device_put(b, dat) for b in host]
  state = jax.jit(init, out_shardings=rep)(
      jax.random.key(0), jax.device_put(example, parallel.data_sharded(mesh)))
  frozen = jax.device_put(recipe.frozen_params(), rep)
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
      batch_size=config.batch_size, resolution='x'.join(map(str, size)),
      objects=_OBJECTS.value,
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


def memory_analysis(config, recipe, step, init, example, batch) -> dict:
  """Compiles `step` for abstract arguments; XLA's memory estimate (GiB).

  `example` is one batch (what the state is initialised on), `batch` what a
  step takes (`example`'s leaves stacked n_critic deep for WGAN-GP recipes).
  """
  from jaxl2i import state as state_lib  # pylint: disable=g-import-not-at-top
  spec = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
  batch = jax.tree.map(spec, batch)
  state = jax.eval_shape(init, jax.random.key(0), jax.tree.map(spec, example))
  frozen = jax.tree.map(spec, recipe.frozen_params())
  start = time.perf_counter()
  compiled = step.lower(state, batch, frozen).compile()
  m = compiled.memory_analysis()
  gib = lambda n: round(n / 2**30, 3)
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes -
          m.alias_size_in_bytes + m.temp_size_in_bytes)
  return dict(
      config=_CONFIG.value, recipe=config.recipe, dtype=config.dtype,
      batch_size=config.batch_size, backend=jax.default_backend(),
      remat=bool(config.model.get('remat', False)),
      compile_s=round(time.perf_counter() - start, 1),
      argument_gib=gib(m.argument_size_in_bytes),
      output_gib=gib(m.output_size_in_bytes),
      alias_gib=gib(m.alias_size_in_bytes), temp_gib=gib(m.temp_size_in_bytes),
      estimated_peak_gib=gib(peak),
      g_params=state_lib.count_params(state.g.params))


if __name__ == '__main__':
  app.run(main)
