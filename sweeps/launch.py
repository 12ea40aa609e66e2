"""The sweep launcher: harvest (or reuse) activations, train every point, write the
results table, fit the scaling laws.

A sweep is a Python file (big_vision style; `sweeps.points` loads it) with two functions,
get_config() (the base config) and get_sweep() (one dict of overrides per point).

Outputs, under <out_dir>/<name>/:
    <run_id>/checkpoints/   Orbax checkpoints of the point (resume from here)
    <run_id>/records.json   the point's evaluation records, written when it finishes
    <run_id>/failed.json    instead, if it diverged: the error, step, last good checkpoint
    results.jsonl           one record per (run, evaluation point), rebuilt atomically
    fits.json, plots/       from `analysis.report.fit_sweep`
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax

from sae_jax import config as config_lib, evals, files
from sae_jax.data import harvest, sources
from sae_jax.errors import TrainingDivergedError
from sae_jax.tools import export
from sae_jax.training import distributed, tracking, trainer
from sweeps import plan as plan_lib
from sweeps.points import load_sweep, prepare, run_id  # noqa: F401  (the launcher's API)
from analysis import report








def _data_key(cfg) -> str:
  return json.dumps(cfg.data.to_dict(), sort_keys=True, default=str) + str(cfg.seed)


def share_lm_passes(configs: list, caches: dict, progress: bool = True) -> None:
  """Harvest together the caches of LM points that differ only in data.layer / data.site
  (a sweep's layer and site grid axes): one LM forward per batch fills them all
  (`harvest.get_or_harvest_many`). Adds each point's cache to `caches` by its data key."""
  groups: dict[str, list] = {}
  for cfg in configs:
    if (cfg.data.source != "lm" or cfg.data.get("cache", "disk") == "none"
        or _data_key(cfg) in caches):
      continue
    d = cfg.data.to_dict()
    for key in ("layer", "site", "layers", "sites"):
      d.pop(key, None)
    groups.setdefault(json.dumps(d, sort_keys=True, default=str) + str(cfg.seed), []).append(cfg)
  for cfgs in groups.values():
    own = [harvest.own_target(c) for c in cfgs]
    targets = list(dict.fromkeys(own))
    if len(targets) < 2:
      continue
    many = harvest.get_or_harvest_many(cfgs[0], targets, progress=progress)
    for c, t in zip(cfgs, own):
      caches[_data_key(c)] = many[t]


def run_points_here(indices: list[int], points: list[dict], configs: list, out: str,
                    caches: dict, progress: bool = True, log=print,
                    saes_per_pass: int = 8
                    ) -> tuple[dict[int, list[dict]], dict[int, TrainingDivergedError]]:
  """Train points `indices` of a sweep in this process (or reuse their records.json),
  export the finished ones, and return ({index: records}, {index: divergence error}).

  The one per-point code path of every executor: harvest or reuse the activation source
  (memoised in `caches` by data settings); points that share a source and its batches
  (`trainer.data_pass_key`) train together, up to `saes_per_pass` SAEs per pass over the
  data (`trainer.train_many`: each batch read once, each SAE as if trained alone, with
  the evaluation suite's `evals.TRAINING_EVALUATORS` at every evaluation point); each
  resumes from its own checkpoints and writes <out>/<run_id>/records.json and its
  portable export (`sae_jax.tools.export`). A point that diverges is dropped from its
  pass while the others train to the end (`trainer.train_many(keep_going=True)`); it is
  left with <run_id>/failed.json, no records.json, so a relaunch retries it alone.
  """
  primary = distributed.is_primary()
  results: dict[int, list[dict]] = {}
  failed: dict[int, TrainingDivergedError] = {}
  run_dirs: dict[int, str] = {}
  todo: dict[tuple, list] = {}
  share_lm_passes([configs[i] for i in indices], caches, progress)
  for i in indices:
    cfg = configs[i]
    data_key = _data_key(cfg)
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
    if os.path.exists(os.path.join(run_dir, trainer.FAILED)):
      log(f"[{i + 1}/{len(points)}] {rid}: failed earlier ({trainer.FAILED}); retrying it")
    os.makedirs(run_dir, exist_ok=True)
    if primary:
      files.write_json_atomic(os.path.join(run_dir, "config.json"), resolved.to_dict())
    info = {"sweep": cfg.name, "run_id": rid, "model": cache.meta["model"],
            "layer": cache.meta["layer"], "site": cache.meta.get("site", "residual"),
            "cache": (f"none:{cache.meta['cache_key']}" if cache.meta.get("cache") == "none"
                      else os.path.basename(getattr(cache, "path", "synthetic")))}
    todo.setdefault((data_key, trainer.data_pass_key(resolved)), []).append(
        (i, resolved, run_dir, info))

  for (data_key, _), group in todo.items():
    for start in range(0, len(group), max(1, saes_per_pass)):
      chunk = group[start:start + max(1, saes_per_pass)]
      for i, resolved, run_dir, info in chunk:
        log(f"[{i + 1}/{len(points)}] {info['run_id']}: training "
            f"{resolved.train.token_budget:,} tokens")
      if len(chunk) > 1:
        log(f"    ({len(chunk)} SAEs share one pass over the data)")
      all_records = trainer.train_many([r for _, r, _, _ in chunk], caches[data_key],
                                       [d for _, _, d, _ in chunk], [f for _, _, _, f in chunk],
                                       progress=progress and primary,
                                       evaluators=evals.TRAINING_EVALUATORS, keep_going=True)
      for (i, _, run_dir, info), records in zip(chunk, all_records):
        if isinstance(records, TrainingDivergedError):
          log(f"    {info['run_id']}: failed: {records}")
          failed[i] = records
          continue
        if primary:
          files.write_json_atomic(os.path.join(run_dir, "records.json"), records)
          if os.path.exists(os.path.join(run_dir, trainer.FAILED)):
            os.remove(os.path.join(run_dir, trainer.FAILED))  # an earlier failure, now retried
        last = records[-1]
        log(f"    {info['run_id']}: normalized MSE {last['normalized_mse']:.4f}, "
            f"L0 {last['l0']:.1f}, dead {last['dead_fraction']:.3f}, "
            f"{last['wall_time_s']:.0f} s")
        for warning in last.get("run_warnings") or ():
          log(f"    {info['run_id']}: warning: {warning}")
        results[i] = records
  for i in indices:
    if (primary and i in results
        and not os.path.exists(os.path.join(run_dirs[i], "export", "config.json"))):
      export_point(run_dirs[i])
  return results, failed


def failure_error(failed: dict[int, TrainingDivergedError], n_points: int,
                  log=print) -> TrainingDivergedError:
  """Log one line per failed point; return the one-line error that ends the sweep."""
  for i, e in sorted(failed.items()):
    log(f"point {i + 1} failed: {e}")
  return TrainingDivergedError(
      f"{len(failed)} of {n_points} point(s) diverged (listed above, each with a "
      f"{trainer.FAILED}); the other points are saved; lower their train.lr and rerun "
      "to retry only the failed ones")


def export_point(run_dir: str) -> str:
  """Export a finished point as safetensors + JSON (`sae_jax.tools.export.export`). In a
  multi-process run the checkpoint is read by a single-process CPU subprocess, since
  `Checkpointer.restore_untyped` reads onto one local device."""
  if jax.process_count() == 1:
    return export.export(run_dir)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SAE_JAX_COORDINATOR", "SAE_JAX_NUM_PROCESSES", "SAE_JAX_PROCESS_ID",
                              "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_"))}
  env["JAX_PLATFORMS"] = "cpu"
  subprocess.run([sys.executable, "-m", "sae_jax.tools.export", run_dir], env=env, check=True,
                 stdout=subprocess.DEVNULL)
  return os.path.join(run_dir, "export")


