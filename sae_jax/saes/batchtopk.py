"""BatchTopK sparse autoencoder, pure-functional (Bussmann et al. 2024, "BatchTopK sparse
autoencoders", Sec. 3).

Training keeps the k·B largest ReLU pre-activations of the whole batch of B tokens
(flattened over tokens and latents), so the number of active latents varies per token
and only its batch mean is k:

    pre   = W_enc (x - b_pre) + b_enc
    z     = BatchTopK_{k·B}(ReLU(pre))                 (Bussmann et al. 2024, Sec. 3)
    x_hat = W_dec z + b_pre

Inference does not depend on the batch: one global threshold theta replaces the batch
top-k, z = ReLU(pre) · 1[pre > theta] (Bussmann et al. 2024, Sec. 3, "inference"). theta
is an exponential moving average (momentum `Hyper.threshold_momentum`) of the smallest
positive activation kept in each training batch; it lives in the train state's `extras`
({"threshold": float32 scalar}, negative until the first training batch sets it, and while
negative `encode` keeps every positive pre-activation).

Everything else is the TopK recipe (Gao et al. 2024; `sae_jax.saes.topk`): tied init with unit-
norm decoder rows, b_pre at the geometric median, decoder rows kept at unit norm, inputs
normalised per token ("unit_norm"), the normalized MSE as the reconstruction term and
AuxK on dead latents (`topk._auxk_loss`, weight `Hyper.aux_coef`). The sparsity knob is k.

Shapes: x_BxD [batch, d_in]; W_enc_DxN, b_enc_N, W_dec_NxD, b_pre_D as in `sae_jax.saes.topk`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sae_jax.saes import base, sparse, topk

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(topk.TiedInit):
  """BatchTopK's hyperparameters (`sae.k`, `sae.threshold_momentum`; the init's
  `sae.encoder_init_scale` is TopK's, `topk.TiedInit`)."""
  k: int = 32  # mean active latents per token over the batch, the knob (Bussmann et al. 2024)
  threshold_momentum: float = 0.99  # EMA momentum of the inference threshold (our choice)

init = topk.init
pre_activations = topk.pre_activations
decode = base.decode


def kth_largest(v_M: jax.Array, m: int) -> jax.Array:
  """The m-th largest entry of a non-negative float32 array (any shape), exactly, by a
  radix select in plain XLA (`sae_jax.saes.sparse.kth_largest`). Returns 0 when fewer
  than m entries are positive. Raises ValueError unless 1 <= m <= v_M.size."""
  return sparse.kth_largest(v_M, m, "xla")


def batch_topk(pre_BxN: jax.Array, k: int) -> jax.Array:
  """Dense latents z [B, n_latents]: the k·B largest ReLU(pre) over the whole batch, the
  rest zero (Bussmann et al. 2024, Sec. 3). Exactly k·B non-zeros unless fewer are positive
  (or values tie at the cut). Gradients flow to the kept pre-activations.

  Raises ValueError if k exceeds n_latents.
  """
  B, n_latents = pre_BxN.shape
  if k > n_latents:
    raise ValueError(f"k={k} exceeds n_latents={n_latents}")
  acts_BxN = jax.nn.relu(pre_BxN)
  cut = kth_largest(jax.lax.stop_gradient(acts_BxN), k * B)
  keep_BxN = (acts_BxN >= cut) & (acts_BxN > 0)
  return jnp.where(keep_BxN, acts_BxN, 0.0)


def min_positive(z_BxN: jax.Array) -> jax.Array:
  """The smallest positive entry of z (0 if there is none): the batch's threshold."""
  smallest = jnp.min(jnp.where(z_BxN > 0, z_BxN, jnp.inf))
  return jnp.where(jnp.isfinite(smallest), smallest, 0.0)


def init_extras(n_latents: int, hp: base.Hyper) -> dict:
  """{"threshold": -1}: unset until the first training batch."""
  del n_latents, hp
  return {"threshold": jnp.asarray(-1.0, jnp.float32)}


def update_threshold(threshold: jax.Array, z_BxN: jax.Array, momentum: float) -> jax.Array:
  """theta <- momentum · theta + (1 - momentum) · min positive kept activation of the batch
  (Bussmann et al. 2024, Sec. 3); the first batch (theta < 0) sets theta directly."""
  batch_theta = jax.lax.stop_gradient(min_positive(z_BxN))
  ema = momentum * threshold + (1.0 - momentum) * batch_theta
  return jnp.where(threshold < 0, batch_theta, ema).astype(jnp.float32)


def encode_with_threshold(params: Params, x_BxD: jax.Array, threshold: jax.Array) -> jax.Array:
  """Inference latents z = ReLU(pre) · 1[pre > theta], shape [B, n_latents]; each token's
  code depends on that token only (Bussmann et al. 2024, Sec. 3)."""
  pre_BxN = pre_activations(params, x_BxD)
  return jnp.where(pre_BxN > threshold, jax.nn.relu(pre_BxN), 0.0)


def encode(params: Params, x_BxD: jax.Array, extras: dict, hp: base.Hyper) -> jax.Array:
  """`Architecture.encode`: the inference path with the learned threshold."""
  del hp
  return encode_with_threshold(params, x_BxD, extras["threshold"])


def auxk(params: Params, pre_BxN: jax.Array, x_BxD: jax.Array, x_hat_BxD: jax.Array,
         dead_N: jax.Array | None, k_aux: int) -> jax.Array:
  """The AuxK loss of Gao et al. 2024 (Sec. A.2) on the residual x - x_hat, computed only
  when some latent is dead (shared by the TopK family; see `topk._auxk_loss`)."""
  if dead_N is None or k_aux <= 0:
    return jnp.zeros((), jnp.float32)
  e_BxD = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
  k_aux = min(k_aux, pre_BxN.shape[1])
  return jax.lax.cond(jnp.any(dead_N), lambda *a: topk._auxk_loss(*a, k_aux),  # pylint: disable=protected-access
                      lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, e_BxD, dead_N)


