"""ReLU sparse autoencoder with a plain L1 penalty and unit-norm decoder rows (Bricken et
al. 2023, "Towards monosemanticity", Sec. "Sparse autoencoder"; also Cunningham et al.
2023).

    pre   = W_enc (x - b_pre) + b_enc
    z     = ReLU(pre)
    x_hat = W_dec z + b_pre
    loss  = ||x - x_hat||^2 / (B · variance) + lambda · mean_b sum_i z_i

Decoder rows are kept at unit norm (gradient component along each row removed, rows
renormalised after each step, as for TopK), which is what stops the L1 term from being
dodged by shrinking z and growing W_dec. Init: tied, unit-norm rows, b_enc = 0, b_pre at
the geometric median (Bricken et al. also start b_pre at the geometric median). Not
reproduced: their resampling of dead latents.

Inputs: "mean_norm" (one constant so the mean norm is sqrt(d_in)), the same units as
`relu_l1`, so the two L1 variants share a lambda scale. Units: the paper's loss is
E||x - x_hat||^2 + lambda_paper · E||z||_1; ours divides the reconstruction by variance =
E||x - E x||^2, so lambda = lambda_paper / variance. The sparsity knob is lambda.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sae_jax import sae, topk

Params = sae.Params

init = topk.init
pre_activations = topk.pre_activations
decode = sae.decode


def encode(params: Params, x_BxD: jax.Array, extras=None, hp: sae.Hyper | None = None
           ) -> jax.Array:
  """z = ReLU(W_enc (x - b_pre) + b_enc), shape [B, n_latents]; no extras."""
  del extras, hp
  return jax.nn.relu(pre_activations(params, x_BxD))


def l1_penalty(z_BxN: jax.Array) -> jax.Array:
  """mean over tokens of ||z||_1 (z >= 0), unweighted by lambda."""
  return jnp.mean(jnp.sum(z_BxN, axis=-1))


def loss(params: Params, x_BxD: jax.Array, extras, hp: sae.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> sae.Output:
  """normalized MSE + lambda · L1 (Bricken et al. 2023). Arguments as `relu_l1.loss`."""
  del dead_N
  z_BxN = encode(params, x_BxD)
  nmse = sae.normalized_mse(x_BxD, decode(params, z_BxN), variance)
  sparsity = hp.sparsity_coefficient * l1_penalty(z_BxN)
  fired_N, l0 = sae.stats(z_BxN)
  return sae.Output(nmse + sparsity, nmse, sparsity, jnp.zeros((), jnp.float32), fired_N, l0,
                    extras)


ARCH = sae.Architecture(
    name="relu_l1_unit_norm", knob="sparsity_coefficient", default_knob=1e-2,
    unit_norm_decoder=True, init=init, init_extras=sae.no_extras, encode=encode, decode=decode,
    loss=loss, paper="Bricken et al. 2023, Towards monosemanticity", input_norm="mean_norm")
