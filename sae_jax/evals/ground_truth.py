"""Metrics of a trained SAE against known true features (see `sae_jax.data.synthetic`).

Every function takes plain arrays, so it works for any SAE architecture: the SAE supplies
its decoder W_dec_NxD (row i = latent i's direction) and its latents z_BxN from its own
encode; the generator supplies the true directions true_FxD and activations acts_BxF.

* `mean_max_cosine_similarity` -- MMCS (Sharkey et al. 2022, "Taking features out of
  superposition with sparse autoencoders").
* `mcc` -- mean correlation coefficient after a one-to-one (Hungarian) matching, the
  identifiability metric of nonlinear ICA (Hyvarinen & Morioka 2016; Khemakhem et al.
  2020, "Variational autoencoders and nonlinear ICA").
* `feature_recovery_f1`, `uniqueness` -- decoder-direction matching at a cosine threshold
  and the duplicate-free fraction of alive latents.
* `explained_variance` -- 1 - FVU (Gao et al. 2024, Sec. 2.1: normalized MSE = FVU).

N (n_latents) and F (n_features) up to ~16k are handled in chunks of rows. The cosine
metrics need O(chunk * max(N, F)) memory; `mcc` builds the dense N x F correlation
matrix (float32, plus scipy's float64 copy for the exact Hungarian matching of
`scipy.optimize.linear_sum_assignment`): about 3 GB and ~30 s at N = F = 16k on 2 CPU
cores, ~1 s at 4k.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment

from sae_jax.data import batches
from sae_jax.errors import ConfigError
from sae_jax.training.step import StepConfig

_CHUNK = 2048  # rows per block of the N x F cosine / correlation matrices
_SPARSE_DENSITY = 0.1  # correlation_matrix uses sparse products at or below this density


def _unit_rows(W: np.ndarray, name: str) -> np.ndarray:
  W = np.asarray(W, np.float32)
  if W.ndim != 2:
    raise ConfigError(f"{name} must be 2-D [rows, d_in], got shape {W.shape}")
  return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)


def max_cosine_similarities(W_dec_NxD: np.ndarray, true_FxD: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Best signed cosine similarities between decoder rows and true directions.

  Args:
    W_dec_NxD: [n_latents, d_in] decoder rows (any norm; zero rows have cosine 0).
    true_FxD: [n_features, d_in] true feature directions.

  Returns:
    (max_over_latents_F, max_over_true_N, argmax_true_N): float32 [F], the best cosine of
    each true feature over all decoder rows; float32 [N], the best cosine of each decoder
    row over all true features; int64 [N], that true feature's index.

  Raises:
    ConfigError: the arrays are not 2-D or their d_in differ.
  """
  W_NxD, T_FxD = _unit_rows(W_dec_NxD, "W_dec_NxD"), _unit_rows(true_FxD, "true_FxD")
  if W_NxD.shape[1] != T_FxD.shape[1]:
    raise ConfigError(f"W_dec_NxD has d_in={W_NxD.shape[1]} but true_FxD has "
                      f"d_in={T_FxD.shape[1]}; pass decoder and features of the same space")
  N, F = len(W_NxD), len(T_FxD)
  best_F = np.full(F, -np.inf, np.float32)
  best_N = np.empty(N, np.float32)
  arg_N = np.empty(N, np.int64)
  for s in range(0, N, _CHUNK):
    cos_nxF = W_NxD[s:s + _CHUNK] @ T_FxD.T
    np.maximum(best_F, cos_nxF.max(0, initial=-np.inf), out=best_F)
    arg_N[s:s + _CHUNK] = cos_nxF.argmax(1)
    best_N[s:s + _CHUNK] = cos_nxF[np.arange(len(cos_nxF)), arg_N[s:s + _CHUNK]]
  return best_F, best_N, arg_N