def sparse_loss(params: Params, x_BxD: jax.Array, extras: dict, hp: base.Hyper, *,
                variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None
                ) -> base.Output:
  """`loss` computed sparsely, as `topk.sparse_loss` (same value and gradients): the k·B
  kept (token, latent) pairs become one code of k·B entries (`sparse.batch_topk`), and
  after the encoder matmul only those are touched. Uses hp.sparse_impl and
  hp.compute_dtype. Raises ValueError if k exceeds n_latents."""
  B, n_latents = x_BxD.shape[0], params["W_enc"].shape[1]
  if hp.k > n_latents:
    raise ValueError(f"k={hp.k} exceeds n_latents={n_latents}")
  impl = hp.sparse_impl
  # W_enc (x - b_pre), without b_enc: the selection adds it as it reads (never written).
  pre_BxN = jax.lax.stop_gradient(sparse.encoder_matmul(params, x_BxD, hp.compute_dtype,
                                                        bias=False))
  b_enc = jax.lax.stop_gradient(params["b_enc"])
  row_E, idx_E, vals_E = sparse.batch_topk(pre_BxN, hp.k * B, impl, b_enc)
  pre_E = sparse.select(params["W_enc"], params["b_enc"], params["b_pre"], x_BxD, row_E, idx_E,
                        vals_E, impl)
  x_hat_BxD = sparse.decode(params["W_dec"], row_E, idx_E, pre_E, B, impl) + params["b_pre"]
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  aux = jnp.zeros((), jnp.float32)
  if dead_N is not None and hp.k_aux > 0:
    e_BxD = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
    k_aux = min(hp.k_aux, n_latents)
    aux = jax.lax.cond(jnp.any(dead_N), lambda *a: topk.sparse_auxk(*a, k_aux, impl, b_enc),
                       lambda *_: jnp.zeros((), jnp.float32), params, pre_BxN, x_BxD, e_BxD, dead_N)
  active_E = vals_E > 0
  fired_E = vals_E > hp.fired_threshold
  fired_N = jnp.zeros((n_latents,), jnp.int32).at[idx_E].max(fired_E.astype(jnp.int32)) > 0
  l0 = jnp.sum(active_E).astype(jnp.float32) / B
  threshold = update_threshold(extras["threshold"], vals_E, hp.threshold_momentum)
  return base.Output(nmse + hp.aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N, l0,
                    {"threshold": threshold})


def loss(params: Params, x_BxD: jax.Array, extras: dict, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """BatchTopK training loss (Bussmann et al. 2024, Sec. 3): normalized MSE of the batch
  top-(k·B) reconstruction + aux_coef · AuxK, and the updated inference threshold.

  Args:
    params: BatchTopK params.
    x_BxD: a (global) batch of normalised inputs.
    extras: {"threshold": scalar}.
    hp: `Hyper` with k, k_aux, aux_coef, threshold_momentum.
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: bool [n_latents], the dead latents for AuxK.

  Returns:
    `base.Output`; `l0` is the batch mean k (fewer only if < k·B pre-activations are > 0),
    `extras` the updated threshold.

  Raises:
    ValueError: k exceeds n_latents.
  """
  if hp.sparse_impl is not None:
    return sparse_loss(params, x_BxD, extras, hp, variance=variance, dead_N=dead_N)
  pre_BxN = pre_activations(params, x_BxD)
  z_BxN = batch_topk(pre_BxN, hp.k)
  x_hat_BxD = decode(params, z_BxN)
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  aux = auxk(params, pre_BxN, x_BxD, x_hat_BxD, dead_N, hp.k_aux)
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  threshold = update_threshold(extras["threshold"], z_BxN, hp.threshold_momentum)
  return base.Output(nmse + hp.aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N, l0,
                    {"threshold": threshold})


ENCODE_FORMULA = ("z = ReLU(pre) * 1[pre > threshold], pre = W_enc^T (x - b_pre) + b_enc; a "
                  "negative threshold (never set) keeps every positive pre-activation "
                  "(Bussmann et al. 2024, Sec. 3)")

# Recipes (`sae.recipe`), in this codebase's config keys; k is the sweep's knob and the lr
# follows `sae_jax.config.default_lr` (their code: a constant 3e-4).
RECIPES = {
    # Bussmann et al. 2024 and their code (bartbussmann/BatchTopK, config.py defaults)
    "bussmann2024": {
        "sae.input_norm": "unit_norm",  # input_unit_norm = True
        "train.adam_b1": 0.9,  # beta1 = 0.9, beta2 = 0.99
        "train.adam_b2": 0.99,
        "train.lr_schedule": "constant",
        "train.aux_coef": 1 / 32,  # aux_penalty = 1/32 (top_k_aux 512: config.default_k_aux)
        # n_batches_to_dead = 5 batches of 4096 tokens
        "train.dead_tokens": 5 * 4096,
        "train.fired_threshold": 0.0,  # a latent is active where its activation is > 0
    },
}

ARCH = base.Architecture(
    name="batchtopk", hyper=Hyper, knob="k", unit_norm_decoder=True, init=init,
    init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Bussmann et al. 2024, BatchTopK sparse autoencoders", input_norm="unit_norm",
    sparse_step=True, encode_formula=ENCODE_FORMULA,
    # ReLU(pre) * 1[pre > theta] with one theta for every latent is SAELens' JumpReLU
    saelens=("jumprelu", True), zoo_grid=topk.ARCH.zoo_grid, validate=topk.validate,
    recipes=RECIPES)