def run_points(path: str, indices: list[int], cli_overrides: dict | None = None,
               progress: bool = False, log=print, override_points: bool = False
               ) -> list[list[dict]]:
  """Run points `indices` of the sweep file at `path` (what one cluster job does); return
  their records. Takes only a path, ints and a dict of plain values, so it pickles.

  Raises ConfigError when a point's parameters + optimizer state do not fit this
  process's devices (checked for all of them before any trains).
  """
  if not distributed.is_primary():
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes
  base, points, configs = prepare(path, cli_overrides, override_points)
  plan_lib.check_fits(plan_lib.plan(path, cli_overrides, only=indices,
                                    override_points=override_points))
  out = os.path.join(base.out_dir, base.name)
  done, failed = run_points_here(indices, points, configs, out, {}, progress, log)
  if failed:
    raise failure_error(failed, len(indices), log)
  return [done[i] for i in indices]


def watch(base, out: str, log=print) -> None:
  """Say how to watch the sweep's runs while they train (`sae_jax.training.tracking`)."""
  if "tensorboard" in tracking.loggers_of(base):
    log(f"training curves: {tracking.logdir_of(out)}")


def write_results(out: str, results: list[dict], n_points: int, fit: bool, log=print,
                  t0: float | None = None) -> str:
  """Write <out>/results.jsonl (atomically) and, if `fit`, the fits and plots."""
  results_path = os.path.join(out, "results.jsonl")
  files.write_json_atomic(results_path, results, jsonl=True)
  took = f" ({time.time() - t0:.0f} s)" if t0 is not None else ""
  log(f"{len(results)} records of {n_points} runs -> {results_path}{took}")
  flagged = {r.get("run_id"): r["run_warnings"] for r in results if r.get("run_warnings")}
  for rid, msgs in flagged.items():  # the last record of a run holds all its warnings
    for msg in msgs:
      log(f"warning, run {rid}: {msg}")
  if fit:
    report.fit_sweep(results_path, out)
    log(f"fits -> {os.path.join(out, 'fits.json')}, plots -> {os.path.join(out, 'plots')}")
  return results_path


