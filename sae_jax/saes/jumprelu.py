"""JumpReLU sparse autoencoder, pure-functional (Rajamanoharan et al. 2024b, "Jumping
ahead: improving reconstruction fidelity with JumpReLU sparse autoencoders").

    pre   = W_enc x + b_enc                                        (Eq. 1, no b_pre inside)
    z     = JumpReLU_theta(pre) = pre · H(pre - theta)             (Eq. 4)
    x_hat = W_dec z + b_pre
    loss  = ||x - x_hat||^2 / (B · variance) + lambda · mean_b sum_i H(pre_i - theta_i)
                                                     (Sec. 3: the L0 sparsity penalty)

Each latent i has a learned threshold theta_i > 0, stored in log space
(params["log_threshold"], theta = exp(log_threshold)) so it stays positive. The jump makes
the loss piecewise constant in theta; its gradient comes from straight-through estimators
with a kernel K of bandwidth epsilon (`Hyper.bandwidth`, 1e-3) (Sec. 4, Eqs. 11-12):

    d/dtheta JumpReLU_theta(pre) := -(theta / epsilon) · K((pre - theta) / epsilon)
    d/dtheta H(pre - theta)      := -(1 / epsilon)     · K((pre - theta) / epsilon)
    K(u) = 1[|u| < 1/2]   (rectangle)

while d/dpre JumpReLU = H(pre - theta) (the ordinary derivative) and d/dpre H = 0: the L0
penalty trains only the thresholds, the reconstruction trains everything.

Recipe (Rajamanoharan et al. 2024b, Sec. 5 and App.; Lieberum et al. 2024, Gemma Scope,
Sec. 3): tied init with unit-norm decoder rows (W_enc = W_dec^T), b_enc = 0, theta =
`Hyper.initial_threshold` (1e-3); decoder rows kept at unit norm; inputs scaled by one
constant so the mean squared norm is about d_in (here "mean_norm": mean norm sqrt(d_in)).
Not reproduced: their linear warm-up of lambda and Adam beta1 = 0 (the trainer's optimiser
is shared). b_pre starts at the trainer's geometric median (theirs: zero).

Units: the papers' loss is ||x - x_hat||^2 + lambda_paper · L0; ours divides the
reconstruction by variance = E||x - E x||^2, so lambda = lambda_paper / variance. The
sparsity knob is lambda (`sae.sparsity_coefficient`).

Params: W_enc [d_in, n_latents], b_enc [n_latents], log_threshold [n_latents],
W_dec [n_latents, d_in], b_pre [d_in].
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from sae_jax.saes import base

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(base.Hyper):
  """JumpReLU's hyperparameters (`sae.sparsity_coefficient`, `sae.bandwidth`,
  `sae.initial_threshold`)."""
  sparsity_coefficient: float = 3e-3  # lambda, the knob, in our units (lambda_paper / variance)
  bandwidth: float = 1e-3  # epsilon of the straight-through kernel (Rajamanoharan et al. 2024b)
  initial_threshold: float = 1e-3  # theta at init (Lieberum et al. 2024, Sec. 3)


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: base.Hyper | None = None) -> Params:
  """Tied init (unit-norm decoder rows, W_enc = W_dec^T, b_enc = 0) and every threshold at
  hp.initial_threshold (Lieberum et al. 2024, Sec. 3). Raises ValueError if the initial
  threshold is not positive."""
  theta0 = (hp or Hyper(n_latents=n_latents)).initial_threshold
  if not theta0 > 0:
    raise ValueError(f"initial_threshold={theta0} must be positive (it is stored as a log)")
  params = base.tied_init(key, d_in, n_latents, b_pre_D)
  params["log_threshold"] = jnp.full((n_latents,), jnp.log(theta0), jnp.float32)
  return params


def rectangle(u: jax.Array) -> jax.Array:
  """K(u) = 1[|u| < 1/2], the rectangle kernel (Rajamanoharan et al. 2024b, Sec. 4)."""
  return (jnp.abs(u) < 0.5).astype(u.dtype)


def _sum_to(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sum a cotangent over the leading axes theta was broadcast along (theta [N] or [])."""
  return jnp.sum(g, axis=tuple(range(g.ndim - len(shape)))).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, theta: jax.Array, bandwidth: float) -> jax.Array:
  """JumpReLU_theta(pre) = pre · H(pre - theta), theta broadcast over leading axes
  (Rajamanoharan et al. 2024b, Eq. 4), with the straight-through gradient of Eq. 11."""
  return jnp.where(pre > theta, pre, 0.0)


