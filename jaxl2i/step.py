"""The one training step shared by every recipe (STYLE.md §4).

`make_train_step` returns a pure function `step(state, batch, frozen) ->
(state, metrics)` that runs the recipe's D and G updates in the recipe's order
inside one compiled call. The trainer jits it with the state donated.

Recipes with `n_critic > 1` (WGAN-GP) get batches [n_critic, B, ...]: the
critic updates run under `lax.scan` (one compiled body), each on its own
real batch, then one G update; d/ metrics are means over the critic updates.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxl2i import state as state_lib
from jaxl2i.recipes import base

PyTree = Any
Net = state_lib.Net
GanState = state_lib.GanState


def _apply(tx: optax.GradientTransformation, net: Net, grads: PyTree,
           new_state: PyTree) -> Net:
  updates, opt = tx.update(grads, net.opt, net.params)
  return Net(optax.apply_updates(net.params, updates), new_state, opt)


def make_train_step(recipe: base.Recipe, tx_g: optax.GradientTransformation,
                    tx_d: optax.GradientTransformation | None,
                    ema_decay: float, ema_start: int = 0,
                    update_g: bool = True,
                    unroll_critic: bool = True) -> Callable:
  """Builds step(state, batch, frozen) -> (state, metrics).

  Args:
    recipe: the model's recipe (order, share_fake, generate/d_loss/g_loss).
    tx_g, tx_d: optimizers (closed over; their states live in `state`).
    ema_decay: decay of the EMA of G's params (0: no EMA).
    ema_start: before this step the EMA copies G's params; after it the
      decay warms up as (1 + n) / (10 + n) until it reaches ema_decay.
    update_g: False builds the D-only warm-up step of LAMA/LostGAN (needs a
      ('d', 'g') recipe): G runs forward (its batch statistics move, as in
      the reference's train-mode forward) and its loss is logged, but its
      parameters and optimizer do not change; g/grad_norm is 0.
    unroll_critic: n_critic > 1: let XLA unroll the scan of critic updates
      (one traced body, n_critic copies compiled). XLA:CPU runs the rolled
      loop of the seg-GAN demo's step ~11× slower (177 s vs 15.8 s per step
      measured on 2 shared cores); False compiles a single body.
  """
  order = tuple(recipe.order)
  n_critic = int(recipe.n_critic)
  if order not in (('d', 'g'), ('g', 'd'), ('g',)):
    raise ValueError(f'recipe order {order} is not supported')
  if not update_g and order != ('d', 'g'):
    raise ValueError('a D-only step needs a recipe of order (d, g)')
  if n_critic < 1 or (n_critic > 1 and (order != ('d', 'g') or
                                        recipe.share_fake)):
    raise ValueError(
        f'n_critic={n_critic}: must be >= 1, and > 1 needs order (d, g) '
        'without share_fake (every critic step and the G step draw their '
        'own fake)')

  def generate(g_params, nets, batch, key):
    return recipe.generate(g_params, nets, batch, key)

  def d_update(s: GanState, nets, batch, out, key):
    (loss, (metrics, d_state)), grads = jax.value_and_grad(
        recipe.d_loss, has_aux=True)(s.d.params, nets, batch,
                                     jax.lax.stop_gradient(out), key)
    d = _apply(tx_d, s.d, grads, d_state)
    metrics = {'d/loss': loss, 'd/grad_norm': optax.tree.norm(grads),
               **metrics}
    return s.replace(d=d), metrics

  def g_update_regenerate(s: GanState, nets, batch, forward, k_loss):
    """G forward (forward(g_params) -> (out, g_state)) + loss under one
    value_and_grad (no shared fake)."""
    def loss_fn(g_params):
      out, g_state = forward(g_params)
      loss, (metrics, d_state) = recipe.g_loss(out, nets, batch, k_loss)
      return loss, (metrics, g_state, d_state, out)
    (loss, (metrics, g_state, d_state, out)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(s.g.params)
    return loss, metrics, grads, g_state, d_state, out

  def critic_updates(s: GanState, batch, frozen, key):
    """n_critic D updates under lax.scan; update i sees real batch[i] and a
    fresh fake (G in train mode: its collections move every time)."""
    def body(carry, xs):
      d, g_state = carry
      b, k = xs
      k_gen, k_d = jax.random.split(k)
      t = s.replace(g=s.g.replace(state=g_state), d=d)
      out, g_state = generate(t.g.params, base.Nets(t.g, d, frozen, s.step),
                              b, k_gen)
      t = t.replace(g=t.g.replace(state=g_state))
      t, metrics = d_update(t, base.Nets(t.g, d, frozen, s.step), b, out,
                            k_d)
      return (t.d, g_state), metrics
    (d, g_state), metrics = jax.lax.scan(
        body, (s.d, s.g.state), (batch, jax.random.split(key, n_critic)),
        unroll=n_critic if unroll_critic else 1)
    metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    return s.replace(d=d, g=s.g.replace(state=g_state)), metrics

  def critic_step(s: GanState, batch, frozen, k_gen, k_d, k_g):
    """WGAN-GP iteration: n_critic D updates, then G on a fresh fake (and
    the last real batch, for recipes whose G loss reads real data)."""
    s, metrics = critic_updates(s, batch, frozen, k_d)
    last = jax.tree.map(lambda x: x[-1], batch)
    nets = base.Nets(s.g, s.d, frozen, s.step)
    if update_g:
      g_loss, g_metrics, g_grads, g_state, d_state, _ = g_update_regenerate(
          s, nets, last, lambda p: generate(p, nets, last, k_gen), k_g)
    else:
      out, g_state = generate(s.g.params, nets, last, k_gen)
      g_loss, (g_metrics, d_state) = recipe.g_loss(
          out, base.Nets(s.g.replace(state=g_state), s.d, frozen, s.step),
          last, k_g)
      g_grads = None
    s = s.replace(g=s.g.replace(state=g_state))
    return s, metrics, g_loss, g_metrics, g_grads, d_state

  def d_then_g(s: GanState, batch, frozen, k_gen, k_d, k_g, k_gen2):
    """One D update, then G (shared fake, or rerun through `regenerate` on
    k_gen, with k_gen2 for noise the recipe draws anew)."""
    nets = base.Nets(s.g, s.d, frozen, s.step)
    if recipe.share_fake:
      # One G forward: D trains on it, then dL_G/dout is pulled back.
      out, pull, g_state = jax.vjp(
          lambda p: generate(p, nets, batch, k_gen), s.g.params,
          has_aux=True)
    else:
      out, g_state = generate(s.g.params, nets, batch, k_gen)
    s = s.replace(g=s.g.replace(state=g_state))
    s, metrics = d_update(s, base.Nets(s.g, s.d, frozen, s.step), batch,
                          out, k_d)
    nets = base.Nets(s.g, s.d, frozen, s.step)   # G sees the updated D
    if not update_g:
      g_loss, (g_metrics, d_state) = recipe.g_loss(out, nets, batch, k_g)
      g_grads = None
    elif recipe.share_fake:
      (g_loss, (g_metrics, d_state)), d_out = jax.value_and_grad(
          recipe.g_loss, has_aux=True)(out, nets, batch, k_g)
      (g_grads,) = pull(d_out)
    else:
      # Layout2Im re-runs G on the same noise: k_gen is passed again on
      # purpose (k_gen2 for the noise it draws anew).
      rerun = lambda p: recipe.regenerate(p, nets, batch, k_gen, k_gen2)
      g_loss, g_metrics, g_grads, g_state, d_state, _ = (
          g_update_regenerate(s, nets, batch, rerun, k_g))
      s = s.replace(g=s.g.replace(state=g_state))
    return s, metrics, g_loss, g_metrics, g_grads, d_state

  def g_first(s: GanState, batch, frozen, k_gen, k_g):
    nets = base.Nets(s.g, s.d, frozen, s.step)
    g_loss, g_metrics, g_grads, g_state, d_state, _ = g_update_regenerate(
        s, nets, batch, lambda p: generate(p, nets, batch, k_gen), k_g)
    s = s.replace(g=s.g.replace(state=g_state))
    return s, {}, g_loss, g_metrics, g_grads, d_state

  def update_ema(s: GanState) -> GanState:
    # Warm-up as tf.train.ExponentialMovingAverage(num_updates): the decay
    # grows as (1 + n) / (10 + n) up to ema_decay, n = steps since start,
    # so short runs get a usable EMA; before ema_start it copies G.
    n = (s.step - ema_start).astype(jnp.float32)
    decay = jnp.where(n < 0, 0.0, jnp.minimum(ema_decay, (1 + n) / (10 + n)))
    ema = optax.incremental_update(s.g.params, s.ema_g, 1.0 - decay)
    return s.replace(ema_g=ema)

  def step(s: GanState, batch, frozen):
    key = jax.random.fold_in(jax.random.wrap_key_data(s.key), s.step)
    k_gen, k_d, k_g, k_gen2 = jax.random.split(key, 4)
    if n_critic > 1:
      s, metrics, g_loss, g_metrics, g_grads, d_state = critic_step(
          s, batch, frozen, k_gen, k_d, k_g)
    elif order[0] == 'd':
      s, metrics, g_loss, g_metrics, g_grads, d_state = d_then_g(
          s, batch, frozen, k_gen, k_d, k_g, k_gen2)
    else:
      s, metrics, g_loss, g_metrics, g_grads, d_state = g_first(
          s, batch, frozen, k_gen, k_g)

    if s.d is not None:
      s = s.replace(d=s.d.replace(state=d_state))
    if g_grads is None:
      g_norm = jnp.zeros((), jnp.float32)
    else:
      s = s.replace(g=_apply(tx_g, s.g, g_grads, s.g.state))
      g_norm = optax.tree.norm(g_grads)
    metrics = {**metrics, 'g/loss': g_loss, 'g/grad_norm': g_norm,
               **g_metrics}

    if order == ('g', 'd'):
      # SPADE: D trains on a fake regenerated by the updated G, no gradient.
      nets = base.Nets(s.g, s.d, frozen, s.step)
      out, g_state = generate(s.g.params, nets, batch, k_gen2)
      s = s.replace(g=s.g.replace(state=g_state))
      s, d_metrics = d_update(s, base.Nets(s.g, s.d, frozen, s.step), batch,
                              out, k_d)
      metrics.update(d_metrics)

    if s.ema_g is not None:
      s = update_ema(s)
    s = s.replace(step=s.step + 1)
    return s, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  return step