def mean_max_cosine_similarity(W_dec_NxD: np.ndarray, true_FxD: np.ndarray,
                               over: str = "true") -> float:
  """MMCS (Sharkey et al. 2022, Sec. 3): for each TRUE feature the largest signed cosine
  similarity with any decoder row, averaged over the true features (over="true", the
  paper's convention: how well the ground truth is covered). over="latents" averages,
  for each decoder row, its best cosine with any true feature instead (how many latents
  are true features). In [-1, 1]; 1 iff every true feature has an exact decoder row.

  Shapes: W_dec_NxD [n_latents, d_in], true_FxD [n_features, d_in].
  Raises ConfigError: bad shapes or `over` not "true" / "latents".
  """
  if over not in ("true", "latents"):
    raise ConfigError(f"over={over!r} must be 'true' or 'latents'")
  best_F, best_N, _ = max_cosine_similarities(W_dec_NxD, true_FxD)
  return float(np.mean(best_F if over == "true" else best_N))


def correlation_matrix(z_BxN: np.ndarray, acts_BxF: np.ndarray) -> np.ndarray:
  """Pearson correlation of every latent with every true feature over the B tokens.

  Sparse inputs (at most `_SPARSE_DENSITY` non-zeros, as SAE latents and true activations
  are) go through a scipy.sparse product, O(B k L0); dense ones through chunked centred
  float32 matmuls, O(B N F).

  Returns float32 [N, F]; a constant column (a latent that never fires, a feature that
  never fires on these tokens) has correlation 0, never NaN.
  Raises ConfigError: the arrays are not 2-D with the same number of tokens B >= 2.
  """
  z_BxN, a_BxF = np.asarray(z_BxN), np.asarray(acts_BxF)
  if z_BxN.ndim != 2 or a_BxF.ndim != 2 or len(z_BxN) != len(a_BxF) or len(z_BxN) < 2:
    raise ConfigError(f"z_BxN {z_BxN.shape} and acts_BxF {a_BxF.shape} must be 2-D with the "
                      f"same number (>= 2) of tokens")
  B, N, F = len(z_BxN), z_BxN.shape[1], a_BxF.shape[1]
  mean_N = z_BxN.mean(0, dtype=np.float64)
  mean_F = a_BxF.mean(0, dtype=np.float64)
  sparse = max(np.count_nonzero(z_BxN) / z_BxN.size if z_BxN.size else 0,
               np.count_nonzero(a_BxF) / a_BxF.size if a_BxF.size else 0) <= _SPARSE_DENSITY
  if sparse:
    z_sp = scipy.sparse.csc_array(z_BxN, dtype=np.float64)
    a_sp = scipy.sparse.csc_array(a_BxF, dtype=np.float64)
    raw_sq_N = np.asarray(z_sp.multiply(z_sp).sum(0)).ravel()
    raw_sq_F = np.asarray(a_sp.multiply(a_sp).sum(0)).ravel()
    sq_N = np.maximum(raw_sq_N - B * mean_N**2, 0)
    sq_F = np.maximum(raw_sq_F - B * mean_F**2, 0)
    cross_NxF = scipy.sparse.csr_array(z_sp.T @ a_sp)  # sum_b z_bn a_bf, exact in float64
    cov_NxF = np.empty((N, F), np.float32)  # 4 N F bytes
    for s in range(0, N, _CHUNK):
      block = cross_NxF[s:s + _CHUNK].toarray() - B * np.outer(mean_N[s:s + _CHUNK], mean_F)
      cov_NxF[s:s + _CHUNK] = block
  else:
    raw_sq_N = raw_sq_F = None
    cov_NxF = np.zeros((N, F), np.float32)  # 4 N F bytes
    sq_N, sq_F = np.zeros(N), np.zeros(F)
    for s in range(0, B, _CHUNK):
      zc = (z_BxN[s:s + _CHUNK] - mean_N).astype(np.float32)
      ac = (a_BxF[s:s + _CHUNK] - mean_F).astype(np.float32)
      cov_NxF += zc.T @ ac
      sq_N += np.einsum("bn,bn->n", zc, zc, dtype=np.float64)
      sq_F += np.einsum("bf,bf->f", ac, ac, dtype=np.float64)
  cov_NxF *= _inverse_std(sq_N, raw_sq_N)[:, None]
  cov_NxF *= _inverse_std(sq_F, raw_sq_F)[None, :]
  return np.clip(cov_NxF, -1, 1, out=cov_NxF)


