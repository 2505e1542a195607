"""Mask entropy (LAMA, ICCV 2021, Eq. 5): how clean a predicted mask is.

  H(M) = −(1/(W·H)) Σ_pixels Σ_objects M_ij log M_ij

M is the per-pixel distribution over the m objects (the object masks
normalised over objects at every pixel); H is 0 for a clean (one-hot) mask and
log m (natural log, nats) when every pixel is shared evenly by the m objects.
LAMA ships no code for it (`shared/reference/lama_lostgan.md` §8): we use the
natural log, which reproduces the paper's reference value for a tainted mask
(0.12 for τ = 0.02 with the 8 COCO object slots), treat 0·log 0 as 0, and
normalise exactly (no +eps in the denominator, so a one-hot mask gives
exactly 0). Pixels covered by no valid object have no distribution and add 0,
while still counting in the 1/(W·H) average, as Eq. 5 is written.
"""
import jax
import jax.numpy as jnp


def pixel_entropy(masks: jax.Array, valid: jax.Array | None = None, *,
                  object_axis: int = 1, normalize: bool = True) -> jax.Array:
  """Per-pixel entropy −Σ_i p_i log p_i over objects.

  Args:
    masks: [B, O, H, W] non-negative object masks (any float dtype; computed
      in float32). `object_axis` selects another layout, e.g. 3 for
      [B, H, W, O].
    valid: optional [B, O] bool/0-1; padded object slots are dropped.
    object_axis: axis of `masks` holding the objects.
    normalize: divide by the per-pixel sum over valid objects; when False the
      masks must already be distributions over objects.

  Returns:
    [B, H, W] (the object axis removed) float32 entropies in nats.
  """
  m = jnp.moveaxis(jnp.asarray(masks, jnp.float32), object_axis, 1)
  if valid is not None:
    v = jnp.asarray(valid, jnp.float32)
    m = m * v.reshape(v.shape + (1,) * (m.ndim - 2))
  if normalize:
    total = jnp.sum(m, axis=1, keepdims=True)
    m = jnp.where(total > 0, m / jnp.where(total > 0, total, 1.0), 0.0)
  safe = jnp.where(m > 0, m, 1.0)
  return -jnp.sum(jnp.where(m > 0, m * jnp.log(safe), 0.0), axis=1)


def mask_entropy(masks: jax.Array, valid: jax.Array | None = None, *,
                 object_axis: int = 1, normalize: bool = True) -> jax.Array:
  """LAMA Eq. 5 per image: mean over the W·H pixels of the pixel entropy.

  Args: as `pixel_entropy`.

  Returns:
    [B] float32 mask entropy per image in nats, in [0, log m]. Average over
    images for the dataset value (all images have W·H pixels, so this equals
    the pixel mean over the whole set).
  """
  h = pixel_entropy(masks, valid, object_axis=object_axis,
                    normalize=normalize)
  return jnp.mean(h, axis=tuple(range(1, h.ndim)))
