"""Training: one pure, jitted train step sharded over a `data` mesh axis, evaluation on the
held-out split at log-spaced token counts, and Orbax checkpoints for exact resume.

    state, metrics = train_step(state, x_BxD)

The state holds everything that changes during training (params, Adam moments, the
per-latent count of tokens since each latent last fired, step), so a checkpoint of it
plus the step (= the data position, see `sae_jax.data.batch_rows`) resumes a run
exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from sae_jax import (checkpoint, config as config_lib, data, distributed, flops, host_memory,
                     optimizer, sae, sharding, sparse)
from sae_jax.geometric_median import geometric_median


class TrainingDivergedError(config_lib.ConfigError):
  """The loss became NaN or inf; the message names the step and the last good checkpoint
  (a user-facing error: lower train.lr or check the activations)."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken (= batches consumed)
  params: sae.Params
  opt_state: Any
  extras: Any  # the architecture's non-gradient state (e.g. BatchTopK threshold)
  tokens_since_fired_N: jax.Array  # int32 [n_latents], clamped at dead_tokens
  variance: jax.Array  # float32 scalar: E||x - E x||^2 of the normalised inputs
  norm_scale: jax.Array  # float32 scalar: constant of the "mean_norm" normalisation


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static (compile-time) settings of a train step."""
  architecture: str
  hp: sae.Hyper
  dead_tokens: int
  input_norm: str

  @property
  def arch(self) -> sae.Architecture:
    return sae.get(self.architecture)

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict) -> "StepConfig":
    """From a resolved config (see `config.resolve`)."""
    return cls(architecture=c.sae.architecture, hp=hyper(c), dead_tokens=c.train.dead_tokens,
               input_norm=c.sae.input_norm)


def hyper(c: ml_collections.ConfigDict) -> sae.Hyper:
  """The architecture hyperparameters of a resolved config."""
  s, t = c.sae, c.train
  prefixes = tuple(int(p) for p in s.prefixes) if s.prefixes else ()
  sparse_step = t.get("topk_step") == "sparse" and sae.get(s.architecture).sparse_step
  return sae.Hyper(n_latents=s.n_latents, k=s.k, sparsity_coefficient=s.sparsity_coefficient,
                   k_aux=c.train.k_aux or 0, aux_coef=c.train.aux_coef, multi_topk=s.multi_topk,
                   bandwidth=s.bandwidth, initial_threshold=s.initial_threshold,
                   target_activation=s.target_activation, prefixes=prefixes,
                   threshold_momentum=s.threshold_momentum,
                   sparse_impl="xla" if sparse_step else None,
                   compute_dtype=t.get("compute_dtype", "float32"))


def train_step(state: TrainState, x_BxD: jax.Array, *, sc: StepConfig,
               opt: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One update of any architecture: its loss, the decoder-gradient projection when its
  decoder rows are unit norm (Gao et al. 2024), Adam, the projection back to the sphere,
  dead-latent counters. Pure; jit it with `make_train_step`."""
  arch = sc.arch
  x_BxD = data.normalize(x_BxD, sc.input_norm, state.norm_scale)
  dead_N = state.tokens_since_fired_N >= sc.dead_tokens

  def loss_fn(params):
    out = arch.loss(params, x_BxD, state.extras, sc.hp, variance=state.variance, dead_N=dead_N)
    return out.loss, out

  (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = opt.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if arch.unit_norm_decoder:
    params = optimizer.renormalize_decoder(params)
  B = x_BxD.shape[0]
  since = jnp.minimum(state.tokens_since_fired_N + B, sc.dead_tokens)
  since = jnp.where(out.fired_N, 0, since).astype(jnp.int32)
  metrics = {"loss": out.loss, "normalized_mse": out.normalized_mse,
             "sparsity_loss": out.sparsity_loss, "aux_loss": out.aux_loss, "l0": out.l0,
             "dead_fraction": jnp.mean(dead_N.astype(jnp.float32))}
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                      extras=out.extras, tokens_since_fired_N=since)
  return new, metrics


make_mesh = sharding.make_mesh


