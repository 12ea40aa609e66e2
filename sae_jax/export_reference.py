"""Load an exported SAE and run it in plain numpy: no JAX, no sae_jax.

This file imports only numpy, json, os and safetensors, so it can be copied next to an
export and used on its own (`sae_jax.export` writes the export):

    params, cfg = load("runs/quickstart/<run_id>/export")
    x = normalize_numpy(cfg, acts_BxD)           # the SAE's input space
    z = encode_numpy(params, cfg, x)             # [B, n_latents] latents
    x_hat = decode_numpy(params, cfg, z)         # [B, d_in], in the normalised space

An export is a directory with

    sae.safetensors   float32 arrays: W_enc [d_in, n_latents], W_dec [n_latents, d_in],
                      b_pre [d_in], and the architecture's others (b_enc [n_latents];
                      log_threshold [n_latents] for JumpReLU; b_gate, r_mag, b_mag for
                      Gated; threshold [] for BatchTopK)
    config.json       architecture, d_in, n_latents, k / sparsity_coefficient, input_norm,
                      norm_scale, the formulas in words, model / layer / site, tokens

Every encoder below is the inference path of the sae_jax architecture of the same name;
tests/export_test.py checks each against the JAX one.
"""

from __future__ import annotations

import json
import os

import numpy as np

# architecture -> the encode formula, as written into config.json.
ENCODE_FORMULAS = {
    "topk": "z = ReLU(TopK_k(W_enc^T (x - b_pre) + b_enc)): the k largest pre-activations "
            "of each token kept, ties to the lower index (Gao et al. 2024, Eq. 2)",
    "batchtopk": "z = ReLU(pre) * 1[pre > threshold], pre = W_enc^T (x - b_pre) + b_enc; a "
                 "negative threshold (never set) keeps every positive pre-activation "
                 "(Bussmann et al. 2024, Sec. 3)",
    "matryoshka_batchtopk": "as batchtopk: z = ReLU(pre) * 1[pre > threshold], pre = "
                            "W_enc^T (x - b_pre) + b_enc (Bussmann et al. 2025)",
    "relu_l1": "z = ReLU(W_enc^T x + b_enc) (Conerly et al. 2024)",
    "relu_l1_unit_norm": "z = ReLU(W_enc^T (x - b_pre) + b_enc) (Bricken et al. 2023)",
    "kl": "z = ReLU(W_enc^T x + b_enc)",
    "jumprelu": "z = pre * 1[pre > exp(log_threshold)], pre = W_enc^T x + b_enc "
                "(Rajamanoharan et al. 2024b, Eq. 1)",
    "gated": "z = 1[pi_gate > 0] * ReLU(pi_mag), pi_gate = W_enc^T (x - b_pre) + b_gate, "
             "pi_mag = exp(r_mag) * (W_enc^T (x - b_pre)) + b_mag "
             "(Rajamanoharan et al. 2024a, Sec. 3.2)",
}
DECODE_FORMULA = "x_hat = W_dec^T z + b_pre (x_hat in the normalised input space)"
NORM_FORMULAS = {
    "unit_norm": "per token: x <- x - mean(x over d_in); x <- x / max(||x||_2, 1e-6) "
                 "(Gao et al. 2024, Sec. 2.1)",
    "mean_norm": "x <- x * norm_scale, norm_scale = sqrt(d_in) / E||x||_2 over the "
                 "training split (Templeton et al. 2024)",
    "none": "x unchanged",
}


def load(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """(params: name -> float32 numpy array, config dict) of an export.

  Args:
    path: the export directory, or its sae.safetensors file.

  Raises:
    FileNotFoundError: no sae.safetensors / config.json there.
  """
  from safetensors.numpy import load_file
  d = path if os.path.isdir(path) else os.path.dirname(path)
  with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
    cfg = json.load(f)
  return load_file(os.path.join(d, "sae.safetensors")), cfg


def normalize_numpy(cfg: dict, x_BxD: np.ndarray) -> np.ndarray:
  """Raw activations [B, d_in] -> the SAE's input space (cfg["input_norm"]; formulas in
  NORM_FORMULAS). Raises ValueError for an unknown input_norm."""
  x = np.asarray(x_BxD, np.float32)
  method = cfg["input_norm"]
  if method == "unit_norm":
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  if method == "mean_norm":
    return x * np.float32(cfg["norm_scale"])
  if method == "none":
    return x
  raise ValueError(f"unknown input_norm {method!r}")


def _topk(pre_BxN: np.ndarray, k: int) -> np.ndarray:
  idx_BxK = np.argsort(-pre_BxN, axis=-1, kind="stable")[:, :k]  # ties: lower index first
  z_BxN = np.zeros_like(pre_BxN)
  rows = np.arange(pre_BxN.shape[0])[:, None]
  z_BxN[rows, idx_BxK] = np.maximum(pre_BxN[rows, idx_BxK], 0)
  return z_BxN


def encode_numpy(params: dict, cfg: dict, x_BxD: np.ndarray) -> np.ndarray:
  """Latents z [B, n_latents] of normalised inputs x [B, d_in] (see `normalize_numpy`);
  float32. The formula per architecture is ENCODE_FORMULAS[cfg["architecture"]].

  Raises ValueError for an architecture this file does not know.
  """
  p = {k: np.asarray(v, np.float32) for k, v in params.items()}
  x = np.asarray(x_BxD, np.float32)
  arch = cfg["architecture"]
  if arch in ("topk", "batchtopk", "matryoshka_batchtopk", "relu_l1_unit_norm"):
    pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
  elif arch in ("relu_l1", "kl", "jumprelu"):
    pre = x @ p["W_enc"] + p["b_enc"]
  elif arch == "gated":
    proj = (x - p["b_pre"]) @ p["W_enc"]
    gate, mag = proj + p["b_gate"], np.exp(p["r_mag"]) * proj + p["b_mag"]
    return np.where(gate > 0, np.maximum(mag, 0), 0).astype(np.float32)
  else:
    raise ValueError(f"no numpy encoder for architecture {arch!r}; known: "
                     f"{', '.join(sorted(ENCODE_FORMULAS))}")
  if arch == "topk":
    return _topk(pre, int(cfg["k"]))
  if arch in ("batchtopk", "matryoshka_batchtopk"):
    return np.where(pre > p["threshold"], np.maximum(pre, 0), 0).astype(np.float32)
  if arch == "jumprelu":
    return np.where(pre > np.exp(p["log_threshold"]), pre, 0).astype(np.float32)
  return np.maximum(pre, 0)


def decode_numpy(params: dict, cfg: dict, z_BxN: np.ndarray) -> np.ndarray:
  """x_hat = W_dec^T z + b_pre, [B, d_in], in the normalised input space (every
  architecture shares this decoder)."""
  del cfg
  return (np.asarray(z_BxN, np.float32) @ np.asarray(params["W_dec"], np.float32)
          + np.asarray(params["b_pre"], np.float32))
