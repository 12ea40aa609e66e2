"""Multi-host runs through JAX's own distributed runtime.

`initialize()` starts `jax.distributed` when the environment describes more than one
process, before any computation:

* SAE_JAX_COORDINATOR (host:port), SAE_JAX_NUM_PROCESSES, SAE_JAX_PROCESS_ID — explicit;
* JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID — JAX's own variables;
* SLURM (SLURM_NTASKS > 1, as `srun` sets) and Cloud TPU pods — detected by JAX itself.

Every process then runs the same program; each reads only the rows of each batch that
its own devices hold (`local_rows`), and only process 0 writes records and results.
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils
import numpy as np

from sae_jax.errors import ConfigError

_initialized = False


def initialize() -> bool:
  """Start jax.distributed if the environment asks for several processes.

  Returns True when running multi-process. Raises ConfigError for a half-specified
  environment (a coordinator without a process count or id).
  """
  global _initialized
  if _initialized:
    return True
  env = os.environ
  explicit = [env.get(f"SAE_JAX_{k}") or env.get(f"JAX_{k}")
              for k in ("COORDINATOR", "NUM_PROCESSES", "PROCESS_ID")]
  explicit[0] = explicit[0] or env.get("JAX_COORDINATOR_ADDRESS")
  if any(explicit):
    if not all(explicit):
      raise ConfigError("set all of SAE_JAX_COORDINATOR (host:port), SAE_JAX_NUM_PROCESSES and "
                        "SAE_JAX_PROCESS_ID for a multi-process run")
    if int(explicit[1]) <= 1:
      return False
    _cpu_collectives()
    jax.distributed.initialize(explicit[0], num_processes=int(explicit[1]),
                               process_id=int(explicit[2]))
  elif int(env.get("SLURM_NTASKS", "1")) > 1 or env.get("TPU_WORKER_HOSTNAMES"):
    _cpu_collectives()
    jax.distributed.initialize()  # JAX reads SLURM's / the TPU pod's variables
  else:
    return False
  _initialized = True
  return True


def _cpu_collectives() -> None:
  """CPU devices in different processes talk through gloo (no-op for GPU/TPU runs)."""
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, ValueError):
    pass


def process() -> tuple[int, int]:
  """(this process's index, the number of processes)."""
  return jax.process_index(), jax.process_count()


def barrier(name: str) -> None:
  """Return once every process has called barrier(name) (a multi-host harvest's steps)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
  """True on the process that writes files (process 0)."""
  return jax.process_index() == 0


def local_rows(sharding: jax.sharding.Sharding, global_batch: int) -> tuple[int, int]:
  """[lo, hi): the rows of a global batch that this process's devices hold."""
  index_map = sharding.addressable_devices_indices_map((global_batch, 1))
  starts, stops = [], []
  for index in index_map.values():
    rows = index[0]
    starts.append(rows.start or 0)
    stops.append(global_batch if rows.stop is None else rows.stop)
  lo, hi = min(starts), max(stops)
  return lo, hi


def global_batch(sharding: jax.sharding.Sharding, x_local: np.ndarray, global_rows: int
                 ) -> jax.Array:
  """A global [global_rows, d_in] array from this process's rows (`local_rows`)."""
  if jax.process_count() == 1:
    return jax.device_put(x_local, sharding)
  return jax.make_array_from_process_local_data(sharding, x_local,
                                                (global_rows,) + x_local.shape[1:])
