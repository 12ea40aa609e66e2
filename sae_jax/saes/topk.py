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

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sae_jax.errors import ConfigError
from sae_jax.saes import base, sharded_topk, sparse

Params = base.Params


@dataclasses.dataclass(frozen=True)
class TiedInit(base.Hyper):
  """The TopK family's initialisation (`init`; batchtopk and matryoshka share it)."""
  # W_enc = encoder_init_scale * W_dec^T (`sae.encoder_init_scale`). Gao et al. 2024 (A.1)
  # say "the transpose", i.e. 1; 1/sqrt(3) is the row norm of torch's nn.Linear init,
  # where OpenAI's reference code and EleutherAI's sparsify start their encoders. Measured
  # on SmolLM2 layer 15 (benchmarks/vs_sparsify.py; n_latents 4096, k 32, 409,600 tokens;
  # held-out normalized MSE): 0.2131 -> 0.2046 at lr 4e-4, 0.1769 -> 0.1742 at lr 1.6e-3.
  encoder_init_scale: float = 3 ** -0.5


@dataclasses.dataclass(frozen=True)
class Hyper(TiedInit):
  """TopK's hyperparameters (`sae.k`, `sae.multi_topk`, `sae.encoder_init_scale`)."""
  k: int = 32  # active latents per token, the sparsity knob (Gao et al. 2024, Sec. 2.2)
  multi_topk: bool = False  # add L(4k)/8 to the loss (Gao et al. 2024, Sec. 5.3)


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: Hyper | None = None) -> Params:
  """Tied initialisation (Gao et al. 2024, Sec. A.1).

  Decoder rows are random unit vectors, the encoder is the decoder's transpose times
  hp.encoder_init_scale (1 without hp), b_enc is zero, and b_pre is the given vector (the
  geometric median of a data sample, see `sae_jax.saes.geometric_median`) or zero.

  Deviation from the paper: the default scale is 1/sqrt(3), not 1 (`TiedInit`). The paper
  says "the transpose"; OpenAI's reference code and EleutherAI's sparsify keep the encoder
  at torch nn.Linear's init, whose rows have norm ~1/sqrt(3), and unit-normalise only the
  decoder. Measured on SmolLM2 layer 15 (benchmarks/vs_sparsify.py: n_latents 4096, k 32,
  batch 512, 409,600 tokens; held-out normalized MSE, seeds 0 / 1): lr 4e-4, scale 1
  0.2131 / 0.2132 -> scale 1/sqrt(3) 0.2046 / 0.2049 (sparsify 0.2052, seed 0); lr 1.6e-3,
  0.1769 (seed 0) -> 0.1742 / 0.1748 (sparsify 0.1749).

  Returns:
    dict with W_enc [d_in, n_latents], b_enc [n_latents], W_dec [n_latents, d_in],
    b_pre [d_in], all float32.
  """
  scale = 1.0 if hp is None else hp.encoder_init_scale
  params = base.tied_init(key, d_in, n_latents, b_pre_D)
  return {**params, "W_enc": params["W_enc"] * scale}


def validate(hp: TiedInit) -> None:
  """Raise ConfigError unless encoder_init_scale is positive."""
  if not hp.encoder_init_scale > 0:
    raise ConfigError(f"sae.encoder_init_scale={hp.encoder_init_scale} must be positive")