def make_train_step(mesh: Mesh, sc: StepConfig, opt: optax.GradientTransformation,
                    state_sharding=None
                    ) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
  """jit the train step once: the state laid out by `state_sharding` (default:
  replicated), the batch split over `data`, metrics replicated, the state donated.
  Call it inside `jax.set_mesh(mesh)` when the mesh has a `model` axis > 1, so TopK
  runs exactly across latent shards (`sharding.top_k`)."""
  replicated = NamedSharding(mesh, P())
  state_sharding = replicated if state_sharding is None else state_sharding
  if mesh.devices.ravel()[0].platform == "cpu":
    host_memory.retain_freed_memory()  # no page faults on every step's temporaries
  if sc.hp.sparse_impl is not None:  # the C++ kernels on one CPU device, else XLA ops
    sc = dataclasses.replace(sc, hp=dataclasses.replace(sc.hp, sparse_impl=sparse.impl_for(mesh)))
  return jax.jit(functools.partial(train_step, sc=sc, opt=opt),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)


def init_state(key: jax.Array, sample_BxD: np.ndarray, c: ml_collections.ConfigDict,
               norm_scale: float, opt: optax.GradientTransformation) -> TrainState:
  """Initial state: the architecture's init with b_pre at the geometric median of the
  (normalised) sample, and the variance of the sample for the normalized MSE."""
  arch, hp = sae.get(c.sae.architecture), hyper(c)
  x = data.normalize(jnp.asarray(sample_BxD), c.sae.input_norm, norm_scale)
  variance = jnp.mean(jnp.sum((x - jnp.mean(x, axis=0)) ** 2, axis=-1))
  params = arch.init(key, x.shape[1], c.sae.n_latents, geometric_median(x), hp)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                    extras=arch.init_extras(c.sae.n_latents, hp),
                    tokens_since_fired_N=jnp.zeros((c.sae.n_latents,), jnp.int32),
                    variance=variance.astype(jnp.float32),
                    norm_scale=jnp.asarray(norm_scale, jnp.float32))


def _eval_sums(params, extras, x_BxD, norm_scale, *, sc: StepConfig):
  x = data.normalize(x_BxD, sc.input_norm, norm_scale)
  z = sc.arch.encode(params, x, extras, sc.hp)
  err = x - sc.arch.decode(params, z)
  fired = z != 0
  return {"sq_err": jnp.sum(err**2), "sum_x_D": jnp.sum(x, axis=0), "sq_x": jnp.sum(x**2),
          "l0": jnp.sum(fired), "fires_N": jnp.sum(fired, axis=0)}


