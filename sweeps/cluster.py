"""Sweeps as submitit jobs, locally or on SLURM.

    sae-jax sweep FILE --executor local --group-size 2         # jobs as local processes
    sae-jax sweep FILE --executor slurm --slurm slurm_partition=gpu gpus_per_node=1 timeout_min=240

A job runs `launch.run_points(path, indices, overrides)`, the same per-point code path
as an inline sweep, so a job that is preempted, times out (submitit requeues it) or is
resubmitted skips finished points (records.json) and resumes the others from their
checkpoints. The driver harvests the activation cache(s) before it submits anything, so
jobs only read the cache and never race to write it; it then waits for every job and
writes results.jsonl and the fits exactly as an inline sweep does.
"""

from __future__ import annotations

import json
import os
import time

import submitit

from sae_jax import files, signals
from sae_jax.data import harvest
from sae_jax.errors import ConfigError
from sae_jax.training import distributed
from sweeps import launch, plan as plan_lib
from sweeps import points as points_lib


def parse_params(items: list[str]) -> dict:
  """KEY=VALUE strings -> submitit parameters (ints, floats, true/false, else strings)."""
  out = {}
  for item in items or []:
    if "=" not in item:
      raise ConfigError(f"--slurm {item!r} is not KEY=VALUE (e.g. slurm_partition=gpu)")
    k, v = item.split("=", 1)
    for cast in (int, float):
      try:
        v = cast(v)
        break
      except ValueError:
        pass
    if v in ("true", "false"):
      v = v == "true"
    out[k] = v
  return out


class PointsJob(submitit.helpers.Checkpointable):
  """A picklable job: points `indices` of the sweep file `path` (plain values only).

  On preemption or timeout SLURM (or the LocalExecutor) sends submitit's signal (SIGUSR2
  unless SUBMITIT_PREEMPT_SIGNAL says otherwise). The job handles it as `sae-jax` handles
  SIGTERM (`sae_jax.signals`): the training pass checkpoints at the next step boundary
  (the harvest stops between LM batches, anything else at once); only then is
  submitit's own handler called, which calls `checkpoint` and requeues the same call,
  which resumes from those checkpoints.
  """

  def __init__(self, path: str, indices: list[int], cli_overrides: dict,
               override_points: bool = False):
    self.path, self.indices, self.cli_overrides = os.path.abspath(path), list(indices), dict(cli_overrides)
    self.override_points = override_points

  def __call__(self) -> list[str]:
    distributed.initialize()  # several SLURM tasks per job: one jax.distributed run
    preempt = submitit.JobEnvironment._usr_sig()  # pylint: disable=protected-access
    submitits = signals.install((preempt,))
    try:
      records = launch.run_points(self.path, self.indices, self.cli_overrides, progress=False,
                                  override_points=getattr(self, "override_points", False))
    except signals.Interrupted as e:
      signals.restore(submitits)
      handler = submitits.get(e.signum)
      print(f"sae-jax: {signals.name(e.signum)}: {e.where or 'stopped'}; handing over to "
            "submitit to requeue", flush=True)
      if callable(handler):  # submitit's checkpoint_and_try_requeue: requeues and exits
        handler(e.signum, None)
      raise
    finally:
      signals.restore(submitits)
    return [r[-1]["run_id"] if r else "" for r in records]


def job_devices(executor: str, params: dict | None) -> int | None:
  """Devices of one SLURM job from its submitit parameters (gpus_per_node x nodes), or
  None (this process's devices) for the other executors or when not given."""
  params = params or {}
  gpus = params.get("gpus_per_node") or params.get("slurm_gpus_per_node")
  if executor != "slurm" or not isinstance(gpus, int):
    return None
  return gpus * int(params.get("nodes", 1))


