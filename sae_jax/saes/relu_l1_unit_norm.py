"""ReLU sparse autoencoder with a plain L1 penalty and unit-norm decoder rows (Bricken et
al. 2023, "Towards monosemanticity", Sec. "Sparse autoencoder"; also Cunningham et al.
2023).

    pre   = W_enc (x - b_pre) + b_enc
    z     = ReLU(pre)
    x_hat = W_dec z + b_pre
    loss  = ||x - x_hat||^2 / (B · variance) + (lambda / s) · mean_b sum_i z_i

Decoder rows are kept at unit norm (gradient component along each row removed, rows
renormalised after each step, as for TopK), which is what stops the L1 term from being
dodged by shrinking z and growing W_dec. Init: tied, unit-norm rows, b_enc = 0, b_pre at
the geometric median (Bricken et al. also start b_pre at the geometric median). Their
resampling of dead latents is the recipe "bricken2023" (`RECIPES`,
`sae_jax.training.resample`).

Inputs: "mean_norm" (one constant so the mean norm is sqrt(d_in)), the same units as
`relu_l1`, so the two L1 variants share a lambda scale. Units: the paper's loss is
E||x - x_hat||^2 + lambda_paper · E||z||_1; ours divides the reconstruction by variance =
E||x - E x||^2 and the L1 (a length) by the input scale s = sqrt(E||x||^2) of the
normalised inputs (`Hyper.input_scale`, measured; as `relu_l1`), so lambda =
lambda_paper · s / variance, the same at every `sae.input_norm`. The sparsity knob is
lambda (default 0.1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sae_jax.saes import base, topk

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(base.Hyper):
  """ReLU + L1 with unit-norm decoder rows (`sae.sparsity_coefficient`)."""
  # lambda, the knob, in our units (lambda_paper · s / variance); 0.1 as relu_l1's
  # (tests/sparsity_monotonicity_test.py)
  sparsity_coefficient: float = 0.1



def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: Hyper | None = None) -> Params:
  """Tied init: unit-norm decoder rows, W_enc = W_dec^T, b_enc = 0 (`base.tied_init`;
  Bricken et al. 2023 start tied; the TopK family's encoder_init_scale is not part of
  this recipe)."""
  del hp
  return base.tied_init(key, d_in, n_latents, b_pre_D)

pre_activations = topk.pre_activations
decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def encode(params: Params, x_BxD: jax.Array, extras=None, hp: base.Hyper | None = None
           ) -> jax.Array:
  """z = ReLU(W_enc (x - b_pre) + b_enc), shape [B, n_latents]; no extras."""
  del extras, hp
  return jax.nn.relu(pre_activations(params, x_BxD))


def l1_penalty(z_BxN: jax.Array) -> jax.Array:
  """mean over tokens of ||z||_1 (z >= 0), unweighted by lambda."""
  return jnp.mean(jnp.sum(z_BxN, axis=-1))


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """normalized MSE + (lambda / s) · L1 (Bricken et al. 2023; s the input scale, module
  docstring). Arguments as `relu_l1.loss`."""
  del dead_N
  z_BxN = encode(params, x_BxD)
  nmse = base.normalized_mse(x_BxD, decode(params, z_BxN), variance)
  sparsity = hp.sparsity_coefficient / base.scale(hp) * l1_penalty(z_BxN)
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  return base.Output(nmse + sparsity, nmse, sparsity, jnp.zeros((), jnp.float32), fired_N, l0,
                    extras)


# Recipes (`sae.recipe`), in this codebase's config keys; lambda is the sweep's knob.
RECIPES = {
    # Bricken et al. 2023 (Towards monosemanticity, "Neuron resampling")
    "bricken2023": {
        "sae.input_norm": "mean_norm",  # this module's units (they trained on raw MLP outputs)
        "train.adam_b1": 0.9,  # Adam
        "train.adam_b2": 0.999,
        "train.lr_schedule": "constant",
        # dead latents resampled four times early in training (theirs: at 25k, 50k, 75k and
        # 100k steps); a latent is dead at a resampling if it has not fired since the last
        "train.resample_fractions": (0.1, 0.2, 0.3, 0.4),
    },
}

ARCH = base.Architecture(
    name="relu_l1_unit_norm", hyper=Hyper, knob="sparsity_coefficient",
    unit_norm_decoder=True, init=init, init_extras=init_extras, encode=encode, decode=decode,
    loss=loss, paper="Bricken et al. 2023, Towards monosemanticity", input_norm="mean_norm",
    encode_formula="z = ReLU(W_enc^T (x - b_pre) + b_enc) (Bricken et al. 2023)",
    saelens=("standard", True),
    # zoo grids from calibration runs (sweeps/architectures.py): mean_norm (pre-issue-19
    # units) 1e-2 -> L0 37; the mean_norm grid is that calibration times s ~ sqrt(576) = 24
    # (lambda now in units of s), not re-run
    zoo_grid={"unit_norm": (0.4, 0.2, 0.1, 0.05), "mean_norm": (0.96, 0.48, 0.24, 0.12)},
    recipes=RECIPES)