unit_norm_rows = base.unit_norm_rows


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc (x - b_pre) + b_enc, shape [B, n_latents]."""
  return (x_BxD - params["b_pre"]) @ params["W_enc"] + params["b_enc"]


class Code(NamedTuple):
  """A TopK code: the k kept activations per token and their latent indices."""
  acts_BxK: jax.Array  # ReLU of the k largest pre-activations, descending
  idx_BxK: jax.Array  # int32 latent indices


def topk(pre_BxN: jax.Array, k: int) -> Code:
  """Keep the k largest pre-activations of each token, then ReLU (Gao et al. 2024, Eq. 2)."""
  vals_BxK, idx_BxK = sharded_topk.top_k(pre_BxN, k)
  return Code(jax.nn.relu(vals_BxK), idx_BxK)


def to_dense(code: Code, n_latents: int) -> jax.Array:
  """Scatter a code to its dense latent vector z, shape [B, n_latents]."""
  B = code.acts_BxK.shape[0]
  z_BxN = jnp.zeros((B, n_latents), code.acts_BxK.dtype)
  return z_BxN.at[jnp.arange(B)[:, None], code.idx_BxK].set(code.acts_BxK)


def encode_topk(params: Params, x_BxD: jax.Array, k: int) -> jax.Array:
  """Dense latents z [B, n_latents] with at most k non-zeros per token.

  Exactly k are non-zero unless some of the k largest pre-activations are <= 0 (ReLU).
  Raises ValueError if k exceeds n_latents.
  """
  n_latents = params["W_enc"].shape[1]
  if k > n_latents:
    raise ValueError(f"k={k} exceeds n_latents={n_latents}")
  return to_dense(topk(pre_activations(params, x_BxD), k), n_latents)


decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def _auxk_loss(params: Params, pre_BxN: jax.Array, e_BxD: jax.Array, dead_N: jax.Array,
               k_aux: int) -> jax.Array:
  """||e - W_dec z_aux||^2 / ||e - mean_b e||^2 (`base.auxk_normalized_mse`) with z_aux
  the top-k_aux dead pre-activations (Gao et al. 2024, Sec. A.2)."""
  masked_BxN = jnp.where(dead_N[None, :], pre_BxN, -jnp.inf)
  aux_code = topk(masked_BxN, k_aux)
  e_hat_BxD = to_dense(aux_code, pre_BxN.shape[1]) @ params["W_dec"]
  return base.auxk_normalized_mse(e_BxD, e_hat_BxD)


LossOutput = base.Output


def dense_loss(params: Params, x_BxD: jax.Array, *, k: int, variance: jax.Array | float = 1.0,
               dead_N: jax.Array | None = None, k_aux: int = 0, aux_coef: float = 1 / 32,
               multi_topk: bool = False, compute_dtype: str = "float32",
               fired_threshold: float = 0.0) -> base.Output:
  """TopK training loss with AuxK (Gao et al. 2024, Sec. 2.4 and A.2), by plain autodiff
  (the reference the sparse step `sparse_loss` is tested against).

  Args:
    params: TopK params.
    x_BxD: inputs, already normalised (see `sae_jax.data.batches.normalize`).
    k: active latents per token.
    variance: E||x - E[x]||^2 of the input distribution, so the reconstruction term is the
      normalized MSE (fraction of variance unexplained).
    dead_N: bool [n_latents], latents that have not fired for `dead_tokens` tokens.
    k_aux: latents used by the AuxK reconstruction (0 disables AuxK).
    aux_coef: alpha, the AuxK weight (1/32 in the paper).
    multi_topk: add the reconstruction loss with 4k latents, weighted 1/8 (Gao et al.
      2024, Sec. 5.3 "Multi-TopK": L(k) + L(4k)/8), so the SAE also works at larger k.
    compute_dtype: input dtype of the encoder and decoder matmuls ("float32" or
      "bfloat16", float32 accumulation).
    fired_threshold: a latent fires where z > this (`base.Hyper.fired_threshold`).

  The AuxK term reconstructs the residual e = x - x_hat (held constant) with the top-k_aux
  dead latents: e_hat = W_dec z_aux, without b_pre (already inside x_hat, so b_pre is
  counted once), and is sum ||e - e_hat||^2 / sum ||e - mean_b e||^2 over the batch, the
  normalisation of OpenAI's code (`base.auxk_normalized_mse`). It is exactly zero when no
  latent is dead.
  """
  n_latents = params["W_enc"].shape[1]
  pre_BxN = sparse.encoder_matmul(params, x_BxD, compute_dtype)
  code = topk(pre_BxN, k)
  z_BxN = to_dense(code, n_latents)
  if compute_dtype == "float32":
    decode_fn = decode
  else:
    dt = jnp.dtype(compute_dtype)
    decode_fn = lambda p, z: jax.lax.dot(z.astype(dt), p["W_dec"].astype(dt),  # noqa: E731
                                         preferred_element_type=jnp.float32) + p["b_pre"]
  x_hat_BxD = decode_fn(params, z_BxN)
  err_BxD = x_BxD - x_hat_BxD
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  objective = nmse
  if multi_topk:
    x_hat4_BxD = decode_fn(params, to_dense(topk(pre_BxN, min(4 * k, n_latents)), n_latents))
    objective = objective + base.normalized_mse(x_BxD, x_hat4_BxD, variance) / 8

  aux = jnp.zeros((), jnp.float32)
  if dead_N is not None and k_aux > 0:
    e_BxD = jax.lax.stop_gradient(err_BxD)
    # Only pay for the AuxK top-k and decode when some latent is dead.
    k_aux = min(k_aux, n_latents)
    aux = jax.lax.cond(jnp.any(dead_N), lambda *a: _auxk_loss(*a, k_aux),
                       lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, e_BxD, dead_N)

  fired_N, l0 = base.stats(z_BxN, fired_threshold)
  return base.Output(objective + aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N,
                    l0, {})


def sparse_auxk(params: Params, pre_BxN: jax.Array, x_BxD: jax.Array, e_BxD: jax.Array,
                dead_N: jax.Array, k_aux: int, impl: str, bias_N: jax.Array | None = None
                ) -> jax.Array:
  """`_auxk_loss` with the sparse ops: the top-k_aux dead pre-activations (others masked to
  -inf, so ReLU zeroes them) decoded by gathering k_aux decoder rows per token. pre_BxN
  (+ bias_N, when given: b_enc not yet added) is a constant here; gradients reach the
  encoder through `sparse.select`."""
  B = x_BxD.shape[0]
  bias_N = jnp.zeros_like(dead_N, jnp.float32) if bias_N is None else bias_N
  vals_BxK, idx_BxK = sparse.top_k(pre_BxN, k_aux, impl, jnp.where(dead_N, bias_N, -jnp.inf))
  row_E, idx_E = sparse.rows_of(B, k_aux), idx_BxK.reshape(-1)
  pre_E = sparse.select(params["W_enc"], params["b_enc"], params["b_pre"], x_BxD, row_E, idx_E,
                        vals_BxK.reshape(-1), impl)
  e_hat_BxD = sparse.decode(params["W_dec"], row_E, idx_E, pre_E, B, impl)
  return base.auxk_normalized_mse(e_BxD, e_hat_BxD)


def sparse_loss(params: Params, x_BxD: jax.Array, *, k: int, variance: jax.Array | float = 1.0,
                dead_N: jax.Array | None = None, k_aux: int = 0, aux_coef: float = 1 / 32,
                multi_topk: bool = False, impl: str = "xla", compute_dtype: str = "float32",
                fired_threshold: float = 0.0) -> base.Output:
  """`dense_loss` computed sparsely (as Gao et al. 2024's kernels do): the same value and gradients, but
  after the encoder matmul only the k selected latents per token are touched -- the
  decoder gathers k rows, the decoder gradient is a scatter-add of k rows per token, the
  encoder gradient covers only the selected (token, latent) pairs (`sae_jax.saes.sparse`).

  Extra args: impl, "xla" or "cpu_kernels" (`sparse.impl_for`); compute_dtype, the encoder
  matmul's input dtype ("float32" or "bfloat16", float32 accumulation). Raises ValueError
  if k exceeds n_latents.
  """
  B, n_latents = x_BxD.shape[0], params["W_enc"].shape[1]
  if k > n_latents:
    raise ValueError(f"k={k} exceeds n_latents={n_latents}")
  # W_enc (x - b_pre), without b_enc: the top-k adds it as it reads (never written).
  pre_BxN = jax.lax.stop_gradient(sparse.encoder_matmul(params, x_BxD, compute_dtype, bias=False))
  b_enc = jax.lax.stop_gradient(params["b_enc"])
  k_all = min(4 * k, n_latents) if multi_topk else k
  vals_BxK, idx_BxK = sparse.top_k(pre_BxN, k_all, impl, b_enc)
  pre_E = sparse.select(params["W_enc"], params["b_enc"], params["b_pre"], x_BxD,
                        sparse.rows_of(B, k_all), idx_BxK.reshape(-1), vals_BxK.reshape(-1), impl)
  pre_BxK = pre_E.reshape(B, k_all)

  def reconstruct(kk):
    return sparse.decode(params["W_dec"], sparse.rows_of(B, kk), idx_BxK[:, :kk].reshape(-1),
                         pre_BxK[:, :kk].reshape(-1), B, impl) + params["b_pre"]

  x_hat_BxD = reconstruct(k)
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  objective = nmse
  if multi_topk:
    objective = objective + base.normalized_mse(x_BxD, reconstruct(k_all), variance) / 8

  aux = jnp.zeros((), jnp.float32)
  if dead_N is not None and k_aux > 0:
    e_BxD = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
    k_aux = min(k_aux, n_latents)
    aux = jax.lax.cond(jnp.any(dead_N),
                       lambda *a: sparse_auxk(*a, k_aux, impl, b_enc),
                       lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, x_BxD, e_BxD, dead_N)

  active_BxK = vals_BxK[:, :k] > 0
  fired_N = jnp.zeros((n_latents,), jnp.int32).at[idx_BxK[:, :k]].max(
      (vals_BxK[:, :k] > fired_threshold).astype(jnp.int32)) > 0
  l0 = jnp.mean(jnp.sum(active_BxK, axis=-1).astype(jnp.float32))
  return base.Output(objective + aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N,
                    l0, {})


def encode(params: Params, x_BxD: jax.Array, extras, hp: Hyper) -> jax.Array:
  """`Architecture.encode`: `encode_topk` with hp.k; no extras."""
  del extras
  return encode_topk(params, x_BxD, hp.k)


def loss(params: Params, x_BxD: jax.Array, extras, hp: Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """`Architecture.loss`: `sparse_loss` when hp.sparse_impl is set (the trainer's default
  for TopK), else `dense_loss`; same value and gradients."""
  del extras
  kw = dict(k=hp.k, variance=variance, dead_N=dead_N, k_aux=hp.k_aux, aux_coef=hp.aux_coef,
            multi_topk=hp.multi_topk, compute_dtype=hp.compute_dtype,
            fired_threshold=hp.fired_threshold)
  if hp.sparse_impl is None:
    return dense_loss(params, x_BxD, **kw)
  return sparse_loss(params, x_BxD, impl=hp.sparse_impl, **kw)


# Recipes (`sae.recipe`), in this codebase's config keys; k is the sweep's knob and the lr
# follows `sae_jax.config.default_lr` (lr ~ 1/sqrt(n_latents), Gao et al. 2024 Fig. 9).
RECIPES = {
    # Gao et al. 2024 and OpenAI's code (openai/sparse_autoencoder)
    "gao2024": {
        "sae.input_norm": "unit_norm",  # Sec. 2.1: mean over d_in removed, unit norm per token
        "train.adam_b1": 0.9,
        "train.adam_b2": 0.999,
        "train.adam_eps": 6.25e-10,  # Sec. 2.3
        "train.lr_schedule": "constant",  # Sec. 2.3 describes no schedule
        "train.aux_coef": 1 / 32,  # Sec. A.2: alpha = 1/32 (k_aux: config.default_k_aux)
        "train.dead_tokens": 10_000_000,  # Sec. A.2: dead after 10M tokens without firing
        "train.fired_threshold": 1e-3,  # model.py: a latent fires where topk.values > 1e-3
        "sae.encoder_init_scale": 3 ** -0.5,  # the code's nn.Linear encoder (`TiedInit`)
    },
}

ARCH = base.Architecture(
    name="topk", hyper=Hyper, knob="k", unit_norm_decoder=True, init=init,
    init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Gao et al. 2024, Scaling and evaluating sparse autoencoders", sparse_step=True,
    encode_formula="z = ReLU(TopK_k(W_enc^T (x - b_pre) + b_enc)): the k largest "
                   "pre-activations of each token kept, ties to the lower index (Gao et al. "
                   "2024, Eq. 2)",
    saelens=("topk", True), zoo_grid={"unit_norm": (8, 16, 32, 64), "mean_norm": (8, 16, 32, 64)},
    validate=validate, recipes=RECIPES)
