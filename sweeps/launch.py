"""The sweep launcher: harvest (or reuse) activations, train every point, write the
results table, fit the scaling laws.

A sweep is a Python file (big_vision style) with two functions:

    def get_config() -> ml_collections.ConfigDict   # the base config, formulas and all
    def get_sweep() -> list[dict]                     # one {"dotted.key": value} per point

Outputs, under <out_dir>/<name>/:
    <run_id>/checkpoints/   Orbax checkpoints of the point (resume from here)
    <run_id>/records.json   the point's evaluation records, written when it finishes
    results.jsonl           one record per (run, evaluation point), rebuilt atomically
    fits.json, plots/       from `analysis.report.fit_sweep`
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time

import ml_collections

from sae_jax import config as config_lib, overrides as overrides_lib


def load_sweep(path: str) -> tuple[ml_collections.ConfigDict, list[dict]]:
  """Import a sweep file; return (base config, points). Raises ConfigError if the file
  is missing or lacks get_config / get_sweep."""
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"sweep file {path!r} not found (try sweeps/quickstart.py)")
  name = "_sae_jax_sweep_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ("get_config", "get_sweep"):
    if not hasattr(module, fn):
      raise config_lib.ConfigError(f"sweep file {path!r} defines no {fn}()")
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
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str)
                          .encode()).hexdigest()[:8]
  return "_".join(parts + [digest]).replace("/", "-")


def write_json_atomic(path: str, obj, jsonl: bool = False) -> None:
  """Write to a temporary file in the same directory, then rename over `path`."""
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      if jsonl:
        for rec in obj:
          f.write(json.dumps(rec, default=float) + "\n")
      else:
        json.dump(obj, f, indent=1, default=float)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def check_writable(directory: str) -> None:
  """Create `directory` if needed and prove it is writable, before any work starts."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
      pass
  except OSError as e:
    raise config_lib.ConfigError(
        f"cannot write to output directory {directory!r} ({e.strerror}); set out_dir=... to a writable path") from None


def run_sweep(path: str, cli_overrides: dict | None = None, fit: bool = True,
              progress: bool = True, log=print) -> str:
  """Run a sweep file end to end; return the path of its results.jsonl.

  Finished points (records.json present) are skipped; interrupted ones resume from their
  last checkpoint. Every point's config is validated before anything runs.
  """
  from sae_jax import activations, distributed, train  # heavy imports only when running
  primary = distributed.is_primary()
  if not primary:
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes

  base, points = load_sweep(path)
  base = overrides_lib.apply(base, cli_overrides or {})
  if not points:
    raise config_lib.ConfigError(f"sweep {path!r} has no points (get_sweep() returned [])")
  configs = [overrides_lib.apply(base, p) for p in points]
  for cfg in configs:
    config_lib.resolve(cfg)  # fail fast on any bad point
  out = os.path.join(base.out_dir, base.name)
  check_writable(out)

  caches = {}
  results = []
  t0 = time.time()
  for i, (point, cfg) in enumerate(zip(points, configs)):
    data_key = json.dumps(cfg.data.to_dict(), sort_keys=True, default=str) + str(cfg.seed)
    if data_key not in caches:
      caches[data_key] = activations.get_or_harvest(cfg, progress=progress)
    cache = caches[data_key]
    resolved = config_lib.resolve(cfg, cache.d_in)
    rid = run_id(point, resolved)
    run_dir = os.path.join(out, rid)
    rec_path = os.path.join(run_dir, "records.json")
    if os.path.exists(rec_path):
      with open(rec_path) as f:
        records = json.load(f)
      log(f"[{i + 1}/{len(points)}] {rid}: finished earlier, reusing its records")
    else:
      os.makedirs(run_dir, exist_ok=True)
      if primary:
        write_json_atomic(os.path.join(run_dir, "config.json"), resolved.to_dict())
      log(f"[{i + 1}/{len(points)}] {rid}: training {resolved.train.token_budget:,} tokens")
      info = {"sweep": base.name, "run_id": rid, "model": cache.meta["model"],
              "layer": cache.meta["layer"], "cache": os.path.basename(cache.path)}
      records = train.train(resolved, cache, run_dir, info, progress=progress and primary)
      if primary:
        write_json_atomic(rec_path, records)
      last = records[-1]
      log(f"    normalized MSE {last['normalized_mse']:.4f}, L0 {last['l0']:.1f}, "
          f"dead {last['dead_fraction']:.3f}, {last['wall_time_s']:.0f} s")
    results.extend(records)
  results_path = os.path.join(out, "results.jsonl")
  if not primary:
    return results_path
  write_json_atomic(results_path, results, jsonl=True)
  log(f"{len(results)} records of {len(points)} runs -> {results_path} ({time.time() - t0:.0f} s)")
  if fit:
    from analysis import report
    report.fit_sweep(results_path, out)
    log(f"fits -> {os.path.join(out, 'fits.json')}, plots -> {os.path.join(out, 'plots')}")
  return results_path


if __name__ == "__main__":
  run_sweep(sys.argv[1])
