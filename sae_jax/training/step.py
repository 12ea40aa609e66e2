"""The train step: one pure function of (state, batch), jitted once with explicit
shardings and the state donated (nanodo's `_train_step`).

    state, metrics = train_step(state, x_BxD)

The state holds everything that changes during training (params, Adam moments, the
per-latent count of tokens since each latent last fired, step), so a checkpoint of it
plus the step (= the data position, see `sae_jax.data.batches.batch_rows`) resumes a run
exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sae_jax import saes
from sae_jax.data import batches
from sae_jax.saes import sparse
from sae_jax.saes.geometric_median import geometric_median
from sae_jax.training import host_memory, optimizer, resample, sharding

RESAMPLE_SEED = 14  # the resampling draws are keyed by (this, step): resume is exact


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken (= batches consumed)
  params: saes.Params
  opt_state: Any
  extras: Any  # the architecture's non-gradient state (e.g. BatchTopK threshold)
  tokens_since_fired_N: jax.Array  # int32 [n_latents], clamped at dead_tokens
  variance: jax.Array  # float32 scalar: E||x - E x||^2 of the normalised inputs
  norm_scale: jax.Array  # float32 scalar: constant of the "mean_norm" normalisation


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static (compile-time) settings of a train step."""
  architecture: str
  hp: saes.Hyper
  dead_tokens: int
  input_norm: str
  # lambda ramps linearly from 0 over these steps (`optimizer.sparsity_warmup`; 0: off)
  sparsity_warmup_steps: int = 0
  sparse_impl: str | None = None  # train.sparse_impl as requested (None: by backend)
  # dead latents are resampled after these many updates (`sae_jax.training.resample`)
  resample_steps: tuple[int, ...] = ()

  @property
  def arch(self) -> saes.Architecture:
    return saes.get(self.architecture)

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict) -> "StepConfig":
    """From a resolved config (see `config.resolve`)."""
    return cls(architecture=c.sae.architecture, hp=hyper(c), dead_tokens=c.train.dead_tokens,
               input_norm=c.sae.input_norm,
               sparsity_warmup_steps=int(c.train.get("sparsity_warmup_steps") or 0),
               sparse_impl=c.train.get("sparse_impl"),
               resample_steps=tuple(c.train.get("resample_steps") or ()))


def hyper(c: ml_collections.ConfigDict) -> saes.Hyper:
  """The architecture's `Hyper` of a resolved config: its own hyperparameters from the
  `sae` block (declared in its module), the base fields from `train`."""
  arch, t = saes.get(c.sae.architecture), c.train
  sparse_step = t.get("topk_step") == "sparse" and arch.sparse_step
  return arch.make_hyper(c.sae, n_latents=c.sae.n_latents, k_aux=t.k_aux or 0,
                         aux_coef=t.aux_coef, sparse_impl="xla" if sparse_step else None,
                         compute_dtype=t.get("compute_dtype", "float32"),
                         fired_threshold=t.get("fired_threshold", 1e-3),
                         input_scale=c.sae.get("input_scale"))


