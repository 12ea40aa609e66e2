"""TopK sparse autoencoder, pure-functional (Gao et al. 2024, "Scaling and evaluating
sparse autoencoders", Sec. 2).

    z     = ReLU(TopK(W_enc (x - b_pre) + b_enc))            (Gao et al. 2024, Eq. 2)
    x_hat = W_dec z + b_pre

Shapes: x_BxD [batch, d_in]; params W_enc_DxN [d_in, n_latents], b_enc_N, W_dec_NxD
[n_latents, d_in] (row i is latent i's decoder direction), b_pre_D. The params are a
plain dict, so they print, save and shard like any pytree.

The training loss is the normalized MSE of the reconstruction plus alpha times the AuxK
loss on dead latents (Gao et al. 2024, Sec. 2.4 / A.2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sae_jax import sae, sharding

Params = sae.Params


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: sae.Hyper | None = None) -> Params:
  """Tied initialisation (Gao et al. 2024, Sec. A.1).

  Decoder rows are random unit vectors, the encoder is the decoder's transpose, b_enc is
  zero, and b_pre is the given vector (the geometric median of a data sample, see
  `sae_jax.geometric_median`) or zero.

  Returns:
    dict with W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in],
    b_pre [d_in], all float32.
  """
  del hp
  return sae.tied_init(key, d_in, n_latents, b_pre_D)


unit_norm_rows = sae.unit_norm_rows


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc (x - b_pre) + b_enc, shape [B, n_latents]."""
  return (x_BxD - params["b_pre"]) @ params["W_enc"] + params["b_enc"]


class Code(NamedTuple):
  """A TopK code: the k kept activations per token and their latent indices."""
  acts_BxK: jax.Array  # ReLU of the k largest pre-activations, descending
  idx_BxK: jax.Array  # int32 latent indices


def topk(pre_BxN: jax.Array, k: int) -> Code:
  """Keep the k largest pre-activations of each token, then ReLU (Gao et al. 2024, Eq. 2)."""
  vals_BxK, idx_BxK = sharding.top_k(pre_BxN, k)
  return Code(jax.nn.relu(vals_BxK), idx_BxK)


def to_dense(code: Code, n_latents: int) -> jax.Array:
  """Scatter a code to its dense latent vector z, shape [B, n_latents]."""
  B = code.acts_BxK.shape[0]
  z_BxN = jnp.zeros((B, n_latents), code.acts_BxK.dtype)
  return z_BxN.at[jnp.arange(B)[:, None], code.idx_BxK].set(code.acts_BxK)


def encode(params: Params, x_BxD: jax.Array, k: int) -> jax.Array:
  """Dense latents z [B, n_latents] with at most k non-zeros per token.

  Exactly k are non-zero unless some of the k largest pre-activations are <= 0 (ReLU).
  Raises ValueError if k exceeds n_latents.
  """
  n_latents = params["W_enc"].shape[1]
  if k > n_latents:
    raise ValueError(f"k={k} exceeds n_latents={n_latents}")
  return to_dense(topk(pre_activations(params, x_BxD), k), n_latents)


decode = sae.decode


def _auxk_loss(params: Params, pre_BxN: jax.Array, e_BxD: jax.Array, dead_N: jax.Array,
               k_aux: int) -> jax.Array:
  """||e - W_dec z_aux||^2 / ||e||^2 with z_aux the top-k_aux dead pre-activations."""
  masked_BxN = jnp.where(dead_N[None, :], pre_BxN, -jnp.inf)
  aux_code = topk(masked_BxN, k_aux)
  e_hat_BxD = to_dense(aux_code, pre_BxN.shape[1]) @ params["W_dec"]
  return jnp.sum((e_BxD - e_hat_BxD) ** 2) / jnp.maximum(jnp.sum(e_BxD**2), 1e-30)


LossOutput = sae.Output


def loss(params: Params, x_BxD: jax.Array, *, k: int, variance: jax.Array | float = 1.0,
         dead_N: jax.Array | None = None, k_aux: int = 0, aux_coef: float = 1 / 32,
         multi_topk: bool = False) -> sae.Output:
  """TopK training loss with AuxK (Gao et al. 2024, Sec. 2.4 and A.2).

  Args:
    params: TopK params.
    x_BxD: inputs, already normalised (see `sae_jax.data.normalize`).
    k: active latents per token.
    variance: E||x - E[x]||^2 of the input distribution, so the reconstruction term is the
      normalized MSE (fraction of variance unexplained).
    dead_N: bool [n_latents], latents that have not fired for `dead_tokens` tokens.
    k_aux: latents used by the AuxK reconstruction (0 disables AuxK).
    aux_coef: alpha, the AuxK weight (1/32 in the paper).
    multi_topk: add the reconstruction loss with 4k latents, weighted 1/8 (Gao et al.
      2024, Sec. 5.3 "Multi-TopK": L(k) + L(4k)/8), so the SAE also works at larger k.

  The AuxK term reconstructs the residual e = x - x_hat (held constant) with the top-k_aux
  dead latents: e_hat = W_dec z_aux, without b_pre (already inside x_hat, so b_pre is
  counted once), and is ||e - e_hat||^2 / ||e||^2 summed over the batch. It is exactly zero
  when no latent is dead.
  """
  n_latents = params["W_enc"].shape[1]
  pre_BxN = pre_activations(params, x_BxD)
  code = topk(pre_BxN, k)
  z_BxN = to_dense(code, n_latents)
  x_hat_BxD = decode(params, z_BxN)
  err_BxD = x_BxD - x_hat_BxD
  nmse = sae.normalized_mse(x_BxD, x_hat_BxD, variance)
  objective = nmse
  if multi_topk:
    x_hat4_BxD = decode(params, to_dense(topk(pre_BxN, min(4 * k, n_latents)), n_latents))
    objective = objective + sae.normalized_mse(x_BxD, x_hat4_BxD, variance) / 8

  aux = jnp.zeros((), jnp.float32)
  if dead_N is not None and k_aux > 0:
    e_BxD = jax.lax.stop_gradient(err_BxD)
    # Only pay for the AuxK top-k and decode when some latent is dead.
    k_aux = min(k_aux, n_latents)
    aux = jax.lax.cond(jnp.any(dead_N), lambda *a: _auxk_loss(*a, k_aux),
                       lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, e_BxD, dead_N)

  fired_N, l0 = sae.stats(z_BxN)
  return sae.Output(objective + aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N,
                    l0, {})


def _encode(params: Params, x_BxD: jax.Array, extras, hp: sae.Hyper) -> jax.Array:
  del extras
  return encode(params, x_BxD, hp.k)


def _loss(params: Params, x_BxD: jax.Array, extras, hp: sae.Hyper, *, variance, dead_N
          ) -> sae.Output:
  del extras
  return loss(params, x_BxD, k=hp.k, variance=variance, dead_N=dead_N, k_aux=hp.k_aux,
              aux_coef=hp.aux_coef, multi_topk=hp.multi_topk)


ARCH = sae.Architecture(
    name="topk", knob="k", default_knob=32, unit_norm_decoder=True, init=init,
    init_extras=sae.no_extras, encode=_encode, decode=decode, loss=_loss,
    paper="Gao et al. 2024, Scaling and evaluating sparse autoencoders")
