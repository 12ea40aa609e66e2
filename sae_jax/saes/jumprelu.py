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
with a kernel K of bandwidth epsilon (`Hyper.bandwidth` · s, see Units) (Sec. 4, Eqs. 11-12):

    d/dtheta JumpReLU_theta(pre) := -(theta / epsilon) · K((pre - theta) / epsilon)
    d/dtheta H(pre - theta)      := -(1 / epsilon)     · K((pre - theta) / epsilon)
    K(u) = 1[|u| < 1/2]   (rectangle)

while d/dpre JumpReLU = H(pre - theta) (the ordinary derivative) and d/dpre H = 0: the L0
penalty trains only the thresholds, the reconstruction trains everything.

Recipe (Rajamanoharan et al. 2024b, Sec. 5 and App.; Lieberum et al. 2024, Gemma Scope,
Sec. 3): tied init with unit-norm decoder rows (W_enc = W_dec^T), b_enc = 0, every
threshold at theta_0; decoder rows kept at unit norm. Not reproduced: their linear warm-up
of lambda and Adam beta1 = 0 (the trainer's optimiser is shared). b_pre starts at the
trainer's geometric median (theirs: zero).

Units, and why (scale-aware bandwidth). epsilon and theta_0 are lengths in pre-activation
space: the straight-through gradient reaches a threshold only through pre-activations
within epsilon / 2 of it, so an epsilon chosen for one input scale is silent at another
(raw inputs of norm ~3 left every threshold at its start and L0 the same at lambda 0.003
and 0.3; README, "The SAE zoo"). Gemma Scope fixes the scale instead: inputs are
multiplied by one constant so that E||x||^2 = 1, and then epsilon = 1e-3 (Lieberum et al.
2024, Sec. 3; Rajamanoharan et al. 2024b, App.). Here both are in units of the input
scale s = sqrt(E||x||^2) of the normalised inputs (`Hyper.input_scale`, measured):

    epsilon_used = bandwidth · s,   theta_0 = initial_threshold · s,

which is the paper's setting exactly when s = 1 ("unit_norm", or any input scaled to unit
mean squared norm) and its equivalent at every other `sae.input_norm`: the loss of inputs
c·x with (epsilon, theta) scaled by c equals that of x, parameter for parameter. lambda
multiplies an L0 (a count), so it needs no unit; ours is lambda_paper / variance, because
our reconstruction term is divided by variance = E||x - E x||^2 (<= s^2). The sparsity
knob is lambda (`sae.sparsity_coefficient`, default 1e-2).

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
  # lambda, the knob, in our units (lambda_paper / variance): 1e-2 puts lambda / 10, lambda
  # and 10 lambda a factor >= 1.25 apart in L0 at every input_norm
  # (tests/sparsity_monotonicity_test.py)
  sparsity_coefficient: float = 1e-2
  # epsilon of the straight-through kernel, in units of s: Gemma Scope's 1e-3 at unit
  # mean squared norm (Lieberum et al. 2024, Sec. 3; Rajamanoharan et al. 2024b)
  bandwidth: float = 1e-3
  # theta_0 in units of s. From the papers' 1e-3, Adam (<= lr per step in log space) needs
  # ~ln(100) / lr steps (~6k at lr 8e-4) to reach the scale of the pre-activations
  # (~0.1 s); 0.05 starts near there, so a run of a few thousand steps sees the knob act
  # (the zoo's unit_norm calibration started at 0.05 too).
  initial_threshold: float = 0.05


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: base.Hyper | None = None) -> Params:
  """Tied init (unit-norm decoder rows, W_enc = W_dec^T, b_enc = 0) and every threshold at
  theta_0 = hp.initial_threshold · s (Lieberum et al. 2024, Sec. 3; s = hp.input_scale,
  module docstring, Units). Raises ValueError if the initial threshold is not positive."""
  hp = hp or Hyper(n_latents=n_latents)
  theta0 = hp.initial_threshold * base.scale(hp)
  if not theta0 > 0:
    raise ValueError(f"initial_threshold={hp.initial_threshold} must be positive (it is "
                     "stored as a log)")
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
  return jumprelu(pre_activations(params, x_BxD), threshold(params),
                  bandwidth(hp or Hyper(n_latents=params["W_enc"].shape[1])))


def bandwidth(hp: base.Hyper) -> float:
  """epsilon in pre-activation units: hp.bandwidth · s (module docstring, Units)."""
  return hp.bandwidth * base.scale(hp)


decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """JumpReLU training loss: normalized MSE + lambda · L0 (Rajamanoharan et al. 2024b,
  Sec. 3), gradients by the straight-through estimators of Sec. 4, Eqs. 11-12.

  Args:
    params: JumpReLU params; x_BxD: normalised inputs; extras: unused ({}).
    hp: `Hyper` with sparsity_coefficient (lambda), bandwidth (epsilon / s) and input_scale
      (s).
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: unused (the L0 STE, not AuxK, revives latents).

  Returns:
    `base.Output`; sparsity_loss = lambda · L0 (L0 = mean over tokens of active latents).
  """
  del dead_N
  pre_BxN = pre_activations(params, x_BxD)
  theta_N = threshold(params)
  eps = bandwidth(hp)
  z_BxN = jumprelu(pre_BxN, theta_N, eps)
  x_hat_BxD = decode(params, z_BxN)
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  l0_penalty = jnp.mean(jnp.sum(step(pre_BxN, theta_N, eps), axis=-1))
  sparsity = hp.sparsity_coefficient * l0_penalty
  fired_N, l0 = base.stats(z_BxN)
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
    # L0 16 (theta_0 0.05, now the default); mean_norm 1e-3 -> L0 122 (theta_0 0.5 ~ 0.02 s,
    # kept below; that calibration's absolute bandwidth 1e-3 ~ 4e-5 s is now 1e-3 s, so
    # its L0s may shift: not re-run). lambda multiplies an L0, so it has no input unit.
    zoo_grid={"unit_norm": (1e-2, 3e-3, 1e-3, 3e-4), "mean_norm": (2e-2, 8e-3, 3e-3, 1e-3)},
    zoo_overrides={"mean_norm": {"sae.initial_threshold": 0.02}})
