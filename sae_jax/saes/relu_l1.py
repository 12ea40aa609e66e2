"""ReLU sparse autoencoder with the decoder-norm-weighted L1 penalty, Anthropic's recipe
(Templeton et al. 2024, "Scaling monosemanticity", and its training update, Conerly et
al. 2024, "Circuits updates, April 2024").

    pre   = W_enc x + b_enc                   (the update no longer subtracts b_pre first)
    z     = ReLU(pre)
    x_hat = W_dec z + b_pre
    loss  = ||x - x_hat||^2 / (B · variance) + (lambda / s) · mean_b sum_i z_i · ||W_dec,i||

The decoder norms are not constrained: weighting each latent's activation by its decoder
row's norm in the penalty removes the incentive to shrink z by growing W_dec, so no
projection or renormalisation is needed (`unit_norm_decoder=False`).

Recipe: inputs scaled by one constant so that the mean norm is sqrt(d_in) ("mean_norm";
set `sae.input_norm` to it); W_dec rows in random directions with norm 0.1 (Conerly et al.
2024: "fixed L2 norm of 0.05 to 1"), W_enc = W_dec^T, b_enc = 0; b_pre at the trainer's
geometric median (theirs: zero). Their linear lambda warm-up over the first 5% of
training, learning-rate decay over the last 20% and gradient clipping at norm 1 are the
recipe "templeton2024" (`RECIPES`).

Units: their loss is E||x - x_hat||^2 + lambda_A · E sum_i z_i ||W_dec,i|| (lambda_A = 5);
ours divides the reconstruction by variance = E||x - E x||^2 and the penalty (a length:
activations times decoder norms) by the input scale s = sqrt(E||x||^2) of the normalised
inputs (`Hyper.input_scale`, measured), so the loss of inputs c·x equals that of x with
the activations scaled by c and one lambda means the same at every `sae.input_norm`:
lambda = lambda_A · s / variance (5 · 24 / 576 ~ 0.2 at SmolLM2's d_in with "mean_norm",
where s ~ sqrt(d_in) and variance ~ d_in). The sparsity knob is lambda
(`sae.sparsity_coefficient`, default 0.1).

Params: W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in], b_pre [d_in].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sae_jax.saes import base

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(base.Hyper):
  """ReLU + decoder-norm-weighted L1's hyperparameters (`sae.sparsity_coefficient`)."""
  # lambda, the knob, in our units (module docstring: lambda_A · s / variance); 0.1 puts
  # lambda / 10, lambda and 10 lambda a factor >= 1.25 apart in L0 at every input_norm
  # (tests/sparsity_monotonicity_test.py)
  sparsity_coefficient: float = 0.1

INIT_DECODER_NORM = 0.1


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: base.Hyper | None = None) -> Params:
  """W_dec rows random directions of norm 0.1, W_enc = W_dec^T, b_enc = 0 (Conerly et al.
  2024)."""
  del hp
  return base.tied_init(key, d_in, n_latents, b_pre_D, decoder_norm=INIT_DECODER_NORM)


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc x + b_enc, shape [B, n_latents]."""
  return x_BxD @ params["W_enc"] + params["b_enc"]


def encode(params: Params, x_BxD: jax.Array, extras=None, hp: base.Hyper | None = None
           ) -> jax.Array:
  """z = ReLU(W_enc x + b_enc), shape [B, n_latents]; no extras."""
  del extras, hp
  return jax.nn.relu(pre_activations(params, x_BxD))


decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def decoder_norm_penalty(params: Params, z_BxN: jax.Array) -> jax.Array:
  """mean over tokens of sum_i z_i · ||W_dec,i|| (Templeton et al. 2024), unweighted by
  lambda; gradients reach both z and the decoder norms."""
  return jnp.mean(z_BxN @ jnp.linalg.norm(params["W_dec"], axis=-1))


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """normalized MSE + (lambda / s) · decoder-norm-weighted L1 (Templeton et al. 2024; s the
  input scale, module docstring).

  Args:
    params, x_BxD: params and normalised inputs; extras: unused ({}).
    hp: `Hyper` with sparsity_coefficient (lambda) and input_scale (s).
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: unused (no AuxK or resampling in this recipe).

  Returns:
    `base.Output` with sparsity_loss = (lambda / s) · penalty and aux_loss 0.
  """
  del dead_N
  z_BxN = encode(params, x_BxD)
  nmse = base.normalized_mse(x_BxD, decode(params, z_BxN), variance)
  sparsity = hp.sparsity_coefficient / base.scale(hp) * decoder_norm_penalty(params, z_BxN)
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  return base.Output(nmse + sparsity, nmse, sparsity, jnp.zeros((), jnp.float32), fired_N, l0,
                    extras)


# Recipes (`sae.recipe`), in this codebase's config keys; lambda is the sweep's knob.
RECIPES = {
    # Templeton et al. 2024 (Scaling monosemanticity) with Conerly et al. 2024's training
    # update (Circuits updates, April 2024)
    "templeton2024": {
        "sae.input_norm": "mean_norm",  # inputs scaled so the mean norm is sqrt(d_in)
        "train.adam_b1": 0.9,  # Adam beta1 = 0.9, beta2 = 0.999
        "train.adam_b2": 0.999,
        "train.lr_schedule": "warmup_linear_decay",  # no lr warm-up; linear decay to 0
        "train.lr_warmup_fraction": 0.0,
        "train.lr_decay_fraction": 0.2,  # over the last 20% of training
        "train.lr_final_fraction": 0.0,
        "train.sparsity_warmup_fraction": 0.05,  # lambda from 0 over the first 5%
        "train.max_grad_norm": 1.0,  # gradient norm clipped at 1
    },
}

ARCH = base.Architecture(
    name="relu_l1", hyper=Hyper, knob="sparsity_coefficient", unit_norm_decoder=False,
    init=init, init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Templeton et al. 2024, Scaling monosemanticity (training update: Conerly et al. "
          "2024, Circuits updates April 2024)", input_norm="mean_norm",
    encode_formula="z = ReLU(W_enc^T x + b_enc) (Conerly et al. 2024)",
    saelens=("standard", False),
    # zoo grids from calibration runs (sweeps/architectures.py): unit_norm lambda 0.05 gave
    # L0 ~210-300; mean_norm (pre-issue-19 units) 1e-2 -> L0 47, 3e-3 -> 216. The mean_norm
    # grid is that calibration times s ~ sqrt(576) = 24 (lambda now in units of s), not re-run.
    zoo_grid={"unit_norm": (0.4, 0.2, 0.1, 0.05), "mean_norm": (0.96, 0.48, 0.24, 0.12)},
    recipes=RECIPES)
