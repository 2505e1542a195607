"""GAN inversion and latent interpolation of unconditional label-map models.

Paper §5.4 (reference/seg_gan.md pitfall 8): to find the latent of a target
label map, start from a batch of 64 random latents, minimise the
cross-entropy between the generator's output (with an extra softmax on top
of its output softmax) and the target with Adam (lr 0.01) for 100 steps,
and keep the best. Here every restart of every target runs in one batched,
jitted computation: restart r of target t is row t·R + r of the
generator's batch; the objective is the sum of the per-row losses, so each
latent follows its own loss exactly (Adam is elementwise). The generator
runs in eval mode, so the rows do not interact through BatchNorm.

The recipe supplies `latents(key, n)`, `g_apply(variables, z)`,
`map_loss(out, labels) -> [n]` and `decode(out) -> labels`
(jaxl2i/recipes/seg_gan.py).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _invert(recipe, g_variables, targets, key, restarts, steps, lr):
  t = targets.shape[0]
  z0 = recipe.latents(key, t * restarts)
  rows = jnp.repeat(targets, restarts, axis=0)
  per_row = lambda z: recipe.map_loss(recipe.g_apply(g_variables, z), rows)
  tx = optax.adam(lr)

  def update(_, carry):
    z, opt = carry
    grads = jax.grad(lambda z: jnp.sum(per_row(z)))(z)
    updates, opt = tx.update(grads, opt, z)
    return optax.apply_updates(z, updates), opt

  z, _ = jax.lax.fori_loop(0, steps, update, (z0, tx.init(z0)))
  loss = per_row(z).reshape(t, restarts)
  best = jnp.argmin(loss, axis=1)
  pick = jnp.arange(t)
  z_best = z.reshape(t, restarts, -1)[pick, best]
  labels = recipe.decode(recipe.g_apply(g_variables, z_best))
  return {'z': z_best, 'loss': loss[pick, best],
          'initial_loss': jnp.min(per_row(z0).reshape(t, restarts), axis=1),
          'labels': labels,
          'agreement': jnp.mean(labels == targets, axis=(1, 2))}


def invert(recipe, g_variables: PyTree, targets: jax.Array, key: jax.Array,
           *, restarts: int, steps: int, lr: float) -> dict[str, jax.Array]:
  """Latents whose label maps best reproduce `targets`.

  Args:
    recipe: an unconditional label-map recipe (seg_gan).
    g_variables: G variables {'params', 'batch_stats', ...}.
    targets: int32 [T, H, W] class ids at the generator's size.
    key: PRNG key of the initial latents (N(0, I)).
    restarts, steps, lr: latents per target, Adam steps and rate.

  Returns:
    {'z': [T, z_dim] best latents, 'loss': [T] their loss, 'initial_loss':
    [T] the best loss before optimising, 'labels': int32 [T, H, W] their
    maps, 'agreement': [T] fraction of pixels equal to the target}.
  """
  return _invert(recipe, g_variables, jnp.asarray(targets, jnp.int32), key,
                 int(restarts), int(steps), float(lr))


def interpolate(z_start: jax.Array, z_end: jax.Array,
                frames: int) -> jax.Array:
  """[frames, z_dim] latents on the straight line from z_start to z_end."""
  t = jnp.linspace(0.0, 1.0, frames)[:, None]
  return (1.0 - t) * z_start[None] + t * z_end[None]
