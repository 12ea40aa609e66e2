"""The exact TopK of a row whose latents are split over devices.

Under a mesh with axes (`data`, `model`) (`sae_jax.training.sharding` builds it), a
[B, n_latents] tensor has its latents on `model`. Its TopK is the one per-device
algorithm of a sharded SAE: each of the m shards takes the top-k of its n/m latents, the
m·k candidates (values and global indices) are all-gathered, and their top-k is the
answer, which equals the top-k of the whole row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

DATA, MODEL = "data", "model"  # the mesh's axis names: batch, latents


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