@functools.lru_cache(maxsize=16)
def _eval_fn(mesh: Mesh | None, sc: StepConfig):
  """_eval_sums jitted with replicated outputs on `mesh` (every process can read them),
  inside the mesh so TopK runs across latent shards."""
  if mesh is None:
    return jax.jit(functools.partial(_eval_sums, sc=sc))
  fn = jax.jit(functools.partial(_eval_sums, sc=sc), out_shardings=NamedSharding(mesh, P()))

  def run(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return run


def evaluate(state: TrainState, source: data.ActivationSource, c: ml_collections.ConfigDict,
             batch_size: int = 4096) -> dict:
  """Metrics on every row of the held-out split.

  normalized_mse = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance
  unexplained, Gao et al. 2024 Sec. 2.1), in the SAE's (normalised) input space; mse is
  the mean over tokens of ||x - x_hat||^2 / d_in; l0 the mean number of active latents;
  dead_fraction the fraction of latents that never fire on the split; dense_fraction
  those that fire on more than 10% of its tokens.
  """
  n, sq_err, sq_x, l0 = 0, 0.0, 0.0, 0.0
  sum_x = None
  fires = np.zeros((c.sae.n_latents,), np.int64)
  sc = StepConfig.from_config(c)
  mesh = getattr(state.params["W_dec"].sharding, "mesh", None)
  for x in data.eval_batches(source, batch_size):
    s = jax.device_get(_eval_fn(mesh, sc)(state.params, state.extras, x, state.norm_scale))
    n += len(x)
    sq_err += float(s["sq_err"])
    sq_x += float(s["sq_x"])
    l0 += float(s["l0"])
    sum_x = s["sum_x_D"].astype(np.float64) + (0 if sum_x is None else sum_x)
    fires += s["fires_N"]
  d_in = source.d_in
  total_var = sq_x - float(np.sum(sum_x**2)) / n
  truth = ground_truth_metrics(state, source, sc) if hasattr(source, "true_directions_FxD") else {}
  return {"normalized_mse": sq_err / total_var, "mse": sq_err / (n * d_in), "l0": l0 / n,
          "dead_fraction": float(np.mean(fires == 0)),
          "dense_fraction": float(np.mean(fires > 0.1 * n)), "eval_tokens": n, **truth}


def ground_truth_metrics(state: TrainState, source, sc: StepConfig, max_tokens: int = 8192
                         ) -> dict:
  """`sae_jax.ground_truth.evaluate_against_truth` on the first max_tokens held-out rows
  of a synthetic source (keys prefixed "truth_"). Decoder rows are compared with the true
  directions in the SAE's input space, which is the generator's up to a constant for
  input_norm "none" and "mean_norm"."""
  from sae_jax import ground_truth
  rows = np.arange(min(max_tokens, source.n_tokens("eval")))
  x = data.normalize(jnp.asarray(source.read("eval", rows)), sc.input_norm, state.norm_scale)
  params = jax.device_get(state.params)
  z = sc.arch.encode(params, x, jax.device_get(state.extras), sc.hp)
  x_hat = sc.arch.decode(params, z)
  metrics = ground_truth.evaluate_against_truth(
      np.asarray(params["W_dec"]), np.asarray(z), np.asarray(x), np.asarray(x_hat),
      source.true_directions_FxD, source.true_acts("eval", rows))
  return {f"truth_{k}": v for k, v in metrics.items()}


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

  def __init__(self, c: ml_collections.ConfigDict, source: data.ActivationSource,
               run_dir: str, run_info: dict | None):
    self.c = c = config_lib.resolve(c, source.d_in)
    self.source, self.run_dir, self.info = source, run_dir, dict(run_info or {})
    self.d_in, n_latents, B = source.d_in, c.sae.n_latents, c.train.batch_size
    self.n_steps = c.train.token_budget // B
    self.mesh = mesh = sharding.make_mesh(c.train.n_devices, c.train.model_parallel)
    n_data, n_model = mesh.shape[sharding.DATA], mesh.shape[sharding.MODEL]
    if B % n_data:
      raise config_lib.ConfigError(
          f"train.batch_size={B} does not split over {n_data} devices; use a multiple of {n_data}")
    if n_latents % n_model:
      raise config_lib.ConfigError(
          f"n_latents={n_latents} does not split over {n_model} latent shards "
          f"(train.model_parallel); use a multiple of {n_model}")
    if source.n_tokens("train") < B:
      raise config_lib.ConfigError(
          f"the cache has {source.n_tokens('train')} training tokens, fewer than one batch ({B})")
    sc = StepConfig.from_config(c)
    opt = optimizer.make(c.train.lr, c.train.adam_b1, c.train.adam_b2, c.train.adam_eps,
                         project_decoder=sc.arch.unit_norm_decoder)
    scale = data.norm_scale(c.sae.input_norm, source.stats, self.d_in)

    n_sample = min(c.sae.geometric_median_samples, source.n_tokens("train"))
    key = jax.random.PRNGKey(c.seed)

    def fresh_state():
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
    self.start_step = int(self.state.step)
    self.records: list[dict] = list(meta["records"])
    self.wall0, self.t0 = float(meta["wall_time_s"]), time.time()
    self.evals = set(eval_steps(self.n_steps, c.train.n_eval_points, c.train.first_eval_fraction))
    self.pending = None  # (step, metrics) of the previous step, pulled to host one step late

  def wall_time(self) -> float:
    return self.wall0 + time.time() - self.t0

  def check(self, step: int, m: dict) -> dict:
    loss = float(m["loss"])
    if not math.isfinite(loss):
      where = f"step {self.last_saved}" if self.last_saved is not None else "none saved"
      raise TrainingDivergedError(f"loss is {loss} at step {step}; last good checkpoint: "
                                  f"{where} in {self.run_dir}/checkpoints")
    return m

  def step(self, step: int, x: jax.Array) -> dict | None:
    """Train on batch `step`; evaluate and checkpoint on schedule. Returns the previous
    step's metrics (host values) when available."""
    self.state, metrics = self.step_fn(self.state, x)
    previous = self.check(*jax.device_get(self.pending)) if self.pending is not None else None
    self.pending = (step, metrics)
    done = step + 1
    if done in self.evals or done % self.c.train.checkpoint_every_steps == 0:
      self.check(*jax.device_get(self.pending))
      if done in self.evals:
        measured = evaluate(self.state, self.source, self.c)
        measured.update(self.suite_measures())
        self.records.append(_record(self.c, self.info, self.d_in, done, measured,
                                    float(metrics["dead_fraction"]), self.wall_time()))
      self.ckpt.save(done, self.state, {"records": self.records, "wall_time_s": self.wall_time()})
      self.last_saved = done
    return previous

  def suite_measures(self) -> dict:
    """The evaluation-suite measures of `train.eval_measures` at this point (flat
    scalars, e.g. delta_ce), computed by `sae_jax.evaluation` on the held-out text."""
    t = self.c.train
    if not t.eval_measures:
      return {}
    from sae_jax import evaluation  # loads the LM: only when asked for
    options = evaluation.Options(max_contexts=t.eval_max_contexts, max_latents=t.eval_max_latents)
    return evaluation.evaluation_measures(self.c, self.state, self.source,
                                          tuple(t.eval_measures), options)

  def close(self) -> None:
    if self.pending is not None:
      self.check(*jax.device_get(self.pending))
    self.ckpt.close()


def data_pass_key(c: ml_collections.ConfigDict) -> tuple:
  """SAEs whose configs agree on this key see the same batches in the same order and
  can share one pass over the data (`train_many`)."""
  return (c.seed, c.train.batch_size, c.train.n_devices, c.train.model_parallel)


def train(c: ml_collections.ConfigDict, source: data.ActivationSource, run_dir: str,
          run_info: dict | None = None, progress: bool = True) -> list[dict]:
  """Train one SAE to its token budget, resuming from run_dir's last checkpoint.

  Args:
    c: config (resolved here against source.d_in).
    source: activation source with "train" and "eval" splits.
    run_dir: checkpoints go to run_dir/checkpoints.
    run_info: fields copied into every record (sweep name, run id, model, layer, ...).

  Returns:
    One record per evaluation point (dicts; see README "Results table"), the last with
    final=True.

  Raises:
    ConfigError: bad config, or a batch that does not split over the devices.
    TrainingDivergedError: NaN/inf loss (the last good checkpoint is kept).
  """
  return train_many([c], source, [run_dir], [run_info], progress)[0]


def train_many(configs: list[ml_collections.ConfigDict], source: data.ActivationSource,
               run_dirs: list[str], run_infos: list[dict | None] | None = None,
               progress: bool = True) -> list[list[dict]]:
  """Train several SAEs in one pass over the data: each batch is read once and fed to
  every SAE, each with its own state, checkpoints and schedule, so each result equals
  training it alone (`train`). Runs may have different token budgets and may resume
  from different steps; the pass covers the union.

  Raises:
    ConfigError: the configs disagree on `data_pass_key` (seed, batch size, devices),
      or any error of `train`.
  """
  run_infos = run_infos or [None] * len(configs)
  keys = {data_pass_key(config_lib.resolve(c)) for c in configs}
  if len(keys) > 1:
    raise config_lib.ConfigError(
        f"SAEs sharing a data pass need the same seed, batch size and devices; got {sorted(keys)}")
  runs = [_Run(c, source, d, i) for c, d, i in zip(configs, run_dirs, run_infos)]
  mesh, B, seed = runs[0].mesh, runs[0].c.train.batch_size, runs[0].c.seed
  start, end = min(r.start_step for r in runs), max(r.n_steps for r in runs)
  batch_sh = sharding.batch_sharding(mesh)
  rows = distributed.local_rows(batch_sh, B)
  desc = runs[0].info.get("run_id", "train") if len(runs) == 1 else f"{len(runs)} SAEs"
  bar = tqdm(total=end, initial=start, unit="step", desc=desc, leave=False,
             disable=not (progress and distributed.is_primary()))
  with jax.set_mesh(mesh):
    for step, x in data.stream(source, B, seed, start, end, rows=rows):
      x = distributed.global_batch(batch_sh, x, B)
      for run in runs:
        if run.start_step <= step < run.n_steps:
          m = run.step(step, x)
          if m is not None and len(runs) == 1:
            bar.set_postfix(nmse=f"{float(m['normalized_mse']):.4f}", refresh=False)
      bar.update(1)
  bar.close()
  for run in runs:
    run.close()
  return [run.records for run in runs]
