"""Load an exported SAE and run it in plain numpy: no JAX, no sae_jax.

This file imports only numpy, json, os and safetensors, so it can be copied next to an
export and used on its own (`sae_jax.tools.export` writes the export):

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

# The architectures this file has a numpy encoder for (the formulas are in each export's
# config.json, "encode", written from the architecture's module in sae_jax.saes).
KNOWN = ("topk", "batchtopk", "matryoshka_batchtopk", "relu_l1", "relu_l1_unit_norm", "kl",
         "jumprelu", "gated")
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
  from safetensors.numpy import load_file  # here, so copying this file needs numpy alone to import
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
  float32. The formula is the export's cfg["encode"].

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
                     f"{', '.join(sorted(KNOWN))}")
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