def run_sweep(path: str, cli_overrides: dict | None = None, fit: bool = True,
              progress: bool = True, log=print, device_memory_gb: float | None = None,
              saes_per_pass: int = 8, override_points: bool = False) -> str:
  """Run a sweep file end to end in this process; return the path of its results.jsonl.

  Finished points (records.json present) are skipped; interrupted ones resume from their
  last checkpoint; failed ones (failed.json) are retried. If a point diverges, the others
  still train, results.jsonl holds the finished ones (no fits), and TrainingDivergedError
  is raised at the end. Every point's config is validated, and its parameters + optimizer
  state checked against the device memory (`sweeps.plan.check_fits`), before anything
  runs. Cluster executors: `sweeps.cluster.run_sweep_jobs`.
  """
  primary = distributed.is_primary()
  if not primary:
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes

  base, points, configs = prepare(path, cli_overrides, override_points)
  plan_lib.check_fits(plan_lib.plan(path, cli_overrides, device_memory_gb=device_memory_gb,
                                    override_points=override_points))
  out = os.path.join(base.out_dir, base.name)
  files.check_writable(out)
  watch(base, out, log)

  t0 = time.time()
  done, failed = run_points_here(list(range(len(points))), points, configs, out, {}, progress,
                                 log, saes_per_pass)
  results = [rec for i in range(len(points)) if i in done for rec in done[i]]
  if not primary:
    if failed:
      raise failure_error(failed, len(points), log)
    return os.path.join(out, "results.jsonl")
  if failed:  # the finished points' table first; no fits over a sweep with holes
    write_results(out, results, len(done), False, log, t0)
    raise failure_error(failed, len(points), log)
  return write_results(out, results, len(points), fit, log, t0)


if __name__ == "__main__":
  run_sweep(sys.argv[1])