def _inverse_std(sq: np.ndarray, raw_sq: np.ndarray | None) -> np.ndarray:
  """1 / sqrt(sum of squared deviations), 0 for (numerically) constant columns."""
  ref = np.maximum(raw_sq if raw_sq is not None else sq, 1e-300)
  constant = sq <= 1e-10 * ref
  return np.where(constant, 0, 1 / np.sqrt(np.where(constant, 1, sq))).astype(np.float32)


def matched_correlations(z_BxN: np.ndarray, acts_BxF: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
  """One-to-one matching of true features to latents maximising the summed Pearson
  correlation (Hungarian algorithm, `scipy.optimize.linear_sum_assignment`).

  Returns (corr_F float32 [F], latent_F int64 [F]): the matched latent of each true
  feature and their correlation. When N < F, the F - N unmatched features get latent -1
  and correlation 0.
  """
  corr_NxF = correlation_matrix(z_BxN, acts_BxF)
  rows, cols = linear_sum_assignment(corr_NxF, maximize=True)
  F = corr_NxF.shape[1]
  corr_F, latent_F = np.zeros(F, np.float32), np.full(F, -1, np.int64)
  corr_F[cols], latent_F[cols] = corr_NxF[rows, cols], rows
  return corr_F, latent_F


def mcc(z_BxN: np.ndarray, acts_BxF: np.ndarray) -> float:
  """Mean correlation coefficient: the mean over TRUE features of the Pearson correlation
  between a feature's activations and its latent's, after the one-to-one Hungarian
  matching that maximises their sum (`matched_correlations`). Signed (an anti-correlated
  latent counts against), in [-1, 1]; 1 iff every true feature has a latent that is an
  exact positive affine function of it on these tokens. Invariant to permuting latents.

  Shapes: z_BxN [tokens, n_latents] (the SAE's latents), acts_BxF [tokens, n_features].
  Raises ConfigError: mismatched shapes.
  """
  corr_F, _ = matched_correlations(z_BxN, acts_BxF)
  return float(np.mean(corr_F))


def feature_recovery_f1(W_dec_NxD: np.ndarray, true_FxD: np.ndarray, threshold: float = 0.9,
                        alive_N: np.ndarray | None = None) -> dict:
  """Feature recovery by decoder directions at a cosine threshold.

  precision = fraction of (alive) latents whose decoder row has cosine >= threshold with
  some true feature; recall = fraction of true features with cosine >= threshold to some
  (alive) decoder row; f1 = 2 precision recall / (precision + recall) (0 if both are 0).
  Not one-to-one: duplicate latents of a feature all count as precise (see `uniqueness`).

  Args:
    W_dec_NxD: [n_latents, d_in]; true_FxD: [n_features, d_in].
    threshold: cosine similarity for a match, in (-1, 1].
    alive_N: optional bool [n_latents]; dead latents are left out of both sides.

  Returns: {"precision", "recall", "f1"} as floats.
  Raises ConfigError: bad shapes or threshold.
  """
  if not -1 < threshold <= 1:
    raise ConfigError(f"threshold={threshold} must be in (-1, 1]")
  W = np.asarray(W_dec_NxD)
  if alive_N is not None:
    W = W[np.asarray(alive_N, bool)]
  if len(W) == 0:
    return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
  best_F, best_N, _ = max_cosine_similarities(W, true_FxD)
  precision, recall = float(np.mean(best_N >= threshold)), float(np.mean(best_F >= threshold))
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"precision": precision, "recall": recall, "f1": float(f1)}


