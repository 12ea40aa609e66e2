"""Portable weights: a trained SAE as safetensors plus a JSON config, loadable without the
training code (`sae_jax.tools.export_reference`, numpy + safetensors only).

    path = export("runs/quickstart/<run_id>")        # -> <run_id>/export/
    params, cfg = load(path)                          # numpy arrays, dict

    python -m sae_jax.tools.export RUN_DIR [OUT_DIR]       # the same from a shell

<out>/sae.safetensors holds the params (float32, their own names: W_enc [d_in, n_latents],
b_enc [n_latents], W_dec [n_latents, d_in], b_pre [d_in], plus the architecture's others)
and its non-gradient state that inference needs (BatchTopK's `threshold`).
<out>/config.json says how to use them (see `export_reference` for the formulas).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

import sae_jax
from sae_jax import files, saes
from sae_jax.tools import export_reference
from sae_jax.tools.export_reference import decode_numpy, encode_numpy, load, normalize_numpy  # noqa: F401
from sae_jax.training import checkpoint

FORMAT = 1


def export(run_dir: str, out_dir: str | None = None) -> str:
  """Write the latest checkpoint of `run_dir` as <out_dir>/sae.safetensors + config.json.

  Args:
    run_dir: a run directory with checkpoints/ (from `sae-jax train` or a sweep).
    out_dir: where to write; default <run_dir>/export.

  Returns:
    out_dir. config.json is written last, so its presence means the export is complete.

  Raises:
    FileNotFoundError: run_dir has no checkpoint.
    ValueError: a param and an inference extra share a name.
  """
  out_dir = out_dir or os.path.join(run_dir, "export")
  ckpt = checkpoint.Checkpointer(os.path.join(run_dir, "checkpoints"))
  try:
    state, meta = ckpt.restore_untyped()
  finally:
    ckpt.close()
  tensors = {k: np.asarray(v, np.float32) for k, v in state["params"].items()}
  for k, v in (state.get("extras") or {}).items():
    if k in tensors:
      raise ValueError(f"extra {k!r} has the name of a param; cannot export both")
    tensors[k] = np.asarray(v, np.float32)

  records = meta.get("records") or []
  last = records[-1] if records else {}
  c = last.get("config")
  if c is None:
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
      c = json.load(f)
  arch, s, d = c["sae"]["architecture"], c["sae"], c["data"]
  arch_def = saes.get(arch)
  W_enc = tensors["W_enc"]
  step = int(np.asarray(state["step"]))
  cfg = {
      "format": FORMAT,
      "architecture": arch,
      "d_in": int(W_enc.shape[0]),
      "n_latents": int(W_enc.shape[1]),
      "k": s.get("k"),
      "sparsity_coefficient": s.get("sparsity_coefficient"),
      # every hyperparameter the architecture declares (sae_jax.saes.<architecture>.Hyper)
      "hyperparameters": {f.name: s.get(f.name) for f in arch_def.fields()},
      # s, the unit of the penalty knobs, bandwidth and initial threshold above
      # (sae_jax.saes.base.Hyper.input_scale)
      "input_scale": s.get("input_scale"),
      "input_norm": s["input_norm"],
      "norm_scale": float(np.asarray(state["norm_scale"])),
      "normalization": export_reference.NORM_FORMULAS.get(s["input_norm"]),
      "encode": arch_def.encode_formula,
      "decode": export_reference.DECODE_FORMULA,
      "variance": float(np.asarray(state["variance"])),  # E||x - E x||^2, normalised inputs
      "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
      "model": last.get("model", d.get("model")),
      "layer": last.get("layer", d.get("layer")),
      "site": d.get("site"),
      "context_length": d.get("context_length"),
      "exclude_first": d.get("exclude_first"),
      "tokens_trained": step * int(c["train"]["batch_size"]),
      "token_budget": c["train"].get("token_budget"),
      "final": bool(last.get("final", False)),
      "normalized_mse": last.get("normalized_mse"),
      "l0": last.get("l0"),
      "run_id": last.get("run_id"),
      "sae_jax_version": sae_jax.__version__,
      "training_config": c,
  }
  write(tensors, cfg, out_dir)
  return out_dir


def write(tensors: dict, cfg: dict, out_dir: str) -> None:
  """Write an export directory atomically, file by file: sae.safetensors first, then
  config.json (so its presence means the export is complete)."""
  tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
  files.atomic_write(os.path.join(out_dir, "sae.safetensors"), lambda p: save_file(
      tensors, p, metadata={"format": "np", "architecture": cfg["architecture"]}))
  files.write_json_atomic(os.path.join(out_dir, "config.json"), cfg)


if __name__ == "__main__":
  if len(sys.argv) not in (2, 3):
    sys.exit("usage: python -m sae_jax.tools.export RUN_DIR [OUT_DIR]")
  print(export(*sys.argv[1:]))
