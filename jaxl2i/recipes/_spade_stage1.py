"""The frozen stage-1 (labels → depth) generator of depth-aware SPADE stage 2.

reference/depth_spade.md §1: stage 2 trains on the depth maps produced by the
converged stage-1 generator (in inference mode: running BN statistics), not
on the pseudo ground truth, so that training and test inputs match. The
stage-1 run is read from its workdir (config.json, dataset_meta.json and the
latest checkpoint); its generator is rebuilt by its own recipe.

Its variables live in the 'stage1' collection of the stage-2 generator's
state: never optimised, saved with every stage-2 checkpoint (a stage-2 run
samples labels → depth → image on its own), and copied from the stage-1
checkpoint once, when stage 2 starts from scratch (`install`).

When stage 1 ran at a higher resolution (the paper's depth 128 → image 64),
the label map is nearest-upsampled to it and the generated depth is
resized back with antialiasing (area-like). ◇ The paper presumably fed the
128² label maps to stage 1; upsampling the 64² map is exact for the classes
stage 2 sees but not identical to them.
"""

from __future__ import annotations

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i.models import spade

COLLECTION = 'stage1'
_SPATIAL = ('label', 'edges', 'label_onehot')


class Stage1:
  """Depth from a trained stage-1 SPADE run."""

  def __init__(self, workdir: str, which: str, meta, resolution: int = 0):
    """workdir: the stage-1 run; which: 'ema'|'live'|'' (EMA if kept)."""
    # pylint: disable=g-import-not-at-top
    from jaxl2i.data import pipeline   # (TensorFlow: only when stage 2 runs)
    from jaxl2i.recipes import base
    # pylint: enable=g-import-not-at-top
    if not workdir:
      raise config_lib.ConfigError(
          "model.depth_input='stage1' needs model.stage1_workdir: train the "
          'stage-1 (labels → depth) config first and give its --workdir')
    self.workdir, self.which = workdir, which or None
    config = config_lib.read_json(workdir)
    if config.recipe != 'spade' or config.model.get('output') != 'depth':
      raise config_lib.ConfigError(
          f'{workdir} is not a depth-SPADE stage-1 run (recipe '
          f"{config.recipe!r}, model.output {config.model.get('output')!r})")
    if config.model.use_vae or config.model.depth_input:
      raise config_lib.ConfigError(
          f'{workdir}: a stage-1 model takes label maps only (no VAE, no '
          'depth input)')
    stage_meta = pipeline.load_meta(workdir) or meta
    if stage_meta.num_classes != meta.num_classes:
      raise config_lib.ConfigError(
          f'stage 1 ({workdir}) was trained with {stage_meta.num_classes} '
          f'classes, this run has {meta.num_classes}: use the same dataset')
    self.config: ml_collections.ConfigDict = config
    self.recipe = base.get_recipe(config, stage_meta)
    self.resolution = int(resolution)

  def _at_resolution(self, batch):
    """The label inputs nearest-resized to the stage-1 resolution."""
    h, w = batch['label'].shape[1:3]
    if not self.resolution or self.resolution == h:
      return batch, (h, w)
    size = (self.resolution, round(self.resolution * w / h))
    out = {}
    for k in _SPATIAL:
      if k in batch:
        x = batch[k] if batch[k].ndim == 4 else batch[k][..., None]
        x = spade.resize_nearest(x, size)
        out[k] = x if batch[k].ndim == 4 else x[..., 0]
    return out, (h, w)

  def depth(self, variables, batch) -> jax.Array:
    """[B,H,W,1] generated depth in [-1, 1] (no gradient)."""
    inputs, (h, w) = self._at_resolution(batch)
    d, _ = self.recipe.sample_with_condition(variables, inputs, jax.random.key(0))
    d = d.astype(jnp.float32)
    if d.shape[1:3] != (h, w):
      d = jax.image.resize(d, (d.shape[0], h, w, 1), 'linear', antialias=True)
    return jax.lax.stop_gradient(d)

  def _shapes(self):
    r = self.resolution or 64
    batch = {'label': jax.ShapeDtypeStruct((1, r, r), jnp.int32),
             'depth': jax.ShapeDtypeStruct((1, r, r), jnp.float32),
             'image': jax.ShapeDtypeStruct((1, r, r, 3), jnp.uint8)}
    if self.config.model.edges:
      batch['edges'] = jax.ShapeDtypeStruct((1, r, r), jnp.float32)
    g_vars, _ = jax.eval_shape(self.recipe.init, jax.random.key(0), batch)
    return g_vars

  def placeholder(self):
    """Zeros shaped like the stage-1 G variables (filled by `install`)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._shapes())

  def install(self, state):
    """state with g.state['stage1'] = the stage-1 run's generator."""
    try:
      variables, which, step = checkpointing.restore_generator(
          self.workdir, self.which)
    except ValueError as e:
      raise config_lib.ConfigError(f'stage 1: {e}') from e
    want = self._shapes()
    if jax.tree.structure(variables) != jax.tree.structure(want) or any(
        np.shape(a) != b.shape for a, b in zip(
            jax.tree.leaves(variables), jax.tree.leaves(want))):
      raise config_lib.ConfigError(
          f'the checkpoint of {self.workdir} does not match its config.json')
    old = state.g.state[COLLECTION]
    sharding = jax.tree.leaves(old)[0].sharding
    new = jax.tree.map(lambda a, o: jax.device_put(np.asarray(a, o.dtype),
                                                   sharding),
                       variables, old)
    logging.info('stage 2 uses the %s stage-1 generator of step %d from %s',
                 which, step, self.workdir)
    return state.replace(g=state.g.replace(
        state={**state.g.state, COLLECTION: new}))
