"""The trainer: one or many SAEs over one pass of the data, each evaluated on the held-out
split at log-spaced token counts and checkpointed with Orbax for exact resume.

    records = train(config, source, run_dir)              # one SAE
    all_records = train_many(configs, source, run_dirs)   # several, one data pass

Metrics are pulled to the host one step late, so dispatch never blocks on them. What is
measured at an evaluation point beyond `sae_jax.training.metrics.evaluate` comes from the
caller's `evaluators` (functions (config, state, source) -> dict of scalars): the sweep
launcher passes the evaluation suite's (`sae_jax.evals.TRAINING_EVALUATORS`), so this
layer never imports the evaluations above it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from sae_jax import config as config_lib, files, signals
from sae_jax.data import batches
from sae_jax.errors import ConfigError, TrainingDivergedError
from sae_jax.training import (checkpoint, diagnostics, distributed, flops, optimizer, sharding,
                              tracking)
from sae_jax.training.metrics import evaluate
from sae_jax.training.step import StepConfig, TrainState, init_state, make_train_step

# (resolved config, train state, activation source) -> flat scalars for the record
Evaluator = Callable[[ml_collections.ConfigDict, TrainState, object], dict]
# A diverged run's marker in its run directory (`_Run.fail`); a finished run has none.
FAILED = "failed.json"


def eval_steps(n_steps: int, n_points: int, first_fraction: float) -> list[int]:
  """Log-spaced steps in [first_fraction * n_steps, n_steps], always ending at n_steps."""
  first = max(1.0, first_fraction * n_steps)
  pts = np.geomspace(first, n_steps, n_points) if n_points > 1 else [n_steps]
  return sorted({int(min(n_steps, max(1, round(p)))) for p in pts} | {n_steps})


def _record(c: ml_collections.ConfigDict, info: dict, d_in: int, step: int, metrics: dict,
            train_dead_fraction: float, wall_time_s: float) -> dict:
  """One row of the results table (README, "What the quickstart does")."""
  tokens = step * c.train.batch_size
  return {**info, "architecture": c.sae.architecture, "n_latents": c.sae.n_latents,
          "k": c.sae.k, "sparsity_coefficient": c.sae.sparsity_coefficient, "d_in": d_in,
          "tokens": tokens, "step": step,
          "final": step == c.train.token_budget // c.train.batch_size,
          "flops": flops.training_flops(d_in, c.sae.n_latents, tokens), **metrics,
          "train_dead_fraction": train_dead_fraction, "wall_time_s": wall_time_s,
          "lr": c.train.lr, "token_budget": c.train.token_budget,
          # as JSON has it (tuples become lists), so a record restored from a checkpoint's
          # metadata equals the one made in memory
          "config": json.loads(json.dumps(c.to_dict(), default=str))}


class _Run:
  """One SAE of a data pass: its jitted step, state, checkpoints, schedule and records."""

  def __init__(self, c: ml_collections.ConfigDict, source: batches.ActivationSource,
               run_dir: str, run_info: dict | None, evaluators: Sequence[Evaluator] = ()):
    self.c = c = config_lib.resolve(c, source.d_in, source.stats)
    self.source, self.run_dir, self.info = source, run_dir, dict(run_info or {})
    self.evaluators = tuple(evaluators)
    self.d_in, n_latents, B = source.d_in, c.sae.n_latents, c.train.batch_size
    self.n_steps = c.train.token_budget // B
    self.mesh = mesh = sharding.make_mesh(c.train.n_devices, c.train.model_parallel)
    n_data, n_model = mesh.shape[sharding.DATA], mesh.shape[sharding.MODEL]
    if B % n_data:
      raise ConfigError(
          f"train.batch_size={B} does not split over {n_data} devices; use a multiple of {n_data}")
    if n_latents % n_model:
      raise ConfigError(
          f"n_latents={n_latents} does not split over {n_model} latent shards "
          f"(train.model_parallel); use a multiple of {n_model}")
    if source.n_tokens("train") < B:
      raise ConfigError(
          f"the cache has {source.n_tokens('train')} training tokens, fewer than one batch ({B})")
    sc = StepConfig.from_config(c)
    opt = optimizer.from_config(c, project_decoder=sc.arch.unit_norm_decoder)
    scale = batches.norm_scale(c.sae.input_norm, source.stats, self.d_in)

    n_sample = min(c.sae.geometric_median_samples, source.n_tokens("train"))
    key = jax.random.PRNGKey(c.seed)

    def fresh_state():
      if hasattr(source, "sample_rows"):  # a source that computes rows (data.cache="none")
        rows = source.sample_rows(n_sample, c.seed)
      else:
        rows = np.sort(np.random.default_rng([c.seed, 1 << 20]).choice(
            source.n_tokens("train"), n_sample, replace=False))
      return init_state(key, source.read("train", rows), c, scale, opt)

    self.ckpt = checkpoint.Checkpointer(f"{run_dir}/checkpoints")
    template = jax.eval_shape(lambda x: init_state(key, x, c, scale, opt),
                              jax.ShapeDtypeStruct((n_sample, self.d_in), jnp.float32))
    state_sh = sharding.state_shardings(template, mesh, n_latents)
    self.step_fn = make_train_step(mesh, sc, opt, state_sh)
    restored = self.ckpt.restore_latest(template, state_sh)
    if restored is None:
      self.state = jax.device_put(fresh_state(), state_sh)
      meta = {"records": [], "wall_time_s": 0.0}
      self.last_saved = None
    else:
      self.state, meta = restored
      self.last_saved = int(self.state.step)
    # saved steps whose state's own metrics passed `check` (the latest saved one is
    # checked one step later, when its metrics arrive)
    self.last_good, self.unchecked = self.last_saved, None
    # the divergence bound's reference (`check`), kept in the checkpoints for a resume
    self.initial_nmse = meta.get("initial_normalized_mse")
    self.start_step = int(self.state.step)
    self.records: list[dict] = list(meta["records"])
    # a silent sparsity knob is warned about once and written into every later record
    self.knob_check = diagnostics.KnobCheck(sc, self.n_steps, c.train.lr, self.start_step)
    self.run_warnings: list[str] = list(meta.get("run_warnings", []))
    self.wall0, self.t0 = float(meta["wall_time_s"]), time.time()
    self.evals = set(eval_steps(self.n_steps, c.train.n_eval_points, c.train.first_eval_fraction))
    self.pending = None  # (step, metrics) of the previous step, pulled to host one step late
    self.tracker = tracking.Tracker(c, run_dir, self.d_in, self.info, self.start_step)

  def wall_time(self) -> float:
    return self.wall0 + time.time() - self.t0

  def check(self, step: int, m: dict) -> dict:
    """Raise TrainingDivergedError if the metrics of step `step` (of the state after
    `step` updates) show divergence: a non-finite loss or normalized MSE, or a normalized
    MSE above train.divergence_factor x max(first step's, 1) (0: no bound)."""
    loss, nmse = float(m["loss"]), float(m["normalized_mse"])
    t = self.c.train
    if self.initial_nmse is None and math.isfinite(nmse):
      self.initial_nmse = nmse
    factor = t.get("divergence_factor", 10.0)
    bound = factor * max(self.initial_nmse or 1.0, 1.0)
    if not (math.isfinite(loss) and math.isfinite(nmse)):
      why = f"loss is {loss}" if not math.isfinite(loss) else f"normalized MSE is {nmse}"
    elif factor and nmse > bound:
      why = (f"normalized MSE {nmse:.3g} exceeds {bound:.3g} (train.divergence_factor="
             f"{factor:g} x max(its initial {self.initial_nmse:.3g}, 1))")
    else:
      if step == self.unchecked:
        self.last_good, self.unchecked = step, None
      return m
    where = f"step {self.last_good}" if self.last_good is not None else "none"
    e = TrainingDivergedError(f"{why} at step {step}; lower train.lr (now {t.lr:.3g}); last "
                              f"good checkpoint: {where} in {self.run_dir}/checkpoints")
    e.step, e.last_good_step = step, self.last_good
    raise e

  def fail(self, e: TrainingDivergedError) -> TrainingDivergedError:
    """Mark this run failed in its own directory (`FAILED`: the error, the step, the last
    good checkpoint and the records so far), delete a checkpoint saved after the last
    good one (its state diverged; a relaunch resumes from the good one) and release the
    checkpointer."""
    if self.unchecked is not None:
      self.ckpt.delete(self.unchecked)
      self.unchecked = None
    if distributed.is_primary():
      files.write_json_atomic(f"{self.run_dir}/{FAILED}", {
          "failed": True, "error": str(e), "step": getattr(e, "step", None),
          "last_good_checkpoint": getattr(e, "last_good_step", self.last_good),
          "checkpoints": f"{self.run_dir}/checkpoints", "lr": self.c.train.lr,
          "records": [r for r in self.records if r["step"] <= (self.last_good or 0)]})
    self.pending = None
    self.ckpt.close()
    return e

  def step(self, step: int, x: jax.Array) -> dict | None:
    """Train on batch `step`; evaluate and checkpoint on schedule. Returns the previous
    step's metrics (host values) when available."""
    self.state, metrics = self.step_fn(self.state, x)
    previous = None
    if self.pending is not None:
      previous = self.check(*jax.device_get(self.pending))
      self.tracker.train_step(self.pending[0], previous)
    self.pending = (step, metrics)
    done = step + 1
    warning = self.knob_check.observe(done, self.state, x)
    if warning is not None:
      self.run_warnings.append(warning)
      if distributed.is_primary():
        warnings.warn(f"{self.info.get('run_id', self.run_dir)}: {warning}", stacklevel=2)
    if done in self.evals or done % self.c.train.checkpoint_every_steps == 0:
      self.check(*jax.device_get(self.pending))
      if done in self.evals:
        measured = evaluate(self.state, self.source, self.c)
        # the evaluated state is the step's update, not yet checked: a diverged one stops
        # here, before the evaluators (ground truth, the suite) see non-finite codes
        self.check(done, {"loss": measured["normalized_mse"], **measured})
        for evaluator in self.evaluators:
          measured.update(evaluator(self.c, self.state, self.source))
        self.tracker.eval_point(done, measured)
        self.records.append(_record(self.c, self.info, self.d_in, done, measured,
                                    float(metrics["dead_fraction"]), self.wall_time()))
        self.records[-1]["run_warnings"] = list(self.run_warnings)
      self.ckpt.save(done, self.state, {"records": self.records, "wall_time_s": self.wall_time(),
                                        "initial_normalized_mse": self.initial_nmse,
                                        "run_warnings": self.run_warnings})
      self.last_saved = self.unchecked = done
    return previous


  def save_now(self, done: int) -> None:
    """Checkpoint at step boundary `done` (a stop on a signal), unless just saved."""
    if self.pending is not None:
      self.check(*jax.device_get(self.pending))
    if self.last_saved != done and done > self.start_step:
      self.ckpt.save(done, self.state, {"records": self.records, "wall_time_s": self.wall_time(),
                                        "initial_normalized_mse": self.initial_nmse,
                                        "run_warnings": self.run_warnings})
      self.last_saved = done

  def close(self) -> None:
    if self.pending is not None:
      self.tracker.train_step(self.pending[0], self.check(*jax.device_get(self.pending)))
    self.tracker.close()
    self.ckpt.close()


def _stop_step(runs: list[_Run], failed: dict, done: int, elapsed_s: float,
               steps_done: int) -> int:
  """Where a pass stops on a signal that arrived in step `done - 1`: at `done` (the default,
  train.preempt_checkpoint_within_s = 0), or at the first step boundary where a run of the
  pass saves anyway (an evaluation point or a multiple of train.checkpoint_every_steps)
  if, at this pass's mean step time so far, it is reached within that many seconds; that
  spares the work between the extra checkpoint and the scheduled one at the cost of
  running a little longer after the signal."""
  within = max(r.c.train.get("preempt_checkpoint_within_s", 0.0) or 0.0
               for j, r in enumerate(runs) if j not in failed)
  if within <= 0 or steps_done <= 0:
    return done
  due = [min([e for e in r.evals if e >= done]
             + [-(-done // r.c.train.checkpoint_every_steps) * r.c.train.checkpoint_every_steps])
         for j, r in enumerate(runs) if j not in failed and r.start_step < done <= r.n_steps]
  if not due:
    return done
  nxt = min(min(due), max(r.n_steps for r in runs))
  return nxt if (nxt - done) * elapsed_s / steps_done <= within else done


def data_pass_key(c: ml_collections.ConfigDict) -> tuple:
  """SAEs whose configs agree on this key see the same batches in the same order and
  can share one pass over the data (`train_many`)."""
  return (c.seed, c.train.batch_size, c.train.n_devices, c.train.model_parallel,
          c.data.get("shuffle_block_rows", 0), c.data.get("shuffle_buffer_blocks", 16))


def train(c: ml_collections.ConfigDict, source: batches.ActivationSource, run_dir: str,
          run_info: dict | None = None, progress: bool = True,
          evaluators: Sequence[Evaluator] = ()) -> list[dict]:
  """Train one SAE to its token budget, resuming from run_dir's last checkpoint.

  Args:
    c: config (resolved here against source.d_in).
    source: activation source with "train" and "eval" splits.
    run_dir: checkpoints go to run_dir/checkpoints.
    run_info: fields copied into every record (sweep name, run id, model, layer, ...).
    evaluators: more measures for every evaluation record (`Evaluator`), e.g.
      `sae_jax.evals.TRAINING_EVALUATORS` (ground truth, `train.eval_measures`).

  Returns:
    One record per evaluation point (dicts; see README "Results table"), the last with
    final=True.

  Raises:
    ConfigError: bad config, or a batch that does not split over the devices.
    TrainingDivergedError: NaN/inf loss, or a normalized MSE above
      train.divergence_factor x its initial value (`_Run.check`); the last good checkpoint
      is kept and run_dir/failed.json says so.
  """
  return train_many([c], source, [run_dir], [run_info], progress, evaluators)[0]


@contextlib.contextmanager
def _closing_on_error(bar):
  """Erase the progress bar when an error leaves the block, so the CLI's one-line error
  starts its own line."""
  try:
    yield
  except BaseException:
    bar.close()
    raise


def train_many(configs: list[ml_collections.ConfigDict], source: batches.ActivationSource,
               run_dirs: list[str], run_infos: list[dict | None] | None = None,
               progress: bool = True, evaluators: Sequence[Evaluator] = (),
               keep_going: bool = False) -> list[list[dict] | TrainingDivergedError]:
  """Train several SAEs in one pass over the data: each batch is read once and fed to
  every SAE, each with its own state, checkpoints and schedule, so each result equals
  training it alone (`train`). Runs may have different token budgets and may resume
  from different steps; the pass covers the union.

  A run that diverges (`train`) is marked failed in its run directory (failed.json). With
  `keep_going` it is dropped from the pass, the others train to the end, and its entry
  of the result is the TrainingDivergedError (with .step and .last_good_step) instead of
  records; without, the error is raised at once.

  Raises:
    ConfigError: the configs disagree on `data_pass_key` (seed, batch size, devices),
      or any error of `train`.
  """
  run_infos = run_infos or [None] * len(configs)
  keys = {data_pass_key(config_lib.resolve(c)) for c in configs}
  if len(keys) > 1:
    raise ConfigError(
        f"SAEs sharing a data pass need the same seed, batch size and devices; got {sorted(keys)}")
  runs = [_Run(c, source, d, i, evaluators) for c, d, i in zip(configs, run_dirs, run_infos)]
  mesh, B, seed = runs[0].mesh, runs[0].c.train.batch_size, runs[0].c.seed
  start, end = min(r.start_step for r in runs), max(r.n_steps for r in runs)
  batch_sh = sharding.batch_sharding(mesh)
  rows = distributed.local_rows(batch_sh, B)
  desc = runs[0].info.get("run_id", "train") if len(runs) == 1 else f"{len(runs)} SAEs"
  bar = tqdm(total=end, initial=start, unit="step", desc=desc, leave=False,
             disable=not (progress and distributed.is_primary()))
  failed: dict[int, TrainingDivergedError] = {}

  def drop(j: int, e: TrainingDivergedError) -> None:
    failed[j] = runs[j].fail(e)
    if not keep_going:
      bar.close()
      for i, run in enumerate(runs):
        if i not in failed:
          run.ckpt.close()
      raise e

  d = runs[0].c.data
  order = getattr(source, "order", None) or (  # a source's own order (data.cache="none")
      batches.BlockOrder(d.shuffle_block_rows, d.shuffle_buffer_blocks)
      if d.get("shuffle_block_rows") else None)
  host_batches = batches.stream(source, B, seed, start, end, rows=rows, order=order)
  stop_at, t_loop = None, time.time()  # a signal's stop step (`_stop_step`), once asked
  with (jax.set_mesh(mesh), signals.deferred(),  # the next batch is sent to the devices while this one trains
        _closing_on_error(bar)):
    for step, x in batches.prefetch_to_device(
        host_batches, lambda x: distributed.global_batch(batch_sh, x, B)):
      for j, run in enumerate(runs):
        if j not in failed and run.start_step <= step < run.n_steps:
          try:
            m = run.step(step, x)
          except TrainingDivergedError as e:
            drop(j, e)
            continue
          if m is not None and len(runs) == 1:
            bar.set_postfix(nmse=f"{float(m['normalized_mse']):.4f}", refresh=False)
      bar.update(1)
      if len(failed) == len(runs):
        break
      if signals.requested() is not None:  # SIGTERM / SIGINT: save at a step boundary
        if stop_at is None:
          stop_at = _stop_step(runs, failed, step + 1, time.time() - t_loop, step + 1 - start)
        if step + 1 >= stop_at:
          bar.close()
          for j, run in enumerate(runs):
            if j not in failed:
              if run.start_step <= step < run.n_steps:
                run.save_now(step + 1)
              run.tracker.close()
              run.ckpt.close()
          raise signals.Interrupted(signals.requested(), f"checkpointed at step {step + 1}")
  bar.close()
  for j, run in enumerate(runs):
    if j not in failed:
      try:
        run.close()
      except TrainingDivergedError as e:
        drop(j, e)
  return [failed.get(j, run.records) for j, run in enumerate(runs)]
