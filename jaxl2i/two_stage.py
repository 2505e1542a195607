"""Two-stage generation: noise → label map (seg_gan) → image (pix2pix/SPADE).

`TwoStageMethods` are the methods of jaxl2i.generate.Model that sample an
unconditional run from noise and render label maps with a label-map run
(stage 2). They read the Model's `config`, `meta`, `spec`, `recipe`,
`variables`, `restore()` and `_fns` (its compiled functions).

  seg = generate.Model('runs/seg'); renderer = generate.Model('runs/p2p')
  maps = seg.sample_noise(16, seed=0)['label']        # int32 [16, H, W]
  images = renderer.render(maps)                      # float32 [16, H, W, 3]
"""

from __future__ import annotations

from absl import logging
import jax
import numpy as np

from jaxl2i import config_lib
from jaxl2i import visualize
from jaxl2i.user_inputs import InputError, instance_edges


class TwoStageMethods:
  """Mixed into generate.Model (see the module docstring)."""

  def check_renders(self, meta, size: tuple[int, int], what: str) -> None:
    """Raises ConfigError (one line) unless this run renders label maps of
    `meta`'s vocabulary at `size` (those of `what`)."""
    if self.spec.kind != 'label_map':
      raise config_lib.ConfigError(
          f'renderer {self.workdir} (recipe {self.config.recipe!r}) does not '
          'render label maps: give a pix2pix or SPADE run')
    if (tuple(self.meta.class_names) != tuple(meta.class_names) or
        tuple(self.spec.size) != tuple(size)):
      raise config_lib.ConfigError(
          f'renderer {self.workdir} takes {self.spec.size[0]}x'
          f'{self.spec.size[1]} maps of {self.meta.num_classes} classes, but '
          f'{what} makes {size[0]}x{size[1]} maps of {meta.num_classes} '
          'classes (the vocabularies must be equal): train the renderer on '
          "the seg GAN's dataset and size")

  def label_batch(self, labels: np.ndarray) -> dict[str, np.ndarray]:
    """int [N,H,W] class ids -> this model's batch (+ the edges of the class
    boundaries as SPADE's instance-edge channel, if it takes one)."""
    batch = {'label': np.asarray(labels, np.int32)}
    if self.spec.edges:
      batch['edges'] = np.stack([instance_edges(x) for x in batch['label']])
    return batch

  def render(self, labels: np.ndarray, seed: int = 0,
             first: int = 0) -> np.ndarray:
    """Renders label maps int [N,H,W] -> float32 [N,H,W,3] in [-1, 1].

    Each map is rendered alone (as a batch of one) with the key
    fold_in(key(seed), first + n), whatever N is.
    """
    self.restore()
    if 'render' not in self._fns:
      recipe = self.recipe
      one = lambda v, ex, k: recipe.sample(
          v, jax.tree.map(lambda x: x[None], ex), k)[0]
      self._fns['render'] = jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))
    keys = self._keys(seed, first, len(labels))
    return np.asarray(jax.device_get(self._fns['render'](
        self.variables, self.label_batch(labels), keys)))

  @staticmethod
  def _keys(seed: int, first: int, num: int) -> jax.Array:
    root = jax.random.key(seed)
    return jax.vmap(lambda k: jax.random.fold_in(root, k))(
        np.arange(first, first + num, dtype=np.uint32))

  def sample_noise(self, num: int, seed: int) -> dict[str, np.ndarray]:
    """Unconditional models: sample k from key fold_in(key(seed), k) ->
    {'image': float32 [num,H,W,3], ('label': int32 [num,H,W])}."""
    self.restore()
    if 'noise' not in self._fns:
      recipe = self.recipe
      one = lambda v, k: jax.tree.map(lambda x: x[0],
                                      recipe.sample_noise(v, 1, k))
      self._fns['noise'] = jax.jit(jax.vmap(one, in_axes=(None, 0)))
    out = self._fns['noise'](self.variables, self._keys(seed, 0, num))
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}

  def noise_pictures(self, num_samples: int, seed: int,
                     renderer: 'Model | None') -> dict[str, np.ndarray]:
    """Samples of an unconditional model, with their rendering."""
    out = self.sample_noise(num_samples, seed)
    if 'label' not in out:   # an image model (DCGAN*)
      if renderer is not None:
        raise InputError('this model generates images, not label maps: '
                         'there is nothing to render (drop --renderer)')
      images = visualize.to_uint8(out['image'])
      pictures = {f'sample{k:03d}.png': im for k, im in enumerate(images)}
      return {**pictures, 'samples.png': visualize.grid([images])}
    maps = visualize.colorize_labels(out['label'], self.meta.num_classes)
    pictures = {f'sample{k:03d}_labels.png': m for k, m in enumerate(maps)}
    columns = [maps]
    if renderer is not None:
      renderer.check_renders(self.meta, self.spec.size, self.workdir)
      images = visualize.to_uint8(renderer.render(out['label'], seed))
      pictures.update({f'sample{k:03d}.png': im
                       for k, im in enumerate(images)})
      columns.append(images)
    pictures['samples.png'] = visualize.grid(columns)
    logging.info('generated %d label maps with the %s generator of step %d%s',
                 num_samples, self.which, self.step,
                 '' if renderer is None else
                 f', rendered by {renderer.workdir} (step {renderer.step})')
    return pictures