def _jumprelu_fwd(pre, theta, bandwidth):
  return jumprelu(pre, theta, bandwidth), (pre, theta)


def _jumprelu_bwd(bandwidth, res, g):
  pre, theta = res
  d_pre = jnp.where(pre > theta, g, 0.0)
  d_theta = -(theta / bandwidth) * rectangle((pre - theta) / bandwidth) * g
  return d_pre, _sum_to(d_theta, jnp.shape(theta))


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(pre: jax.Array, theta: jax.Array, bandwidth: float) -> jax.Array:
  """H(pre - theta) (1.0 where pre > theta, else 0.0), with the straight-through gradient
  of Rajamanoharan et al. 2024b, Eq. 12 for theta and none for pre."""
  return (pre > theta).astype(pre.dtype)


def _step_fwd(pre, theta, bandwidth):
  return step(pre, theta, bandwidth), (pre, theta)


def _step_bwd(bandwidth, res, g):
  pre, theta = res
  d_theta = -(1.0 / bandwidth) * rectangle((pre - theta) / bandwidth) * g
  return jnp.zeros_like(pre), _sum_to(d_theta, jnp.shape(theta))


step.defvjp(_step_fwd, _step_bwd)


def threshold(params: Params) -> jax.Array:
  """theta = exp(log_threshold), shape [n_latents]."""
  return jnp.exp(params["log_threshold"])


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc x + b_enc, shape [B, n_latents] (Rajamanoharan et al. 2024b, Eq. 1)."""
  return x_BxD @ params["W_enc"] + params["b_enc"]


def encode(params: Params, x_BxD: jax.Array, extras=None, hp: base.Hyper | None = None
           ) -> jax.Array:
  """Latents z = JumpReLU_theta(pre), shape [B, n_latents]; no extras are used."""
  del extras
  bandwidth = hp.bandwidth if hp is not None else 1e-3
  return jumprelu(pre_activations(params, x_BxD), threshold(params), bandwidth)


decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """JumpReLU training loss: normalized MSE + lambda · L0 (Rajamanoharan et al. 2024b,
  Sec. 3), gradients by the straight-through estimators of Sec. 4, Eqs. 11-12.

  Args:
    params: JumpReLU params; x_BxD: normalised inputs; extras: unused ({}).
    hp: `Hyper` with sparsity_coefficient (lambda) and bandwidth (epsilon).
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: unused (the L0 STE, not AuxK, revives latents).

  Returns:
    `base.Output`; sparsity_loss = lambda · L0 (L0 = mean over tokens of active latents).
  """
  del dead_N
  pre_BxN = pre_activations(params, x_BxD)
  theta_N = threshold(params)
  z_BxN = jumprelu(pre_BxN, theta_N, hp.bandwidth)
  x_hat_BxD = decode(params, z_BxN)
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  l0_penalty = jnp.mean(jnp.sum(step(pre_BxN, theta_N, hp.bandwidth), axis=-1))
  sparsity = hp.sparsity_coefficient * l0_penalty
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  return base.Output(nmse + sparsity, nmse, sparsity, jnp.zeros((), jnp.float32), fired_N, l0,
                    extras)


ARCH = base.Architecture(
    name="jumprelu", hyper=Hyper, knob="sparsity_coefficient", unit_norm_decoder=True,
    init=init, init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Rajamanoharan et al. 2024b, Jumping ahead: improving reconstruction fidelity with "
          "JumpReLU sparse autoencoders", input_norm="mean_norm",
    encode_formula="z = pre * 1[pre > exp(log_threshold)], pre = W_enc^T x + b_enc "
                   "(Rajamanoharan et al. 2024b, Eq. 1)",
    saelens=("jumprelu", False),
    # zoo grids from calibration runs (sweeps/architectures.py): unit_norm lambda 1e-2 ->
    # L0 16; mean_norm 1e-3 -> L0 122. The paper's theta_0 = 1e-3 needs far more than 800
    # Adam steps to climb in log space, so the zoo starts theta near the activations' scale.
    zoo_grid={"unit_norm": (1e-2, 3e-3, 1e-3, 3e-4), "mean_norm": (2e-2, 8e-3, 3e-3, 1e-3)},
    zoo_overrides={"unit_norm": {"sae.initial_threshold": 0.05},
                   "mean_norm": {"sae.initial_threshold": 0.5}})
