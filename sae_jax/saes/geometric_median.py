"""Geometric median of a sample, to initialise b_pre (Gao et al. 2024, Sec. A.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def geometric_median(x_BxD: jax.Array, n_iter: int = 100, tol: float = 1e-7,
                     eps: float = 1e-8) -> jax.Array:
  """The point minimising sum_b ||x_b - m||_2, by Weiszfeld's algorithm.

  Args:
    x_BxD: sample [B, d_in] (float32).
    n_iter: maximum iterations; tol: stop when the step is below tol * (1 + ||m||).
    eps: distances are clamped to eps so a sample point does not divide by zero.

  Returns:
    m_D [d_in], float32. Starts from the mean; each iteration is a weighted mean with
    weights 1 / ||x_b - m|| (Weiszfeld 1937), which never increases the objective.
  """
  x_BxD = jnp.asarray(x_BxD, jnp.float32)

  def body(carry):
    m_D, _, i = carry
    w_B = 1.0 / jnp.maximum(jnp.linalg.norm(x_BxD - m_D, axis=-1), eps)
    new_D = (w_B @ x_BxD) / jnp.sum(w_B)
    return new_D, jnp.linalg.norm(new_D - m_D), i + 1

  def cond(carry):
    m_D, step, i = carry
    return (i < n_iter) & (step > tol * (1.0 + jnp.linalg.norm(m_D)))

  m0_D = jnp.mean(x_BxD, axis=0)
  m_D, _, _ = jax.lax.while_loop(cond, body, (m0_D, jnp.inf, 0))
  return m_D
