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
import subprocess
import sys
import time

import ml_collections

from sae_jax import config as config_lib, files, overrides as overrides_lib


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
  for key in ("eval_measures", "eval_max_contexts", "eval_max_latents"):
    identity["train"].pop(key, None)  # what is measured is not what was trained
  identity["train"].pop("topk_step", None)  # same results either way (tests/sparse_test.py)
  if identity["train"].get("compute_dtype") == "float32":
    del identity["train"]["compute_dtype"]  # the default, as before the field existed
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str)
                          .encode()).hexdigest()[:8]
  return "_".join(parts + [digest]).replace("/", "-")


write_json_atomic = files.write_json_atomic
check_writable = files.check_writable


def prepare(path: str, cli_overrides: dict | None = None
            ) -> tuple[ml_collections.ConfigDict, list[dict], list[ml_collections.ConfigDict]]:
  """(base config, points, one config per point) of a sweep file with the command-line
  overrides applied; every point validated. Raises ConfigError on any bad point."""
  base, points = load_sweep(path)
  base = overrides_lib.apply(base, cli_overrides or {})
  if not points:
    raise config_lib.ConfigError(f"sweep {path!r} has no points (get_sweep() returned [])")
  configs = [overrides_lib.apply(base, p) for p in points]
  for cfg in configs:
    config_lib.resolve(cfg)  # fail fast on any bad point
  return base, points, configs


def run_points_here(indices: list[int], points: list[dict], configs: list, out: str,
                    caches: dict, progress: bool = True, log=print,
                    saes_per_pass: int = 8) -> dict[int, list[dict]]:
  """Train points `indices` of a sweep in this process (or reuse their records.json),
  export them, and return {index: records}.

  The one per-point code path of every executor: harvest or reuse the activation source
  (memoised in `caches` by data settings); points that share a source and its batches
  (`train.data_pass_key`) train together, up to `saes_per_pass` SAEs per pass over the
  data (`train.train_many`: each batch read once, each SAE as if trained alone); each
  resumes from its own checkpoints and writes <out>/<run_id>/records.json and its
  portable export (`sae_jax.export`).
  """
  from sae_jax import distributed, sources, train  # heavy imports only when running
  primary = distributed.is_primary()
  results: dict[int, list[dict]] = {}
  run_dirs: dict[int, str] = {}
  todo: dict[tuple, list] = {}
  for i in indices:
    cfg = configs[i]
    data_key = json.dumps(cfg.data.to_dict(), sort_keys=True, default=str) + str(cfg.seed)
    if data_key not in caches:
      caches[data_key] = sources.get_source(cfg, progress=progress)
    cache = caches[data_key]
    resolved = config_lib.resolve(cfg, cache.d_in)
    rid = run_id(points[i], resolved)
    run_dir = run_dirs[i] = os.path.join(out, rid)
    rec_path = os.path.join(run_dir, "records.json")
    if os.path.exists(rec_path):
      with open(rec_path) as f:
        results[i] = json.load(f)
      log(f"[{i + 1}/{len(points)}] {rid}: finished earlier, reusing its records")
      continue
    os.makedirs(run_dir, exist_ok=True)
    if primary:
      write_json_atomic(os.path.join(run_dir, "config.json"), resolved.to_dict())
    info = {"sweep": cfg.name, "run_id": rid, "model": cache.meta["model"],
            "layer": cache.meta["layer"],
            "cache": os.path.basename(getattr(cache, "path", "synthetic"))}
    todo.setdefault((data_key, train.data_pass_key(resolved)), []).append(
        (i, resolved, run_dir, info))

  for (data_key, _), group in todo.items():
    for start in range(0, len(group), max(1, saes_per_pass)):
      chunk = group[start:start + max(1, saes_per_pass)]
      for i, resolved, run_dir, info in chunk:
        log(f"[{i + 1}/{len(points)}] {info['run_id']}: training "
            f"{resolved.train.token_budget:,} tokens")
      if len(chunk) > 1:
        log(f"    ({len(chunk)} SAEs share one pass over the data)")
      all_records = train.train_many([r for _, r, _, _ in chunk], caches[data_key],
                                     [d for _, _, d, _ in chunk], [f for _, _, _, f in chunk],
                                     progress=progress and primary)
      for (i, _, run_dir, info), records in zip(chunk, all_records):
        if primary:
          write_json_atomic(os.path.join(run_dir, "records.json"), records)
        last = records[-1]
        log(f"    {info['run_id']}: normalized MSE {last['normalized_mse']:.4f}, "
            f"L0 {last['l0']:.1f}, dead {last['dead_fraction']:.3f}, "
            f"{last['wall_time_s']:.0f} s")
        results[i] = records
  for i in indices:
    if primary and not os.path.exists(os.path.join(run_dirs[i], "export", "config.json")):
      export_point(run_dirs[i])
  return results


