"""The recipe protocol: the only per-model training code.

A recipe builds its generator (and discriminator), initialises their
variables, and defines how the generator produces outputs and how the D and G
losses are computed from them. The trainer (train.py / step.py) owns
everything else: optimizers, the jitted step, EMA, precision, sharding,
checkpoints, summaries and evaluation.

The step calls, per iteration and in the recipe's `order`:

  out, g_state = recipe.generate(g_params, nets, batch, key)      # G forward
  d_loss, (metrics, d_state) = recipe.d_loss(d_params, nets, batch,
                                             stop_gradient(out), key)
  g_loss, (metrics, d_state) = recipe.g_loss(out, nets, batch, key)

`g_loss` is differentiated with respect to `out` (a dict of arrays), then the
gradient is pulled back through `generate` — with `share_fake` this reuses the
one forward pass the D update saw (LAMA, pix2pix); otherwise G is run again
(SPADE, Layout2Im; a ('d', 'g') recipe reruns it through `regenerate`).

With `n_critic > 1` (WGAN-GP) the training batch is [n_critic, B, ...]: the
step runs n_critic D updates under `lax.scan`, each on its own real batch
and a fresh fake, then one G update with a fresh fake (regenerated; needs
order ('d', 'g') and no `share_fake`). The recipe's functions always see
ordinary [B, ...] batches.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxl2i import state as state_lib
from jaxl2i import visualize

PyTree = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class Nets:
  """Read-only networks handed to the recipe's functions."""
  g: state_lib.Net
  d: state_lib.Net | None
  frozen: PyTree   # pretrained, never-trained params (VGG for a loss, ...)
  step: jax.Array | int = 0   # the iteration being trained (loss schedules)


