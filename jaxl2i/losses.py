"""GAN and reconstruction losses (and the WGAN-GP penalty), shared by the
recipes.

All functions take logits/features in any dtype and compute in float32, as the
precision policy requires (DESIGN.md: losses are float32). Means are over all
elements of the global batch (no pmean: under jit the batch is global).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def _f32(x: Array) -> Array:
  return jnp.asarray(x, jnp.float32)


def bce_with_logits(logits: Array, target: float) -> Array:
  """Mean binary cross-entropy against a constant target (PyTorch GANLoss)."""
  logits = _f32(logits)
  return jnp.mean(
      optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def vanilla_d(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
  """(BCE(D(real), 1), BCE(D(fake), 0)); callers combine (pix2pix: ×0.5 sum)."""
  return bce_with_logits(real_logits, 1.0), bce_with_logits(fake_logits, 0.0)


def vanilla_g(fake_logits: Array) -> Array:
  """Non-saturating generator loss BCE(D(fake), 1)."""
  return bce_with_logits(fake_logits, 1.0)


def hinge_d(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
  """(mean relu(1 − D(real)), mean relu(1 + D(fake)))."""
  return (jnp.mean(jax.nn.relu(1.0 - _f32(real_logits))),
          jnp.mean(jax.nn.relu(1.0 + _f32(fake_logits))))


def hinge_g(fake_logits: Array) -> Array:
  return -jnp.mean(_f32(fake_logits))


def lsgan_d(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
  return (jnp.mean(jnp.square(_f32(real_logits) - 1.0)),
          jnp.mean(jnp.square(_f32(fake_logits))))


def lsgan_g(fake_logits: Array) -> Array:
  return jnp.mean(jnp.square(_f32(fake_logits) - 1.0))


def wgan_d(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
  return -jnp.mean(_f32(real_logits)), jnp.mean(_f32(fake_logits))


def wgan_g(fake_logits: Array) -> Array:
  return -jnp.mean(_f32(fake_logits))


def gradient_penalty(critic: Callable[[Array], Array], real: Array,
                     fake: Array, key: jax.Array) -> Array:
  """WGAN-GP penalty mean_i (‖∇_x̂ D(x̂_i)‖₂ − 1)² (Gulrajani et al.).

  x̂_i = real_i + ε_i·(fake_i − real_i) with one ε_i ~ U[0, 1] per sample
  (broadcast over all other axes); the gradient norm is over every non-batch
  axis of the critic's input (reference/seg_gan.md §4, pitfalls 3-4).

  Args:
    critic: x [B, ...] -> per-sample scores [B] (or [B, 1]); differentiated
      through, so its parameters must be closed over.
    real, fake: [B, ...] critic inputs (fake already stop-gradient).
    key: PRNG key of ε.

  Returns:
    float32 scalar (λ is the caller's).
  """
  real, fake = _f32(real), _f32(fake)
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = real + eps * (fake - real)
  # Per-sample gradients: sample i's score depends on x̂_i only, so the
  # gradient of the sum w.r.t. x̂ holds each sample's own gradient.
  grads = jax.grad(lambda x: jnp.sum(_f32(critic(x))))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads),
                           axis=tuple(range(1, grads.ndim))))
  return jnp.mean(jnp.square(norms - 1.0))


D_LOSSES = {'vanilla': vanilla_d, 'hinge': hinge_d, 'lsgan': lsgan_d,
            'wgan': wgan_d}
G_LOSSES = {'vanilla': vanilla_g, 'hinge': hinge_g, 'lsgan': lsgan_g,
            'wgan': wgan_g}


def gan_losses(mode: str):
  """(d_fn, g_fn) for 'vanilla'|'hinge'|'lsgan'|'wgan'.

  d_fn(real_logits, fake_logits) returns the (real, fake) terms of the D loss
  separately, so recipes can weight and log them.
  """
  if mode not in D_LOSSES:
    raise ValueError(f'unknown GAN loss {mode!r}; known: {sorted(D_LOSSES)}')
  return D_LOSSES[mode], G_LOSSES[mode]


def l1(a: Array, b: Array) -> Array:
  """Mean absolute error over all elements."""
  return jnp.mean(jnp.abs(_f32(a) - _f32(b)))


def feature_matching(fake_feats: Sequence[Array],
                     real_feats: Sequence[Array]) -> Array:
  """Sum over layers of L1(fake, stop_gradient(real))."""
  return sum(l1(f, jax.lax.stop_gradient(r))
             for f, r in zip(fake_feats, real_feats))


def kl_normal(mu: Array, logvar: Array) -> Array:
  """KL(N(mu, exp(logvar)) || N(0, 1)) summed over every element."""
  mu, logvar = _f32(mu), _f32(logvar)
  return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))
