"""SAEs on the Hugging Face Hub: push a finished run, load one back.

    folder = build(run_dir, out_dir)          # what `sae-jax push` uploads
    push(run_dir, "me/smollm2-saes", subdir="layer15_n2048_k32")
    params, cfg = interchange.load("hf://me/smollm2-saes/layer15_n2048_k32")

The folder (README, "The Hugging Face Hub"):

  cfg.json, sae_weights.safetensors   SAELens's layout (`interchange.to_saelens`), so
                                      SAELens's `SAE.from_pretrained` reads it
  config.json, sae.safetensors        our export (`sae_jax.tools.export`), read back
                                      exactly by `interchange.load`
  records.json                        the run's evaluation records
  sparsity.safetensors                per-latent firing frequency on the held-out split,
                                      as SAELens saves it ("sparsity": log10(frequency +
                                      1e-10)), plus the plain "firing_frequency"
                                      (what SAEBench reads)

Uploads go through `huggingface_hub.HfApi.upload_folder` (token and endpoint as
huggingface_hub finds them); downloads through `huggingface_hub.snapshot_download`,
which honours HF_HUB_OFFLINE and the hub cache (HF_HUB_CACHE).
"""

from __future__ import annotations

import os
import shutil

import ml_collections
import numpy as np
from safetensors.numpy import save_file

from sae_jax import files
from sae_jax.data import batches, sources
from sae_jax.errors import ConfigError
from sae_jax.tools import export, interchange

SPARSITY = "sparsity.safetensors"


def firing_frequency(params: dict, cfg: dict, x_BxD_batches) -> np.ndarray:
  """Fraction of tokens on which each latent is non-zero: float64 [n_latents], over the
  raw activations of `x_BxD_batches` (an iterable of [B, d_in] arrays)."""
  fires, n = None, 0
  for x in x_BxD_batches:
    z, _ = interchange.encode(params, cfg, np.asarray(x, np.float32))
    f = np.count_nonzero(z, axis=0)
    fires = f if fires is None else fires + f
    n += len(x)
  if not n:
    raise ConfigError("no held-out activations to measure the firing frequency on")
  return fires.astype(np.float64) / n


def build(run_dir: str, out_dir: str | None = None) -> str:
  """Write the folder `push` uploads (module docstring) for a finished run; return it.

  The firing frequency is measured on the held-out split of the run's activation source
  (its cache is reused; a deleted one is harvested again).

  Raises:
    ConfigError: run_dir is not a finished run (no records.json or checkpoints), or an
      architecture with no SAELens equivalent.
  """
  rec_path = os.path.join(run_dir, "records.json")
  if not (os.path.isfile(rec_path) and os.path.isdir(os.path.join(run_dir, "checkpoints"))):
    raise ConfigError(f"{run_dir!r} is not a finished run (it needs records.json and "
                      "checkpoints/); give out_dir/<name>/<run_id> of a finished run")
  out_dir = out_dir or os.path.join(run_dir, "hub")
  if os.path.isdir(out_dir):
    shutil.rmtree(out_dir)
  exp = os.path.join(run_dir, "export")
  if not os.path.isfile(os.path.join(exp, "config.json")):
    export.export(run_dir, exp)
  interchange.to_saelens(exp, out_dir)  # raises for an architecture SAELens lacks
  for name in ("config.json", "sae.safetensors"):
    shutil.copyfile(os.path.join(exp, name), os.path.join(out_dir, name))
  shutil.copyfile(rec_path, os.path.join(out_dir, "records.json"))
  params, cfg = interchange.load(exp)
  c = ml_collections.ConfigDict(cfg["training_config"])
  source = sources.get_source(c, progress=False)
  freq = firing_frequency(params, cfg, batches.eval_batches(source, 4096))
  tensors = {"sparsity": np.log10(freq + 1e-10).astype(np.float32),
             "firing_frequency": freq.astype(np.float32)}
  files.atomic_write(os.path.join(out_dir, SPARSITY), lambda p: save_file(tensors, p))
  return out_dir


def listing(folder: str) -> list[tuple[str, int]]:
  """(path relative to folder, bytes) of every file, sorted."""
  return sorted((os.path.relpath(os.path.join(r, f), folder), os.path.getsize(os.path.join(r, f)))
                for r, _, fs in os.walk(folder) for f in fs)


def push(run_dir: str, repo_id: str, subdir: str | None = None, out_dir: str | None = None,
         dry_run: bool = False, private: bool = False) -> tuple[str, list[tuple[str, int]]]:
  """Build the folder of a finished run and upload it to `repo_id` (under `subdir`)
  with `huggingface_hub.HfApi.upload_folder`, creating the repository if needed.
  With `dry_run` nothing is uploaded (and huggingface_hub is not contacted).

  Returns:
    (the folder, [(path in the repository, bytes)]).

  Raises:
    ConfigError: as `build`, a repo_id that is not "owner/name", or an upload refused
      by the Hub (no token, no rights, no network).
  """
  if repo_id.count("/") != 1 or not all(repo_id.split("/")):
    raise ConfigError(f"repo id {repo_id!r} is not owner/name (e.g. me/smollm2-saes)")
  folder = build(run_dir, out_dir)
  prefix = (subdir.strip("/") + "/") if subdir else ""
  listed = [(prefix + p, n) for p, n in listing(folder)]
  if dry_run:
    return folder, listed
  import huggingface_hub  # pylint: disable=import-outside-toplevel  # only for an upload
  try:
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, path_in_repo=subdir or None,
                      commit_message=f"sae-jax push {os.path.basename(os.path.normpath(run_dir))}")
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise ConfigError(f"upload to {repo_id} failed ({type(e).__name__}: {first}); check "
                      "`huggingface-cli login` and the network, or use --dry-run") from None
  return folder, listed
