"""Device meshes and latent sharding.

A 2-D mesh with axes (`data`, `model`): the batch is split over `data`; every tensor with
a latent dimension (W_enc columns, W_dec rows, b_enc, per-latent state such as dead
counters and thresholds, and their Adam moments) is split over `model`. GSPMD partitions
the matmuls; the one per-device algorithm is the exact TopK across latent shards
(`sae_jax.saes.sharded_topk`, which names the axes).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sae_jax.errors import ConfigError
from sae_jax.saes.sharded_topk import DATA, MODEL


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