class Recipe:
  """Base class of every recipe; subclasses override the marked methods."""

  # Static traits read by the trainer.
  order: tuple[str, ...] = ('d', 'g')   # ('d','g'), ('g','d') or ('g',)
  share_fake: bool = False              # reuse D's fake for the G update
  n_critic: int = 1                     # D updates per G update (WGAN-GP 5)
  # Generates from noise alone (no conditioning input): grids have no input
  # column and jaxl2i.generate samples `sample_noise` instead of reading a
  # layout or label map.
  unconditional: bool = False

  def __init__(self, config: ml_collections.ConfigDict, meta):
    """config: the experiment config; meta: jaxl2i.data DatasetMeta."""
    self.config = config
    self.meta = meta
    self.dtype = jnp.dtype(config.dtype)
    self.g, self.d = self.build()

  # --- to override -------------------------------------------------------

  def build(self) -> tuple[flax.linen.Module, flax.linen.Module | None]:
    raise NotImplementedError

  def init(self, key: jax.Array, batch: Batch) -> tuple[PyTree, PyTree | None]:
    """Returns (g_variables, d_variables) for a batch of the training shape."""
    raise NotImplementedError

  def generate(self, g_params: PyTree, nets: Nets, batch: Batch,
               key: jax.Array) -> tuple[dict[str, jax.Array], PyTree]:
    """G in train mode -> (outputs dict, new non-param G collections)."""
    raise NotImplementedError

  def regenerate(self, g_params: PyTree, nets: Nets, batch: Batch,
                 key: jax.Array, fresh_key: jax.Array
                 ) -> tuple[dict[str, jax.Array], PyTree]:
    """G's second forward in a ('d', 'g') step without `share_fake`.

    `key` is the one the D update's forward got, `fresh_key` an unused one.
    The default reruns `generate` on `key` (the same noise); a recipe whose
    reference draws some noise anew in that forward overrides this
    (Layout2Im: the same z, a fresh reparameterisation ε).
    """
    del fresh_key
    return self.generate(g_params, nets, batch, key)

  def d_loss(self, d_params: PyTree, nets: Nets, batch: Batch,
             out: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, tuple[Metrics, PyTree]]:
    """Discriminator loss on `out` (already stop-gradient) and real data."""
    raise NotImplementedError

  def g_loss(self, out: dict[str, jax.Array], nets: Nets, batch: Batch,
             key: jax.Array) -> tuple[jax.Array, tuple[Metrics, PyTree]]:
    """Generator loss as a function of G's outputs; D is nets.d."""
    raise NotImplementedError

  def sample(self, g_variables: PyTree, batch: Batch,
             key: jax.Array) -> jax.Array:
    """Images [B,H,W,3] float32 in [-1,1] for evaluation and image grids."""
    raise NotImplementedError

  # --- defaults ----------------------------------------------------------

  def frozen_params(self) -> PyTree:
    """Pretrained parameters the losses need (passed to the step)."""
    return {}

  def grid_column_names(self) -> tuple[str, ...]:
    """Suffixes of the columns `grid_samples` returns ('' = the sample)."""
    return ('',)

  def grid_samples(self, g_variables: PyTree, batch: Batch,
                   key: jax.Array) -> tuple[jax.Array, ...]:
    """Image-grid columns of one generator, [B,H,W,3] each (jit-able).

    Float columns are in [-1, 1], uint8 ones are shown as they are. The
    default is the sample alone; LAMA adds its raw and adapted masks.
    """
    return (self.sample(g_variables, batch, key),)

  def after_init(self, state: state_lib.GanState) -> state_lib.GanState:
    """Edits a freshly initialised (not a restored) state on the host, e.g.
    to load pretrained variables; the default keeps it."""
    return state

  def grid_real(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The grid's last column: the real output as uint8 [B,H,W,3]."""
    return batch['image']

  def grid_inputs(self, batch: dict[str, np.ndarray]) -> np.ndarray | None:
    """The conditioning input of a host batch as uint8 [B,H,W,3] pictures;
    None (no input column) for unconditional recipes."""
    if self.unconditional:
      return None
    return visualize.colorize_labels(batch['label'], self.meta.num_classes)

  def sample_noise(self, g_variables: PyTree, num: int,
                   key: jax.Array) -> dict[str, jax.Array]:
    """Unconditional recipes: `num` (static) eval-mode samples from noise.

    Returns:
      {'image': float32 [num,H,W,3] in [-1,1]} and, for models generating
      label maps, {'label': int32 [num,H,W]} (the picture is then the
      colourised map; jaxl2i.generate renders the labels with a label-map
      run).
    """
    raise NotImplementedError(
        f'{type(self).__name__} is not an unconditional recipe')


def image_to_float(image: jax.Array) -> jax.Array:
  """uint8 [B,H,W,3] in [0,255] -> float32 in [-1,1]."""
  return jnp.asarray(image, jnp.float32) / 127.5 - 1.0


def conditioning_map(batch: Batch, num_classes: int,
                     with_edges: bool = False,
                     dtype=jnp.float32) -> jax.Array:
  """One-hot semantic map (+ instance edge channel) [B,H,W,C(+1)].

  Uses `label_onehot` from the pipeline when present (small vocabularies),
  otherwise one-hots `label` on the device (cheaper to transfer for many
  classes). Label ids outside [0, num_classes) (ignore ids) give all zeros.
  """
  if 'label_onehot' in batch:
    seg = jnp.asarray(batch['label_onehot'], dtype)
  else:
    seg = jax.nn.one_hot(batch['label'], num_classes, dtype=dtype)
  if with_edges:
    seg = jnp.concatenate(
        [seg, jnp.asarray(batch['edges'], dtype)[..., None]], axis=-1)
  return seg


def check_layout_batch(batch: Batch, resolution: int, model: str) -> None:
  """ConfigError unless the images are resolution² and the objects padded.

  For layout models (LAMA, Layout2Im): `model` names the model in the
  message.
  """
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  if batch['image'].shape[1:3] != (resolution, resolution):
    raise config_lib.ConfigError(
        f'images are {batch["image"].shape[1:3]} but '
        f'config.model.resolution={resolution}: resize to {resolution} in '
        'data.pp_*')
  if 'objects_mask' not in batch:
    raise config_lib.ConfigError(
        f"{model} needs boxes, classes and objects_mask: add "
        "'pad_objects(N)' to data.pp_train and data.pp_eval")


def available() -> list[str]:
  import jaxl2i.recipes as pkg  # pylint: disable=g-import-not-at-top
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if m.name != 'base' and not m.name.startswith('_'))


def get_recipe(config: ml_collections.ConfigDict, meta) -> Recipe:
  """Imports jaxl2i.recipes.<config.recipe> and builds its Recipe."""
  if config.recipe not in available():
    from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
    raise config_lib.ConfigError(
        f'config.recipe={config.recipe!r} is not a file of jaxl2i/recipes/; '
        f'available: {", ".join(available())}')
  module = importlib.import_module(f'jaxl2i.recipes.{config.recipe}')
  return module.Recipe(config, meta)
