"""The plan of a sweep: FLOPs, memory and wall time per point, the grouping into jobs,
and the memory check every run passes before anything starts.

    sae-jax sweep FILE --dry-run                               # print the plan only

Memory model, per device, float32 (`estimate`): the state is params P, Adam's two moments
2P, and the dead-latent counters; its latent-sized leaves are split over
`train.model_parallel` shards, the rest replicated. A step adds the gradients (P) and a
working set of [tokens per device, n_latents / shards] tensors: ACTIVATION_COPIES of
them for a training batch (pre-activations, the code, AuxK's masked copy and code, their
cotangents) or EVAL_COPIES for an evaluation batch of EVAL_BATCH tokens, whichever is
larger; tokens are split over the data-parallel devices.

Disk model (`disk`, checked by `check_disk`): a point writes its Orbax checkpoints (the
state above, float32, up to checkpoint.MAX_TO_KEEP + 1 steps on disk while the newest is
written), its export (the params, float32 safetensors) and RUN_EXTRA_BYTES of records,
config and TensorBoard events, less what its run directory already holds (a finished
point needs nothing); an LM point whose activation cache is not harvested yet adds
(train + eval tokens) x d_in x 2 bytes (float16 / bfloat16) + 4 bytes of token id per
token, once per cache it fills. Each total is compared with the free space of the disk
that holds it (the output and the cache directories may share one).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections

from sae_jax import config as config_lib
from sae_jax import files, saes
from sae_jax.data import harvest, lm
from sae_jax.errors import ConfigError, StorageError
from sae_jax.training import checkpoint
from sae_jax.training import flops as flops_lib
from sae_jax.training import step as step_lib
from sweeps import points as points_lib

ACTIVATION_COPIES = 6  # per training token: pre, code, AuxK's masked pre and code, 2 cotangents
EVAL_COPIES = 3  # per evaluation token: pre, code, fired
EVAL_BATCH = 4096  # `train.evaluate`'s batch
GiB = 2.0**30
RUN_EXTRA_BYTES = 1 << 20  # records.json, config.json, TensorBoard events of one point
CACHE_BYTES_PER_VALUE = 2  # float16 / bfloat16 activations
TOKEN_ID_BYTES = 4  # int32 token ids stored beside them


@dataclasses.dataclass(frozen=True)
class PointPlan:
  """One row of a sweep plan (bytes, FLOPs, seconds)."""
  index: int
  run_id: str
  architecture: str
  n_latents: int
  knob: str  # "k=32" or "lam=0.01"
  token_budget: int
  job: int  # index of the job that runs it
  flops: float  # training compute (`flops.training_flops`)
  n_params: int
  state_bytes: int  # params + Adam moments + counters, whole model
  device_bytes: int  # per device: its shard of the state, gradients, working set
  wall_s: float | None  # FLOPs / throughput; None when no throughput is known
  model_parallel: int
  disk_bytes: int = 0  # still to write under the output directory (checkpoints, export)


@dataclasses.dataclass(frozen=True)
class Plan:
  path: str
  out: str
  points: list[PointPlan]
  jobs: list[list[int]]  # point indices per job
  n_devices: int
  device_memory: float | None  # bytes per device; None: unknown (not checked here)
  memory_source: str
  throughput: float | None  # FLOP/s of all devices together
  throughput_source: str
  caches: dict = dataclasses.field(default_factory=dict)  # {cache dir: bytes}, to harvest
  cache_root: str | None = None  # where those caches go


def device_memory(override_gb: float | None = None, n_devices: int | None = None
                  ) -> tuple[float, str]:
  """(bytes per device, where the number came from).

  An explicit override wins; else `memory_stats()["bytes_limit"]` of the first device
  (GPU/TPU); else the host's physical memory (os.sysconf) shared by the `n_devices`
  CPU devices a run uses (every replica of the state lives in host memory).
  """
  if override_gb is not None:
    return override_gb * GiB, "--device-memory-gb"
  dev = jax.devices()[0]
  try:
    limit = (dev.memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except  # backends without memory stats
    limit = None
  if limit:
    return float(limit), f"{dev.device_kind} memory_stats"
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  n = max(1, n_devices or 1)
  return host / n, f"host memory / {n} {dev.platform} device(s)"


def measured_throughput(n_devices: int) -> tuple[float, str]:
  """(FLOP/s of `n_devices` devices, how it was measured): the best of 3 timed float32
  matmuls on the first device, times the device count (times 1 on CPU, whose devices
  share the host's cores). An upper bound on what a train step reaches."""
  dev = jax.devices()[0]
  n = 1024 if dev.platform == "cpu" else 8192
  a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = math.inf
  for _ in range(3):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  per_device = 2.0 * n**3 / best
  scale = 1 if dev.platform == "cpu" else n_devices
  return per_device * scale, (f"measured {per_device / 1e12:.2f} TFLOP/s float32 matmul on "
                              f"{dev.device_kind} x {scale}")


def estimate(resolved: ml_collections.ConfigDict, d_in: int, n_devices: int) -> dict:
  """Parameter count, whole-model state bytes and per-device bytes of one point.

  The params' shapes come from the architecture's own `init` under `jax.eval_shape`
  (nothing is allocated), so every architecture's extra params are counted.
  """
  arch = saes.get(resolved.sae.architecture)
  n, mp = resolved.sae.n_latents, max(1, int(resolved.train.model_parallel))
  hp = step_lib.hyper(resolved)
  shapes = jax.eval_shape(lambda: arch.init(jax.random.PRNGKey(0), d_in, n,
                                            jnp.zeros((d_in,), jnp.float32), hp))
  leaves = [tuple(s.shape) for s in jax.tree.leaves(shapes)]
  n_params = sum(math.prod(s) for s in leaves)
  sharded = sum(math.prod(s) for s in leaves if n in s)
  # params + 2 Adam moments + int32 counters; sharded leaves split over mp
  state_bytes = 4 * (3 * n_params + n)
  state_dev = 4 * (3 * (sharded / mp + (n_params - sharded)) + n / mp)
  grads_dev = 4 * (sharded / mp + (n_params - sharded))
  n_data = max(1, n_devices // mp)
  train_tokens, eval_tokens = resolved.train.batch_size / n_data, EVAL_BATCH / n_data
  work_dev = 4 * max(train_tokens * (ACTIVATION_COPIES * n / mp + 2 * d_in),
                     eval_tokens * (EVAL_COPIES * n / mp + 2 * d_in))
  return {"n_params": n_params, "state_bytes": int(state_bytes),
          "device_bytes": int(state_dev + grads_dev + work_dev),
          "disk_bytes": int((checkpoint.MAX_TO_KEEP + 1) * state_bytes + 4 * n_params
                            + RUN_EXTRA_BYTES)}


def _du(path: str) -> int:
  """Bytes of the files under `path` (0 if it does not exist)."""
  total = 0
  for root, _, names in os.walk(path):
    for n in names:
      try:
        total += os.lstat(os.path.join(root, n)).st_size
      except OSError:
        pass
  return total


def point_disk_bytes(run_dir: str, full: int) -> int:
  """Bytes point `run_dir` still has to write: none when finished (records.json and its
  export), else its full estimate less what the directory already holds."""
  if (os.path.exists(os.path.join(run_dir, "records.json"))
      and os.path.exists(os.path.join(run_dir, "export", "config.json"))):
    return 0
  return max(0, full - _du(run_dir))


def caches_to_harvest(cfg: ml_collections.ConfigDict, memo: dict) -> dict[str, int]:
  """{cache: bytes} of the activation caches an LM point's harvest would write that no
  complete cache of the same settings holds yet ({} for a synthetic source). Loads no LM
  and reads no corpus: a complete cache is recognised by its meta.json settings (all but
  the corpus hash, which needs the corpus read)."""
  if cfg.data.get("source", "lm") == "synthetic":
    return {}
  d, root = cfg.data, config_lib.cache_root(cfg)
  key = ("describe_lm", d.model, root)
  if key not in memo:
    memo[key] = lm.describe_lm(d.model, root)
  info = memo[key]
  done = memo.setdefault(("complete", root), [
      m for m in (files.read_json(f) for f in glob.glob(
          os.path.join(glob.escape(root), "activations", "*", "meta.json"))) if m])
  n_tokens = int(d.n_train_tokens) + int(d.n_eval_tokens)
  out = {}
  for layer, site in harvest.targets_of(cfg, info["n_layers"]):
    want = harvest.cache_settings(cfg, info["weights_hash"], layer, "", site)
    want.pop("corpus_hash")
    if any(all(m.get(k) == v for k, v in want.items()) for m in done):
      continue
    name = f"{d.model} layer {layer} {site} ({n_tokens:,} tokens)"
    out[name] = n_tokens * (info["d_model"] * CACHE_BYTES_PER_VALUE + TOKEN_ID_BYTES)
  return out


def _d_in(cfg: ml_collections.ConfigDict, memo: dict) -> int:
  """d_in of a config's activations without loading the LM: the generator's d_in for a
  synthetic source, else d_model from the model's config (`lm.describe_lm`, memoised on
  disk), the width of the residual stream."""
  if cfg.data.get("source", "lm") == "synthetic":
    return int(cfg.data.generator.d_in)
  key = (cfg.data.model, config_lib.cache_root(cfg))
  if key not in memo:
    memo[key] = lm.describe_lm(*key)["d_model"]
  return memo[key]


def _knob(resolved) -> str:
  if resolved.sae.k is not None:
    return f"k={resolved.sae.k}"
  return f"lam={resolved.sae.sparsity_coefficient:g}"


def groups(n_points: int, group_size: int) -> list[list[int]]:
  """Consecutive point indices, `group_size` per job. Raises ConfigError if < 1."""
  if group_size < 1:
    raise ConfigError(f"--group-size={group_size} must be at least 1")
  return [list(range(i, min(n_points, i + group_size))) for i in range(0, n_points, group_size)]


def plan(path: str, cli_overrides: dict | None = None, group_size: int = 1,
         device_memory_gb: float | None = None, device_flops: float | None = None,
         n_devices: int | None = None, only: list[int] | None = None,
         measure: bool = False, elsewhere: bool = False,
         override_points: bool = False) -> Plan:
  """The plan of a sweep: per point its run id, FLOPs, memory and (if a throughput is
  given or `measure`) wall time, and the grouping into jobs. Harvests nothing, loads no
  LM, creates no directory.

  Args:
    device_memory_gb: per-device memory; default: of this process's devices
      (`device_memory`), or unknown (not checked here) when `elsewhere`.
    device_flops: FLOP/s of ONE device; default: measured if `measure`, else unknown.
    n_devices: devices a point trains on when train.n_devices is unset; default: this
      process's.
    only: plan only these point indices.
    elsewhere: the points run on other machines (SLURM), not on this process's devices.
    override_points: command-line keys replace the points' own (`points.prepare`).

  Raises:
    ConfigError: a bad sweep file or point.
  """
  base, points, configs = points_lib.prepare(path, cli_overrides, override_points)
  jobs = groups(len(points), group_size)
  job_of = {i: j for j, idx in enumerate(jobs) for i in idx}
  n_dev = n_devices or len(jax.devices())
  if device_memory_gb is None and elsewhere:
    mem, mem_src = None, "not checked here: pass --device-memory-gb; each job checks its own"
  else:
    mem, mem_src = device_memory(device_memory_gb, n_dev)
  if device_flops is not None:
    tput, tput_src = device_flops * n_dev, f"--device-flops {device_flops:.3g} x {n_dev} devices"
  elif measure:
    tput, tput_src = measured_throughput(n_dev)
  else:
    tput, tput_src = None, "not estimated"
  memo: dict = {}
  rows = []
  caches: dict[str, int] = {}
  out = os.path.join(base.out_dir, base.name)
  for i in (range(len(points)) if only is None else only):
    d_in = _d_in(configs[i], memo)
    resolved = config_lib.resolve(configs[i], d_in)
    n_run = resolved.train.n_devices or n_dev
    e = estimate(resolved, d_in, n_run)
    rid = points_lib.run_id(points[i], resolved)
    caches.update(caches_to_harvest(configs[i], memo))
    f = flops_lib.training_flops(d_in, resolved.sae.n_latents, resolved.train.token_budget)
    rows.append(PointPlan(
        index=i, run_id=rid,
        architecture=resolved.sae.architecture, n_latents=resolved.sae.n_latents,
        knob=_knob(resolved), token_budget=resolved.train.token_budget, job=job_of[i],
        flops=f, n_params=e["n_params"], state_bytes=e["state_bytes"],
        device_bytes=e["device_bytes"], wall_s=None if tput is None else f / tput,
        model_parallel=int(resolved.train.model_parallel),
        disk_bytes=point_disk_bytes(os.path.join(out, rid), e["disk_bytes"])))
  return Plan(path=path, out=out, points=rows, jobs=jobs,
              n_devices=n_dev, device_memory=mem, memory_source=mem_src, throughput=tput,
              throughput_source=tput_src, caches=caches,
              cache_root=os.path.join(config_lib.cache_root(base), "activations"))


def check_disk(p: Plan) -> None:
  """Refuse a plan whose outputs (checkpoints, exports) and activation caches still to
  write exceed the free space of their disk (the two directories may share one).

  Raises:
    StorageError: one line with the bytes needed, the bytes free and the directory.
  """
  need_out = sum(pt.disk_bytes for pt in p.points)
  need_cache = sum(p.caches.values())
  wants = [(p.out, need_out, "out_dir=...", f"checkpoints and exports of "
            f"{sum(pt.disk_bytes > 0 for pt in p.points)} unfinished point(s)")]
  if need_cache and p.cache_root:
    if files.same_disk(p.out, p.cache_root):
      wants[0] = (p.out, need_out + need_cache, "out_dir=... or data.cache_dir=...",
                  wants[0][3] + f" plus {len(p.caches)} activation cache(s) to harvest")
    else:
      wants.append((p.cache_root, need_cache, "data.cache_dir=...",
                    f"{len(p.caches)} activation cache(s) to harvest"))
  for where, need, setting, what in wants:
    free = files.free_bytes(where)
    if need > free:
      raise StorageError(
          f"the sweep needs about {files.human_bytes(need)} on the disk of {where} ({what}) "
          f"but {files.human_bytes(free)} is free on {files.mount_point(where)}; free space "
          f"or set {setting} on a larger disk (sae-jax sweep --dry-run lists each point)")


def check_fits(p: Plan) -> None:
  """Refuse a plan with a point whose per-device memory exceeds the device's.

  Raises:
    ConfigError: one line with the point and the numbers.
  """
  if p.device_memory is None:
    return
  for pt in p.points:
    if pt.device_bytes > p.device_memory:
      raise ConfigError(
          f"point {pt.run_id}: {pt.device_bytes / GiB:.3g} GiB per device (parameters + Adam state "
          f"{pt.state_bytes / pt.model_parallel / GiB:.3g} GiB over train.model_parallel="
          f"{pt.model_parallel} shards, plus gradients and step activations) exceeds the "
          f"{p.device_memory / GiB:.3g} GiB device memory ({p.memory_source}); raise "
          f"train.model_parallel, lower n_latents or train.batch_size")


def _duration(s: float | None) -> str:
  if s is None:
    return "-"
  if s < 120:
    return f"{s:.1f} s"
  if s < 7200:
    return f"{s / 60:.1f} min"
  return f"{s / 3600:.1f} h"


def format_plan(p: Plan, executor: str) -> str:
  """The dry-run table: one row per point, then the totals and the assumptions."""
  head = ("#", "run_id", "arch", "n_latents", "sparsity", "tokens", "job", "FLOPs",
          "params+Adam GiB", "per-device GiB", "disk", "est. wall")
  rows = [(str(pt.index), pt.run_id, pt.architecture, str(pt.n_latents), pt.knob,
           f"{pt.token_budget:,}", str(pt.job) if executor != "inline" else "-",
           f"{pt.flops:.3g}", f"{pt.state_bytes / GiB:.3f}",
           f"{pt.device_bytes / GiB:.3f}" + (" !" if p.device_memory is not None and
                                              pt.device_bytes > p.device_memory else ""),
           files.human_bytes(pt.disk_bytes) if pt.disk_bytes else "done",
           _duration(pt.wall_s)) for pt in p.points]
  widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
  line = lambda r: "  ".join(v.ljust(w) if c < 3 else v.rjust(w)  # noqa: E731
                             for c, (v, w) in enumerate(zip(r, widths)))
  total_f = sum(pt.flops for pt in p.points)
  walls = [pt.wall_s for pt in p.points if pt.wall_s is not None]
  jobs = ("inline: every point in this process, in order" if executor == "inline" else
          f"{len(p.jobs)} {executor} job(s) of up to {max(map(len, p.jobs))} point(s)")
  mem = ("unknown" if p.device_memory is None else f"{p.device_memory / GiB:.2f} GiB")
  out = [f"sweep {p.path} -> {p.out}", line(head), *(line(r) for r in rows), "",
         f"{len(p.points)} points; {jobs}; {total_f:.3g} FLOPs in all"
         + (f", about {_duration(sum(walls))} of training" if walls else ""),
         f"devices per point: {p.n_devices} (train.n_devices unset: all visible); device memory "
         f"{mem} ({p.memory_source})",
         f"wall time = FLOPs / throughput, throughput {p.throughput_source}"
         + (f" = {p.throughput / 1e12:.3g} TFLOP/s" if p.throughput else "")
         + "; a lower bound: TopK, AuxK, evaluation and reading are not counted",
         "memory = params + 2 Adam moments (float32; latent leaves split over "
         "train.model_parallel) + gradients + step working set; ' !' = does not fit",
         disk_summary(p)]
  return "\n".join(out)


def disk_summary(p: Plan) -> str:
  """The plan's disk line: what is still to write under the outputs and the caches, and
  what is free there."""
  need_out = sum(pt.disk_bytes for pt in p.points)
  line = (f"disk = checkpoints ({checkpoint.MAX_TO_KEEP} kept + 1 being written) + export + "
          f"logs per unfinished point: {files.human_bytes(need_out)} under {p.out} "
          f"({files.human_bytes(files.free_bytes(p.out))} free)")
  if p.caches:
    line += (f"; activation caches to harvest: "
             + ", ".join(f"{k} {files.human_bytes(v)}" for k, v in p.caches.items())
             + f" under {p.cache_root} ({files.human_bytes(files.free_bytes(p.cache_root))} free)")
  return line
