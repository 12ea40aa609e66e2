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

Params = dict[str, jax.Array]


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None) -> Params:
  """Tied initialisation (Gao et al. 2024, Sec. A.1).

  Decoder rows are random unit vectors, the encoder is the decoder's transpose, b_enc is
  zero, and b_pre is the given vector (the geometric median of a data sample, see
  `sae_jax.geometric_median`) or zero.

  Returns:
    dict with W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in],
    b_pre [d_in], all float32.
  """
  W_dec_NxD = jax.random.normal(key, (n_latents, d_in), jnp.float32)
  W_dec_NxD = unit_norm_rows(W_dec_NxD)
  if b_pre_D is None:
    b_pre_D = jnp.zeros((d_in,), jnp.float32)
  return {
      "W_enc": W_dec_NxD.T,
      "b_enc": jnp.zeros((n_latents,), jnp.float32),
      "W_dec": W_dec_NxD,
      "b_pre": jnp.asarray(b_pre_D, jnp.float32),
  }


def unit_norm_rows(W_NxD: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Scale each row to unit L2 norm (the decoder constraint of Gao et al. 2024, Sec. A.1)."""
  return W_NxD / jnp.maximum(jnp.linalg.norm(W_NxD, axis=-1, keepdims=True), eps)


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc (x - b_pre) + b_enc, shape [B, n_latents]."""
  return (x_BxD - params["b_pre"]) @ params["W_enc"] + params["b_enc"]


class Code(NamedTuple):
  """A TopK code: the k kept activations per token and their latent indices."""
  acts_BxK: jax.Array  # ReLU of the k largest pre-activations, descending
  idx_BxK: jax.Array  # int32 latent indices


def topk(pre_BxN: jax.Array, k: int) -> Code:
  """Keep the k largest pre-activations of each token, then ReLU (Gao et al. 2024, Eq. 2)."""
  vals_BxK, idx_BxK = jax.lax.top_k(pre_BxN, k)
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


def decode(params: Params, z_BxN: jax.Array) -> jax.Array:
  """x_hat = W_dec z + b_pre, shape [B, d_in]."""
  return z_BxN @ params["W_dec"] + params["b_pre"]


def _auxk_loss(params: Params, pre_BxN: jax.Array, e_BxD: jax.Array, dead_N: jax.Array,
               k_aux: int) -> jax.Array:
  """||e - W_dec z_aux||^2 / ||e||^2 with z_aux the top-k_aux dead pre-activations."""
  masked_BxN = jnp.where(dead_N[None, :], pre_BxN, -jnp.inf)
  aux_code = topk(masked_BxN, k_aux)
  e_hat_BxD = to_dense(aux_code, pre_BxN.shape[1]) @ params["W_dec"]
  return jnp.sum((e_BxD - e_hat_BxD) ** 2) / jnp.maximum(jnp.sum(e_BxD**2), 1e-30)


class LossOutput(NamedTuple):
  loss: jax.Array  # scalar: normalized MSE + aux_coef * AuxK
  normalized_mse: jax.Array  # scalar, sum ||x - x_hat||^2 / (B * variance)
  aux_loss: jax.Array  # scalar, AuxK (0 when no latent is dead)
  fired_N: jax.Array  # bool [n_latents]: latent fired on some token of the batch
  l0: jax.Array  # scalar, mean non-zeros per token


def loss(params: Params, x_BxD: jax.Array, *, k: int, variance: jax.Array | float = 1.0,
         dead_N: jax.Array | None = None, k_aux: int = 0, aux_coef: float = 1 / 32) -> LossOutput:
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
  B = x_BxD.shape[0]
  nmse = jnp.sum(err_BxD**2) / (B * variance)

  aux = jnp.zeros((), jnp.float32)
  if dead_N is not None and k_aux > 0:
    e_BxD = jax.lax.stop_gradient(err_BxD)
    # Only pay for the AuxK top-k and decode when some latent is dead.
    k_aux = min(k_aux, n_latents)
    aux = jax.lax.cond(jnp.any(dead_N), lambda *a: _auxk_loss(*a, k_aux),
                       lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, e_BxD, dead_N)

  fired_N = jnp.any(z_BxN > 0, axis=0)
  l0 = jnp.mean(jnp.sum(z_BxN > 0, axis=-1).astype(jnp.float32))
  return LossOutput(nmse + aux_coef * aux, nmse, aux, fired_N, l0)