def export_point(run_dir: str) -> str:
  """Export a finished point as safetensors + JSON (`sae_jax.export.export`). In a
  multi-process run the checkpoint is read by a single-process CPU subprocess, since
  `Checkpointer.restore_untyped` reads onto one local device."""
  import jax
  from sae_jax import export
  if jax.process_count() == 1:
    return export.export(run_dir)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SAE_JAX_COORDINATOR", "SAE_JAX_NUM_PROCESSES", "SAE_JAX_PROCESS_ID",
                              "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_"))}
  env["JAX_PLATFORMS"] = "cpu"
  subprocess.run([sys.executable, "-m", "sae_jax.export", run_dir], env=env, check=True,
                 stdout=subprocess.DEVNULL)
  return os.path.join(run_dir, "export")


def run_points(path: str, indices: list[int], cli_overrides: dict | None = None,
               progress: bool = False, log=print) -> list[list[dict]]:
  """Run points `indices` of the sweep file at `path` (what one cluster job does); return
  their records. Takes only a path, ints and a dict of plain values, so it pickles.

  Raises ConfigError when a point's parameters + optimizer state do not fit this
  process's devices (checked for all of them before any trains).
  """
  from sae_jax import distributed
  from sweeps import cluster
  if not distributed.is_primary():
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes
  base, points, configs = prepare(path, cli_overrides)
  cluster.check_fits(cluster.plan(path, cli_overrides, only=indices))
  out = os.path.join(base.out_dir, base.name)
  done = run_points_here(indices, points, configs, out, {}, progress, log)
  return [done[i] for i in indices]


def write_results(out: str, results: list[dict], n_points: int, fit: bool, log=print,
                  t0: float | None = None) -> str:
  """Write <out>/results.jsonl (atomically) and, if `fit`, the fits and plots."""
  results_path = os.path.join(out, "results.jsonl")
  write_json_atomic(results_path, results, jsonl=True)
  took = f" ({time.time() - t0:.0f} s)" if t0 is not None else ""
  log(f"{len(results)} records of {n_points} runs -> {results_path}{took}")
  if fit:
    from analysis import report
    report.fit_sweep(results_path, out)
    log(f"fits -> {os.path.join(out, 'fits.json')}, plots -> {os.path.join(out, 'plots')}")
  return results_path


def run_sweep(path: str, cli_overrides: dict | None = None, fit: bool = True,
              progress: bool = True, log=print, device_memory_gb: float | None = None,
              saes_per_pass: int = 8) -> str:
  """Run a sweep file end to end in this process; return the path of its results.jsonl.

  Finished points (records.json present) are skipped; interrupted ones resume from their
  last checkpoint. Every point's config is validated, and its parameters + optimizer
  state checked against the device memory (`sweeps.cluster.check_fits`), before anything
  runs. Cluster executors: `sweeps.cluster.run_sweep_jobs`.
  """
  from sae_jax import distributed
  from sweeps import cluster
  primary = distributed.is_primary()
  if not primary:
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes

  base, points, configs = prepare(path, cli_overrides)
  cluster.check_fits(cluster.plan(path, cli_overrides, device_memory_gb=device_memory_gb))
  out = os.path.join(base.out_dir, base.name)
  check_writable(out)

  t0 = time.time()
  done = run_points_here(list(range(len(points))), points, configs, out, {}, progress, log,
                         saes_per_pass)
  results = [rec for i in range(len(points)) for rec in done[i]]
  if not primary:
    return os.path.join(out, "results.jsonl")
  return write_results(out, results, len(points), fit, log, t0)


if __name__ == "__main__":
  run_sweep(sys.argv[1])
