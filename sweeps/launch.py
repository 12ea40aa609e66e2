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
from sweeps.points import load_sweep, lock_path, point_lock, prepare, run_id  # noqa: F401  (the launcher's API)
from analysis import report








# what to do about a finished point's unreadable records.json (`files.load_json`)
RECORDS_FIX = ("delete it to rebuild it from the point's last checkpoint (the rerun trains "
               "no further steps)")


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

  Several processes may run the same sweep into the same directory: a point is trained
  only by the process holding its lock (`point_lock`), claimed one pass at a time, so the
  processes share the points; a process with nothing left to claim waits for the points
  another holds and reuses their records, or trains them itself if that process died
  (the kernel releases the lock of a killed process; the point resumes from its
  checkpoints). The processes of one multi-host JAX run train every point together and
  take no locks.
  """
  primary = distributed.is_primary()
  share = jax.process_count() == 1
  results: dict[int, list[dict]] = {}
  failed: dict[int, TrainingDivergedError] = {}
  prepared: dict[int, tuple] = {}
  failed_seen: dict[int, float | None] = {}  # mtime of failed.json when first looked at
  held: dict[int, files.Lock] = {}
  others: set[int] = set()  # points seen held by another process
  share_lm_passes([configs[i] for i in indices], caches, progress)

  def prep(i: int) -> tuple:
    if i not in prepared:
      cfg = configs[i]
      data_key = _data_key(cfg)
      if data_key not in caches:
        caches[data_key] = sources.get_source(cfg, progress=progress)
      cache = caches[data_key]
      resolved = config_lib.resolve(cfg, cache.d_in)
      rid = run_id(points[i], resolved)
      info = {"sweep": cfg.name, "run_id": rid, "model": cache.meta["model"],
              "layer": cache.meta["layer"], "site": cache.meta.get("site", "residual"),
              "cache": (f"none:{cache.meta['cache_key']}" if cache.meta.get("cache") == "none"
                        else os.path.basename(getattr(cache, "path", "synthetic")))}
      prepared[i] = (resolved, rid, os.path.join(out, rid), info,
                     (data_key, trainer.data_pass_key(resolved)))
    return prepared[i]

  def settled(i: int) -> bool:
    """Whether point i needs no training here: its records.json exists (reused), or
    another process tried it since we first looked and it diverged."""
    if i in results or i in failed:
      return True
    _, rid, run_dir, _, _ = prep(i)
    rec_path = os.path.join(run_dir, "records.json")
    if os.path.exists(rec_path):
      results[i] = files.load_json(rec_path, RECORDS_FIX)
      log(f"[{i + 1}/{len(points)}] {rid}: "
          + ("trained by another process, reusing its records" if i in others
             else "finished earlier, reusing its records"))
      return True
    failed_path = os.path.join(run_dir, trainer.FAILED)
    mtime = os.path.getmtime(failed_path) if os.path.exists(failed_path) else None
    if i not in failed_seen:
      failed_seen[i] = mtime
    elif mtime != failed_seen[i]:
      error = (files.read_json(failed_path) or {}).get("error", "diverged")
      failed[i] = TrainingDivergedError(f"{error} (in another process)")
      return True
    return False

  def claim(i: int, blocking: bool) -> bool:
    lock = point_lock(out, prep(i)[1])
    if share and not lock.acquire(blocking):
      return False
    held[i] = lock
    if settled(i):  # finished by another process while we looked
      held.pop(i).release()
      return False
    return True

  try:
    pending = [i for i in indices if not settled(i)]
    while pending:
      claimed, busy = [], []
      for i in pending:  # the first pass's worth of points no other process holds
        if claimed and (len(claimed) >= max(1, saes_per_pass)
                        or prep(i)[4] != prep(claimed[0])[4]):
          continue
        if claim(i, blocking=False):
          claimed.append(i)
        elif not settled(i):
          busy.append(i)
          if i not in others:
            others.add(i)
            log(f"[{i + 1}/{len(points)}] {prep(i)[1]}: being trained by another process "
                f"(pid {point_lock(out, prep(i)[1]).holder()})")
      if not claimed and busy:
        i = busy[0]
        log(f"[{i + 1}/{len(points)}] {prep(i)[1]}: waiting for the other process")
        if claim(i, blocking=True):  # that process ended without finishing it
          claimed.append(i)
      if claimed:
        _train_pass(claimed, prep, points, caches, results, failed, primary, progress, log)
        for i in claimed:
          held.pop(i).release()
      pending = [i for i in pending if not settled(i)]
    for i in indices:  # a point finished earlier whose export is missing
      run_dir = prep(i)[2]
      if (primary and i in results
          and not os.path.exists(os.path.join(run_dir, "export", "config.json"))
          and claim_export(out, prep(i)[1], share)):
        export_point(run_dir)
  finally:
    for lock in held.values():
      lock.release()
  if others & set(results):
    log(f"{len(others & set(results))} point(s) were trained by another process")
  return results, failed


def claim_export(out: str, rid: str, share: bool) -> bool:
  """Whether this process may export point `rid` now: no other process holds it (that
  one exports it itself). The lock is released at once: an export is idempotent."""
  if not share:
    return True
  lock = point_lock(out, rid)
  if not lock.acquire(blocking=False):
    return False
  lock.release()
  return True


def _train_pass(chunk: list[int], prep, points: list[dict], caches: dict, results: dict,
                failed: dict, primary: bool, progress: bool, log) -> None:
  """Train the points of `chunk` (one data source and batch order) in one pass over the
  data, write their records.json and exports; fill `results` and `failed`."""
  for i in chunk:
    resolved, rid, run_dir, _, _ = prep(i)
    if os.path.exists(os.path.join(run_dir, trainer.FAILED)):
      log(f"[{i + 1}/{len(points)}] {rid}: failed earlier ({trainer.FAILED}); retrying it")
    os.makedirs(run_dir, exist_ok=True)
    if primary:
      files.write_json_atomic(os.path.join(run_dir, "config.json"), resolved.to_dict())
    log(f"[{i + 1}/{len(points)}] {rid}: training {resolved.train.token_budget:,} tokens")
  if len(chunk) > 1:
    log(f"    ({len(chunk)} SAEs share one pass over the data)")
  data_key = prep(chunk[0])[4][0]
  all_records = trainer.train_many([prep(i)[0] for i in chunk], caches[data_key],
                                   [prep(i)[2] for i in chunk], [prep(i)[3] for i in chunk],
                                   progress=progress and primary,
                                   evaluators=evals.TRAINING_EVALUATORS, keep_going=True)
  for i, records in zip(chunk, all_records):
    _, rid, run_dir, _, _ = prep(i)
    if isinstance(records, TrainingDivergedError):
      log(f"    {rid}: failed: {records}")
      failed[i] = records
      continue
    if primary:
      files.write_json_atomic(os.path.join(run_dir, "records.json"), records)
      if os.path.exists(os.path.join(run_dir, trainer.FAILED)):
        os.remove(os.path.join(run_dir, trainer.FAILED))  # an earlier failure, now retried
    last = records[-1]
    log(f"    {rid}: normalized MSE {last['normalized_mse']:.4f}, "
        f"L0 {last['l0']:.1f}, dead {last['dead_fraction']:.3f}, "
        f"{last['wall_time_s']:.0f} s")
    for warning in last.get("run_warnings") or ():
      log(f"    {rid}: warning: {warning}")
    results[i] = records
    if primary and not os.path.exists(os.path.join(run_dir, "export", "config.json")):
      export_point(run_dir)


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
  p = plan_lib.plan(path, cli_overrides, only=indices, override_points=override_points)
  plan_lib.check_fits(p)
  plan_lib.check_disk(p)
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
  """Write <out>/results.jsonl (atomically) and, if `fit`, the fits and plots.

  Under a lock (`sweeps.points.lock_path(out, "results")`), so processes sharing a sweep write one after
  the other; one that finds the same table written since it started (`t0`) by another
  process, with fits newer than it, leaves both as they are."""
  results_path = os.path.join(out, "results.jsonl")
  text = "".join(files.dumps_json(r, indent=None) + "\n" for r in results).encode()
  with files.Lock(lock_path(out, "results")):
    fits_path = os.path.join(out, "fits.json")
    if (t0 is not None and os.path.exists(results_path)
        and os.path.getmtime(results_path) >= t0 and _same_bytes(results_path, text)
        and (not fit or (os.path.exists(fits_path)
                         and os.path.getmtime(fits_path) >= os.path.getmtime(results_path)))):
      log(f"{len(results)} records of {n_points} runs -> {results_path} (written by another "
          "process of this sweep)")
      return results_path
    files.atomic_write_bytes(results_path, text)
    took = f" ({time.time() - t0:.0f} s)" if t0 is not None else ""
    log(f"{len(results)} records of {n_points} runs -> {results_path}{took}")
    flagged = {r.get("run_id"): r["run_warnings"] for r in results if r.get("run_warnings")}
    for rid, msgs in flagged.items():  # the last record of a run holds all its warnings
      for msg in msgs:
        log(f"warning, run {rid}: {msg}")
    if fit:
      report.fit_sweep(results_path, out)
      log(f"fits -> {fits_path}, plots -> {os.path.join(out, 'plots')}")
  return results_path


def _same_bytes(path: str, data: bytes) -> bool:
  with open(path, "rb") as f:
    return f.read() == data


def run_sweep(path: str, cli_overrides: dict | None = None, fit: bool = True,
              progress: bool = True, log=print, device_memory_gb: float | None = None,
              saes_per_pass: int = 8, override_points: bool = False) -> str:
  """Run a sweep file end to end in this process; return the path of its results.jsonl.

  Finished points (records.json present) are skipped; interrupted ones resume from their
  last checkpoint; failed ones (failed.json) are retried. If a point diverges, the others
  still train, results.jsonl holds the finished ones (no fits), and TrainingDivergedError
  is raised at the end. Every point's config is validated, and its parameters + optimizer
  state checked against the device memory (`sweeps.plan.check_fits`), and what is left
  to write against the free disk (`sweeps.plan.check_disk`), before anything runs.
  Several processes may run the same sweep at once and share its points
  (`run_points_here`). Cluster executors: `sweeps.cluster.run_sweep_jobs`.
  """
  primary = distributed.is_primary()
  if not primary:
    log = lambda *_: None  # noqa: E731 -- only process 0 speaks and writes

  base, points, configs = prepare(path, cli_overrides, override_points)
  p = plan_lib.plan(path, cli_overrides, device_memory_gb=device_memory_gb,
                    override_points=override_points)
  plan_lib.check_fits(p)
  plan_lib.check_disk(p)
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
