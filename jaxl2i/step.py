"""The one training step shared by every recipe (STYLE.md §4).

`make_train_step` returns a pure function `step(state, batch, frozen) ->
(state, metrics)` that runs the recipe's D and G updates in the recipe's order
inside one compiled call. The trainer jits it with the state donated.
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
                    update_g: bool = True) -> Callable:
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
  """
  order = tuple(recipe.order)
  if order not in (('d', 'g'), ('g', 'd'), ('g',)):
    raise ValueError(f'recipe order {order} is not supported')
  if not update_g and order != ('d', 'g'):
    raise ValueError('a D-only step needs a recipe of order (d, g)')

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

  def step(s: GanState, batch, frozen):
    key = jax.random.fold_in(jax.random.wrap_key_data(s.key), s.step)
    k_gen, k_d, k_g, k_gen2 = jax.random.split(key, 4)
    metrics = {}

    if order[0] == 'd':
      nets = base.Nets(s.g, s.d, frozen)
      if recipe.share_fake:
        # One G forward: D trains on it, then dL_G/dout is pulled back.
        out, pull, g_state = jax.vjp(
            lambda p: generate(p, nets, batch, k_gen), s.g.params,
            has_aux=True)
      else:
        out, g_state = generate(s.g.params, nets, batch, k_gen)
      s = s.replace(g=s.g.replace(state=g_state))
      s, d_metrics = d_update(s, base.Nets(s.g, s.d, frozen), batch, out, k_d)
      metrics.update(d_metrics)
      nets = base.Nets(s.g, s.d, frozen)   # G sees the updated D
      if not update_g:
        g_loss, (g_metrics, d_state) = recipe.g_loss(out, nets, batch, k_g)
        g_grads = None
      elif recipe.share_fake:
        (g_loss, (g_metrics, d_state)), d_out = jax.value_and_grad(
            recipe.g_loss, has_aux=True)(out, nets, batch, k_g)
        (g_grads,) = pull(d_out)
      else:
        # Layout2Im re-runs G on the same noise: k_gen is passed again on
        # purpose (k_gen2, unused in this order, for noise drawn anew).
        rerun = lambda p: recipe.regenerate(p, nets, batch, k_gen, k_gen2)
        g_loss, g_metrics, g_grads, g_state, d_state, _ = (
            g_update_regenerate(s, nets, batch, rerun, k_g))
        s = s.replace(g=s.g.replace(state=g_state))
    else:
      nets = base.Nets(s.g, s.d, frozen)
      g_loss, g_metrics, g_grads, g_state, d_state, _ = g_update_regenerate(
          s, nets, batch, lambda p: generate(p, nets, batch, k_gen), k_g)
      s = s.replace(g=s.g.replace(state=g_state))

    if s.d is not None:
      s = s.replace(d=s.d.replace(state=d_state))
    if g_grads is None:
      g_norm = jnp.zeros((), jnp.float32)
    else:
      s = s.replace(g=_apply(tx_g, s.g, g_grads, s.g.state))
      g_norm = optax.tree.norm(g_grads)
    metrics.update({'g/loss': g_loss, 'g/grad_norm': g_norm, **g_metrics})

    if order == ('g', 'd'):
      # SPADE: D trains on a fake regenerated by the updated G, no gradient.
      out, g_state = generate(s.g.params, base.Nets(s.g, s.d, frozen), batch,
                              k_gen2)
      s = s.replace(g=s.g.replace(state=g_state))
      s, d_metrics = d_update(s, base.Nets(s.g, s.d, frozen), batch, out, k_d)
      metrics.update(d_metrics)

    if s.ema_g is not None:
      # Warm-up as tf.train.ExponentialMovingAverage(num_updates): the decay
      # grows as (1 + n) / (10 + n) up to ema_decay, n = steps since start,
      # so short runs get a usable EMA; before ema_start it copies G.
      n = (s.step - ema_start).astype(jnp.float32)
      decay = jnp.where(n < 0, 0.0, jnp.minimum(ema_decay, (1 + n) / (10 + n)))
      ema = optax.incremental_update(s.g.params, s.ema_g, 1.0 - decay)
      s = s.replace(ema_g=ema)
    s = s.replace(step=s.step + 1)
    return s, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  return step
