"""A sweep file and its points: load it, apply the command line's overrides, validate
every point, and name each run.

A sweep is a Python file (big_vision style) with two functions:

    def get_config() -> ml_collections.ConfigDict   # the base config, formulas and all
    def get_sweep() -> list[dict]                     # one {"dotted.key": value} per point
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import ml_collections

from sae_jax import config as config_lib, overrides as overrides_lib
from sae_jax.errors import ConfigError


def load_sweep(path: str) -> tuple[ml_collections.ConfigDict, list[dict]]:
  """Import a sweep file; return (base config, points). Raises ConfigError if the file
  is missing or lacks get_config / get_sweep."""
  if not os.path.isfile(path):
    raise ConfigError(f"sweep file {path!r} not found (try sweeps/quickstart.py)")
  name = "_sae_jax_sweep_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ("get_config", "get_sweep"):
    if not hasattr(module, fn):
      raise ConfigError(f"sweep file {path!r} defines no {fn}()")
  return module.get_config(), list(module.get_sweep())


def run_id(point: dict, resolved: ml_collections.ConfigDict) -> str:
  """Readable id from the point's values plus a hash of the whole resolved config, so a
  changed config never reuses an old run."""
  short = {"sae.n_latents": "n", "sae.k": "k", "train.token_budget": "t", "train.lr": "lr",
           "sae.architecture": "", "sae.sparsity_coefficient": "lam"}
  parts = [f"{short.get(k, k.split('.')[-1])}{v}" for k, v in point.items()]
  identity = resolved.to_dict()
  identity.pop("out_dir", None)  # where results go is not what was trained
  identity["data"].pop("cache_dir", None)
  for key in ("eval_measures", "eval_max_contexts", "eval_max_latents"):
    identity["train"].pop(key, None)  # what is measured is not what was trained
  identity["train"].pop("topk_step", None)  # same results either way (tests/sparse_test.py)
  identity["train"].pop("sparse_impl", None)  # likewise
  if not identity["data"].get("shuffle_block_rows"):  # random rows: as before the fields
    identity["data"].pop("shuffle_block_rows", None)
    identity["data"].pop("shuffle_buffer_blocks", None)
  if identity["train"].get("compute_dtype") == "float32":
    del identity["train"]["compute_dtype"]  # the default, as before the field existed
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str)
                          .encode()).hexdigest()[:8]
  return "_".join(parts + [digest]).replace("/", "-")


def prepare(path: str, cli_overrides: dict | None = None
            ) -> tuple[ml_collections.ConfigDict, list[dict], list[ml_collections.ConfigDict]]:
  """(base config, points, one config per point) of a sweep file with the command-line
  overrides applied; every point validated. Raises ConfigError on any bad point."""
  base, points = load_sweep(path)
  base = overrides_lib.apply(base, cli_overrides or {})
  if not points:
    raise ConfigError(f"sweep {path!r} has no points (get_sweep() returned [])")
  configs = [overrides_lib.apply(base, p) for p in points]
  for cfg in configs:
    config_lib.resolve(cfg)  # fail fast on any bad point
  return base, points, configs
