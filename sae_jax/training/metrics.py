"""Metrics of a trained SAE on the held-out split: normalized MSE, MSE, L0, dead and
dense latents, computed in one pass (the numbers every evaluation record holds)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sae_jax.data import batches
from sae_jax.training.step import StepConfig, TrainState


def _eval_sums(params, extras, x_BxD, norm_scale, *, sc: StepConfig):
  x = batches.normalize(x_BxD, sc.input_norm, norm_scale)
  z = sc.arch.encode(params, x, extras, sc.hp)
  err = x - sc.arch.decode(params, z)
  # L0 counts every non-zero z; dead / dense use the training's definition of firing
  # (z > fired_threshold, `saes.Hyper.fired_threshold`)
  fired = z > sc.hp.fired_threshold
  return {"sq_err": jnp.sum(err**2), "sum_x_D": jnp.sum(x, axis=0), "sq_x": jnp.sum(x**2),
          "l0": jnp.sum(z != 0), "fires_N": jnp.sum(fired, axis=0)}


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


def evaluate(state: TrainState, source: batches.ActivationSource, c: ml_collections.ConfigDict,
             batch_size: int = 4096) -> dict:
  """Metrics on every row of the held-out split.

  normalized_mse = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance
  unexplained, Gao et al. 2024 Sec. 2.1), in the SAE's (normalised) input space; mse is
  the mean over tokens of ||x - x_hat||^2 / d_in; l0 the mean number of active latents;
  dead_fraction the fraction of latents that never fire on the split (z > train.fired_threshold,
  as the training counters); dense_fraction those that fire on more than 10% of its tokens.
  """
  n, sq_err, sq_x, l0 = 0, 0.0, 0.0, 0.0
  sum_x = None
  fires = np.zeros((c.sae.n_latents,), np.int64)
  sc = StepConfig.from_config(c)
  mesh = getattr(state.params["W_dec"].sharding, "mesh", None)
  for x in batches.eval_batches(source, batch_size):
    s = jax.device_get(_eval_fn(mesh, sc)(state.params, state.extras, x, state.norm_scale))
    n += len(x)
    sq_err += float(s["sq_err"])
    sq_x += float(s["sq_x"])
    l0 += float(s["l0"])
    sum_x = s["sum_x_D"].astype(np.float64) + (0 if sum_x is None else sum_x)
    fires += s["fires_N"]
  d_in = source.d_in
  total_var = sq_x - float(np.sum(sum_x**2)) / n
  return {"normalized_mse": sq_err / total_var, "mse": sq_err / (n * d_in), "l0": l0 / n,
          "dead_fraction": float(np.mean(fires == 0)),
          "dense_fraction": float(np.mean(fires > 0.1 * n)), "eval_tokens": n}