def uniqueness(W_dec_NxD: np.ndarray, true_FxD: np.ndarray,
               alive_N: np.ndarray | None = None) -> float:
  """Uniqueness: the number of distinct true features that are the best-cosine match of
  some alive latent, divided by the number of alive latents. 1 when no two latents share
  a best match; k duplicates of every latent give 1/k. Measures duplication only (pair
  it with MMCS / recall for coverage). 0 when no latent is alive.

  Shapes: W_dec_NxD [n_latents, d_in], true_FxD [n_features, d_in], alive_N optional bool
  [n_latents] (default: all alive).
  """
  W = np.asarray(W_dec_NxD)
  if alive_N is not None:
    W = W[np.asarray(alive_N, bool)]
  if len(W) == 0:
    return 0.0
  _, _, arg_N = max_cosine_similarities(W, true_FxD)
  return float(len(np.unique(arg_N)) / len(W))


def explained_variance(x_BxD: np.ndarray, x_hat_BxD: np.ndarray) -> float:
  """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the B tokens (1 - FVU, Gao et
  al. 2024 Sec. 2.1). Raises ConfigError: shapes differ."""
  x, x_hat = np.asarray(x_BxD, np.float64), np.asarray(x_hat_BxD, np.float64)
  if x.shape != x_hat.shape:
    raise ConfigError(f"x_BxD {x.shape} and x_hat_BxD {x_hat.shape} must have the same shape")
  total = np.sum((x - x.mean(0)) ** 2)
  return float(1 - np.sum((x - x_hat) ** 2) / max(total, 1e-30))


def evaluate_against_truth(W_dec_NxD: np.ndarray, z_BxN: np.ndarray, x_BxD: np.ndarray,
                           x_hat_BxD: np.ndarray, true_FxD: np.ndarray, acts_BxF: np.ndarray,
                           threshold: float = 0.9) -> dict:
  """Every ground-truth metric of one SAE, as JSON-serialisable floats.

  Args:
    W_dec_NxD: decoder [n_latents, d_in]; z_BxN: the SAE's latents on B tokens;
    x_BxD, x_hat_BxD: those tokens (in the SAE's input space) and their reconstructions;
    true_FxD, acts_BxF: true directions and the true activations of the same tokens.
    threshold: cosine threshold of `feature_recovery_f1`.

  Returns:
    {"mmcs" (over true features), "mmcs_latents" (over alive latents), "mcc",
     "precision", "recall", "f1", "uniqueness", "explained_variance",
     "alive_fraction" (latents firing on some of the B tokens)}.
  """
  alive_N = np.asarray(np.any(np.asarray(z_BxN) != 0, axis=0))
  best_F, best_N, _ = max_cosine_similarities(W_dec_NxD, true_FxD)
  return {
      "mmcs": float(np.mean(best_F)),
      "mmcs_latents": float(np.mean(best_N[alive_N])) if alive_N.any() else 0.0,
      "mcc": mcc(z_BxN, acts_BxF),
      **feature_recovery_f1(W_dec_NxD, true_FxD, threshold, alive_N),
      "uniqueness": uniqueness(W_dec_NxD, true_FxD, alive_N),
      "explained_variance": explained_variance(x_BxD, x_hat_BxD),
      "alive_fraction": float(np.mean(alive_N)),
  }


def source_evaluator(cfg, state, source, max_tokens: int = 8192) -> dict:
  """A trainer `Evaluator` (`sae_jax.training.trainer`): `evaluate_against_truth` on the
  first max_tokens held-out rows of a source that knows its true features (the synthetic
  generator's), keys prefixed "truth_"; {} for any other source. Decoder rows are compared
  with the true directions in the SAE's input space, which is the generator's up to a
  constant for input_norm "none" and "mean_norm"."""
  if not hasattr(source, "true_directions_FxD"):
    return {}
  sc = StepConfig.from_config(cfg)
  rows = np.arange(min(max_tokens, source.n_tokens("eval")))
  x = batches.normalize(jnp.asarray(source.read("eval", rows)), sc.input_norm, state.norm_scale)
  params = jax.device_get(state.params)
  z = sc.arch.encode(params, x, jax.device_get(state.extras), sc.hp)
  x_hat = sc.arch.decode(params, z)
  metrics = evaluate_against_truth(
      np.asarray(params["W_dec"]), np.asarray(z), np.asarray(x), np.asarray(x_hat),
      source.true_directions_FxD, source.true_acts("eval", rows))
  return {f"truth_{k}": v for k, v in metrics.items()}
