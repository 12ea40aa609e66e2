"""Optimiser of the TopK recipe: Adam on gradients whose component parallel to each
decoder row is removed, then decoder rows renormalised (Gao et al. 2024, Sec. 2.3, A.1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sae_jax.saes import base


def remove_parallel_component(W_NxD: jax.Array, g_NxD: jax.Array) -> jax.Array:
  """g_i - (g_i . w_i) w_i for unit-norm rows w_i: the gradient tangent to the sphere."""
  return g_NxD - jnp.sum(g_NxD * W_NxD, axis=-1, keepdims=True) * W_NxD


def project_decoder_gradient(key: str = "W_dec") -> optax.GradientTransformation:
  """Remove from params[key]'s gradient its component along each (unit-norm) row."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params):
    updates = dict(updates)
    updates[key] = remove_parallel_component(params[key], updates[key])
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def make(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 6.25e-10,
         project_decoder: bool = True) -> optax.GradientTransformation:
  """Adam (eps 6.25e-10, Gao et al. 2024 Sec. 2.3), after the decoder-gradient projection
  when the architecture keeps unit-norm decoder rows."""
  adam = optax.adam(lr, b1=b1, b2=b2, eps=eps)
  return optax.chain(project_decoder_gradient(), adam) if project_decoder else adam


def renormalize_decoder(params: base.Params) -> base.Params:
  """Project the decoder rows back to unit norm after an update."""
  return {**params, "W_dec": base.unit_norm_rows(params["W_dec"])}