def train_step(state: TrainState, x_BxD: jax.Array, *, sc: StepConfig,
               opt: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One update of any architecture: its loss, the decoder-gradient projection when its
  decoder rows are unit norm (Gao et al. 2024), Adam, the projection back to the sphere,
  dead-latent counters. Pure; jit it with `make_train_step`.

  With sc.sparsity_warmup_steps > 0 the weighted sparsity term (`Output.sparsity_loss`)
  enters the objective times `optimizer.sparsity_warmup(state.step, ...)`, i.e. lambda
  ramps linearly from 0 (Conerly et al. 2024; Lieberum et al. 2024), for every
  architecture whose loss reports its penalty there."""
  arch = sc.arch
  x_BxD = batches.normalize(x_BxD, sc.input_norm, state.norm_scale)
  dead_N = state.tokens_since_fired_N >= sc.dead_tokens
  ramp = optimizer.sparsity_warmup(state.step, sc.sparsity_warmup_steps)

  def loss_fn(params):
    out = arch.loss(params, x_BxD, state.extras, sc.hp, variance=state.variance, dead_N=dead_N)
    if sc.sparsity_warmup_steps <= 0:
      return out.loss, out
    # loss - (1 - ramp) · sparsity: lambda · ramp in the objective and its gradient
    return out.loss + (ramp - 1.0) * out.sparsity_loss, out

  (objective, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = opt.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if arch.unit_norm_decoder:
    params = optimizer.renormalize_decoder(params)
  B = x_BxD.shape[0]
  since = jnp.minimum(state.tokens_since_fired_N + B, sc.dead_tokens)
  since = jnp.where(out.fired_N, 0, since).astype(jnp.int32)
  resampled = jnp.zeros((), jnp.int32)
  if sc.resample_steps:
    window = resample.window_tokens(sc.resample_steps, B, sc.dead_tokens)
    now = jnp.any(state.step + 1 == jnp.asarray(sc.resample_steps))
    to_resample_N = (since >= window) & now
    key = jax.random.fold_in(jax.random.PRNGKey(RESAMPLE_SEED), state.step)
    params, opt_state = jax.lax.cond(
        jnp.any(to_resample_N),
        lambda p, o: resample.resample(key, arch, sc.hp, p, o, out.extras, x_BxD, to_resample_N),
        lambda p, o: (p, o), params, opt_state)
    since = jnp.where(to_resample_N, 0, since)
    resampled = jnp.sum(to_resample_N).astype(jnp.int32)
  metrics = {"loss": objective, "normalized_mse": out.normalized_mse,
             "sparsity_loss": ramp * out.sparsity_loss, "aux_loss": out.aux_loss, "l0": out.l0,
             "dead_fraction": jnp.mean(dead_N.astype(jnp.float32)), "resampled": resampled,
             "grad_norm": jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))}
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                      extras=out.extras, tokens_since_fired_N=since)
  return new, metrics


def make_train_step(mesh: Mesh, sc: StepConfig, opt: optax.GradientTransformation,
                    state_sharding=None
                    ) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
  """jit the train step once: the state laid out by `state_sharding` (default:
  replicated), the batch split over `data`, metrics replicated, the state donated.
  Call it inside `jax.set_mesh(mesh)` when the mesh has a `model` axis > 1, so TopK
  runs exactly across latent shards (`sae_jax.saes.sharded_topk.top_k`). Raises
  ConfigError when sc.sparse_impl cannot run on the mesh (`sparse.impl_for`)."""
  replicated = NamedSharding(mesh, P())
  state_sharding = replicated if state_sharding is None else state_sharding
  if mesh.devices.ravel()[0].platform == "cpu":
    host_memory.retain_freed_memory()  # no page faults on every step's temporaries
  if sc.hp.sparse_impl is not None:  # train.sparse_impl, else C++ on one CPU, Pallas on one GPU
    impl = sparse.impl_for(mesh, sc.sparse_impl)
    sc = dataclasses.replace(sc, hp=dataclasses.replace(sc.hp, sparse_impl=impl))
  return jax.jit(functools.partial(train_step, sc=sc, opt=opt),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)


def init_state(key: jax.Array, sample_BxD: np.ndarray, c: ml_collections.ConfigDict,
               norm_scale: float, opt: optax.GradientTransformation) -> TrainState:
  """Initial state: the architecture's init with b_pre at the geometric median of the
  (normalised) sample, and the variance of the sample for the normalized MSE."""
  arch, hp = saes.get(c.sae.architecture), hyper(c)
  x = batches.normalize(jnp.asarray(sample_BxD), c.sae.input_norm, norm_scale)
  variance = jnp.mean(jnp.sum((x - jnp.mean(x, axis=0)) ** 2, axis=-1))
  params = arch.init(key, x.shape[1], c.sae.n_latents, geometric_median(x), hp)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                    extras=arch.init_extras(c.sae.n_latents, hp),
                    tokens_since_fired_N=jnp.zeros((c.sae.n_latents,), jnp.int32),
                    variance=variance.astype(jnp.float32),
                    norm_scale=jnp.asarray(norm_scale, jnp.float32))