def make_executor(kind: str, folder: str, params: dict | None = None):
  """submitit's LocalExecutor ("local") or AutoExecutor(cluster="slurm") ("slurm"),
  updated with `params` (submitit names: timeout_min, gpus_per_node, cpus_per_task,
  mem_gb, slurm_partition, slurm_account, slurm_array_parallelism, ...).

  Raises ConfigError for an unknown executor or parameter.
  """
  params = dict(params or {})
  params.setdefault("timeout_min", 24 * 60 if kind == "local" else 60)
  if kind == "local":
    ex = submitit.LocalExecutor(folder=folder)
  elif kind == "slurm":
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params.setdefault("name", "sae-jax")
  else:
    raise ConfigError(f"--executor {kind!r} is not one of inline, local, slurm")
  try:
    ex.update_parameters(**params)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"submitit parameters {params}: {e}".replace("\n", " ")) from None
  return ex


def run_sweep_jobs(path: str, cli_overrides: dict | None, executor: str, group_size: int = 1,
                   params: dict | None = None, fit: bool = True, progress: bool = True,
                   device_memory_gb: float | None = None, log=print,
                   override_points: bool = False) -> str:
  """Run a sweep as submitit jobs, one per group of `group_size` points; return the path
  of results.jsonl (identical to an inline run's).

  Order: validate every point and check its memory; harvest (or reuse) each activation
  cache here; submit a job array; wait; read every point's records.json in sweep order;
  write results.jsonl and the fits.

  Raises:
    ConfigError: a bad point, a point that does not fit device memory, or failed jobs
      (the message names the first and where its log is; rerun to resume).
  """
  cli_overrides = dict(cli_overrides or {})
  base, points, configs = points_lib.prepare(path, cli_overrides, override_points)
  p = plan_lib.plan(path, cli_overrides, group_size, device_memory_gb, elsewhere=executor == "slurm",
           n_devices=job_devices(executor, params), override_points=override_points)
  plan_lib.check_fits(p)
  out = p.out
  files.check_writable(out)
  launch.watch(base, out, log)
  caches: dict = {}
  launch.share_lm_passes(configs, caches, progress)  # layer / site axes: one LM pass
  for cfg in configs:  # harvest here, once, so jobs only read (synthetic: made in each job)
    key = json.dumps(cfg.data.to_dict(), sort_keys=True, default=str) + str(cfg.seed)
    if key not in caches and cfg.data.get("source", "lm") == "lm":
      caches[key] = harvest.get_or_harvest(cfg, progress=progress)
  folder = os.path.join(out, "submitit", "%j")
  ex = make_executor(executor, folder, params)
  with ex.batch():  # one job array on SLURM
    jobs = [ex.submit(PointsJob(path, idx, cli_overrides, override_points)) for idx in p.jobs]
  log(f"submitted {len(jobs)} {executor} job(s) for {len(points)} points: "
      f"{', '.join(j.job_id for j in jobs)} (logs under {os.path.dirname(folder)})")
  t0 = time.time()
  failed = []
  for job, idx in zip(jobs, p.jobs):
    try:
      job.result()
      log(f"job {job.job_id} (points {idx}) done")
    except Exception as e:  # pylint: disable=broad-except  # submitit's FailedJobError etc.
      last = [l for l in str(e).strip().splitlines() if l.strip()]
      failed.append((job, idx, last[-1] if last else type(e).__name__))
  results, n_done = [], 0
  for pt in p.points:
    rec_path = os.path.join(out, pt.run_id, "records.json")
    if os.path.exists(rec_path):  # finished, whatever became of the other points
      results.extend(files.load_json(rec_path, launch.RECORDS_FIX))
      n_done += 1
  if failed:
    if results:  # the finished points' table first; no fits over a sweep with holes
      launch.write_results(out, results, n_done, False, log, t0)
    job, idx, why = failed[0]
    raise ConfigError(
        f"{len(failed)} of {len(jobs)} job(s) failed; first: job {job.job_id} (points {idx}): "
        f"{why}; log in {job.paths.stderr}; rerun the same command to resume")
  return launch.write_results(out, results, len(points), fit, log, t0)

