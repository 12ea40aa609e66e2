"""Device meshes and latent sharding.

A 2-D mesh with axes (`data`, `model`): the batch is split over `data`; every tensor with
a latent dimension (W_enc columns, W_dec rows, b_enc, per-latent state such as dead
counters and thresholds, and their Adam moments) is split over `model`. GSPMD partitions
the matmuls; the one per-device algorithm is the exact TopK across latent shards
(`top_k`): each shard takes its local top-k, the candidates are gathered, and the
global top-k of the candidates is kept, which equals the top-k of the whole row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sae_jax.config import ConfigError

DATA, MODEL = "data", "model"


def make_mesh(n_devices: int | None = None, model: int = 1) -> Mesh:
  """A (data, model) mesh over the first n_devices devices (default: all).

  Raises ConfigError if the devices do not exist or do not split into `model` shards.
  """
  devices = jax.devices()
  n = len(devices) if n_devices is None else n_devices
  if not 1 <= n <= len(devices):
    raise ConfigError(
        f"train.n_devices={n_devices} but {len(devices)} device(s) are visible; use 1..{len(devices)}")
  if model < 1 or n % model:
    raise ConfigError(f"train.model_parallel={model} does not divide {n} devices")
  return Mesh(np.asarray(devices[:n]).reshape(n // model, model), (DATA, MODEL))


def latent_spec(shape: tuple[int, ...], n_latents: int) -> P:
  """PartitionSpec of a state leaf: its latent dimension on `model`, the rest replicated.

  W_enc [d_in, n_latents] splits its columns, W_dec [n_latents, d_in] its rows, per-latent
  vectors [n_latents] themselves; leaves without a latent dimension are replicated.
  """
  if len(shape) == 2 and shape[1] == n_latents:  # W_enc [d_in, n_latents]
    return P(None, MODEL)
  if shape and shape[0] == n_latents:  # W_dec [n_latents, d_in], per-latent vectors
    return P(MODEL, *([None] * (len(shape) - 1)))
  return P()


def state_shardings(tree, mesh: Mesh, n_latents: int):
  """NamedShardings for every leaf of a state pytree (arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: NamedSharding(mesh, latent_spec(tuple(x.shape), n_latents)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def _model_shards() -> int:
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or MODEL not in mesh.axis_names or DATA not in mesh.axis_names:
    return 1
  return mesh.shape[MODEL]


def top_k(pre_BxN: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(values, indices) of the k largest entries of each row, exact under latent sharding.

  Without a `model` axis of size > 1 in the current mesh (`jax.set_mesh`), this is
  `lax.top_k`. With one, each of the m shards takes the top-k of its n/m latents,
  the m·k candidates (values and global indices) are all-gathered, and their top-k is
  the answer; ties resolve to the lower index, as in `lax.top_k`.
  """
  m = _model_shards()
  if m == 1:
    return lax.top_k(pre_BxN, k)

  def local(pre_local):
    n_local = pre_local.shape[1]
    vals, idx = lax.top_k(pre_local, min(k, n_local))
    idx = idx + lax.axis_index(MODEL) * n_local
    all_vals = lax.all_gather(vals, MODEL, axis=1, tiled=True)
    all_idx = lax.all_gather(idx, MODEL, axis=1, tiled=True)
    top_vals, j = lax.top_k(all_vals, k)
    return top_vals, jnp.take_along_axis(all_idx, j, axis=1)

  mesh = jax.sharding.get_abstract_mesh()
  batch_axis = DATA if pre_BxN.shape[0] % mesh.shape[DATA] == 0 else None
  spec = P(batch_axis, None)
  return jax.shard_map(local, in_specs=P(batch_axis, MODEL), out_specs=(spec, spec),
                       check_vma=False)(pre_BxN)
