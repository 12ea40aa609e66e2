"""The classic sparse autoencoder with a KL-divergence sparsity penalty (Ng 2011, CS294A
lecture notes "Sparse autoencoder", Sec. 2.3), with ReLU latents.

    pre      = W_enc x + b_enc
    z        = ReLU(pre)
    x_hat    = W_dec z + b_pre
    rho_hat_j = mean over the batch of z_j / s          (s: the input scale, see Units)
    loss     = ||x - x_hat||^2 / (B · variance) + lambda · sum_j KL(rho || rho_hat_j),
    KL(rho || q) = rho log(rho / q) + (1 - rho) log((1 - rho) / (1 - q))

rho is `Hyper.target_activation` (`sae.target_activation`, default 1e-3). The penalty pushes each
latent's mean activation towards rho from both sides, so it also revives latents that
fire too little. Above rho it acts as an L1 penalty of weight about lambda (the KL's slope
is ~1 for rho << rho_hat << 1); below rho it pushes activations up. So rho must be below
the mean activation a latent of a real feature can have: about (L0 · typical activation) /
n_latents, i.e. ~1e-3 for thousands of latents on unit-norm inputs. The notes' 0.05 (for
sigmoid units) makes a dense code; the zoo test and sweep use 1e-3.

Differences from the notes, and why:
* ReLU instead of the sigmoid. Sigmoid latents are never exactly zero, so their L0 is
  n_latents and they cannot be placed on the sparsity–fidelity axis every architecture here
  is compared on. With ReLU, rho_hat_j is a mean activation, not a firing probability, and
  can leave (0, 1): below `RHO_HAT_MIN` it is clipped (a latent that never fires gets no
  gradient through the ReLU anyway); above 1 - `RHO_HAT_MARGIN` the KL is continued by its
  tangent, so the penalty stays finite and keeps pushing down.
* Unit-norm decoder rows instead of the notes' weight decay: either stops the penalty from
  being dodged by shrinking z and growing W_dec; the constraint is the one the other
  architectures use and has no extra coefficient.
* Inputs "unit_norm" (centred, unit norm per token, as TopK), so activations are O(1) and
  a mean activation of rho is meaningful.

Units: the notes' loss is (1/2) E||x - x_hat||^2 + beta · sum_j KL; ours divides the
reconstruction by variance = E||x - E x||^2, so lambda = 2 · beta / variance. rho_hat, and
so rho, are in units of the input scale s = sqrt(E||x||^2) of the normalised inputs
(`Hyper.input_scale`, measured; 1 for "unit_norm"), so rho and lambda mean the same at
every `sae.input_norm`. The sparsity knob is lambda (`sae.sparsity_coefficient`).

Params: W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in], b_pre [d_in].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sae_jax.saes import base, relu_l1

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(base.Hyper):
  """KL-sparsity SAE's hyperparameters (`sae.sparsity_coefficient`, `sae.target_activation`)."""
  sparsity_coefficient: float = 1.0  # lambda, the knob, in our units (2 beta / variance)
  # rho, the target mean activation: 1e-3 for ReLU latents (module docstring; the notes'
  # 0.05 is for sigmoid units and makes a dense code here)
  target_activation: float = 1e-3

RHO_HAT_MIN = 1e-6
RHO_HAT_MARGIN = 1e-2



def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: Hyper | None = None) -> Params:
  """Tied init: unit-norm decoder rows, W_enc = W_dec^T, b_enc = 0 (`base.tied_init`; the
  TopK family's encoder_init_scale is not part of this recipe)."""
  del hp
  return base.tied_init(key, d_in, n_latents, b_pre_D)

decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


# The encoder of Anthropic's ReLU SAE: z = ReLU(W_enc x + b_enc).
pre_activations = relu_l1.pre_activations
encode = relu_l1.encode


def kl_divergence(rho: float, rho_hat: jax.Array) -> jax.Array:
  """KL(rho || rho_hat) between Bernoulli distributions, elementwise, for rho_hat in
  (0, 1) (Ng 2011, Sec. 2.3). Outside, see the module docstring: clipped below
  RHO_HAT_MIN, continued linearly above 1 - RHO_HAT_MARGIN. Raises ValueError unless
  0 < rho < 1."""
  if not 0 < rho < 1:
    raise ValueError(f"target_activation={rho} must be in (0, 1)")
  top = 1.0 - RHO_HAT_MARGIN

  def kl(q):
    return rho * jnp.log(rho / q) + (1 - rho) * jnp.log((1 - rho) / (1 - q))

  slope_at_top = -rho / top + (1 - rho) / (1 - top)
  q = jnp.clip(rho_hat, RHO_HAT_MIN, top)
  return kl(q) + slope_at_top * jax.nn.relu(rho_hat - top)


def kl_penalty(z_BxN: jax.Array, rho: float) -> jax.Array:
  """sum_j KL(rho || rho_hat_j) with rho_hat_j the batch mean of z_j (unweighted); pass z
  in units of s (`loss` does)."""
  return jnp.sum(kl_divergence(rho, jnp.mean(z_BxN, axis=0)))


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """normalized MSE + lambda · sum_j KL(rho || rho_hat_j) (Ng 2011, Sec. 2.3).

  Args:
    params, x_BxD: params and normalised inputs (the batch defines rho_hat); extras: unused.
    hp: `Hyper` with sparsity_coefficient (lambda), target_activation (rho, in units of s)
      and input_scale (s).
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: unused.

  Returns:
    `base.Output` with sparsity_loss = lambda · sum_j KL(rho || rho_hat_j / s).

  Raises:
    ValueError: target_activation not in (0, 1).
  """
  del dead_N
  z_BxN = encode(params, x_BxD)
  nmse = base.normalized_mse(x_BxD, decode(params, z_BxN), variance)
  sparsity = hp.sparsity_coefficient * kl_penalty(z_BxN / base.scale(hp), hp.target_activation)
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  return base.Output(nmse + sparsity, nmse, sparsity, jnp.zeros((), jnp.float32), fired_N, l0,
                    extras)


ARCH = base.Architecture(
    name="kl", hyper=Hyper, knob="sparsity_coefficient", unit_norm_decoder=True,
    init=init, init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Ng 2011, CS294A lecture notes: Sparse autoencoder (KL sparsity)",
    input_norm="unit_norm", encode_formula="z = ReLU(W_enc^T x + b_enc)",
    saelens=("standard", False),
    # mean_norm: the pre-issue-19 grid (3.0, 1.5, 0.7, 0.3) at rho 1e-3 in absolute units,
    # rewritten in units of s ~ sqrt(576) = 24: rho / 24, and lambda x 24 since for small
    # rho and rho_hat, KL(rho / s || rho_hat / s) ~ KL(rho || rho_hat) / s; not re-run
    zoo_grid={"unit_norm": (0.4, 0.2, 0.1, 0.05), "mean_norm": (72.0, 36.0, 17.0, 7.2)},
    zoo_overrides={"unit_norm": {"sae.target_activation": 1e-3},
                   "mean_norm": {"sae.target_activation": 4e-5}})
