"""Trained runs as SAEs on raw activations: find run directories, load a run's config
and latest checkpoint, and apply its SAE to raw (un-normalised) activations through the
architecture interface (`SAEOnRaw`)."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sae_jax import config as config_lib, files
from sae_jax import saes
from sae_jax.data import batches
from sae_jax.errors import ConfigError
from sae_jax.training import checkpoint
from sae_jax.training import step as step_lib


@functools.lru_cache(maxsize=32)
def _codec(architecture: str, hp: saes.Hyper, input_norm: str):
  arch = saes.get(architecture)

  def enc(params, extras, x_BxD, scale):
    x = batches.normalize(x_BxD, input_norm, scale)
    if input_norm == "unit_norm":  # x = (raw - mu) / n, so raw = x * n + mu
      mu = jnp.mean(x_BxD, -1, keepdims=True)
      n = jnp.maximum(jnp.linalg.norm(x_BxD - mu, axis=-1, keepdims=True), 1e-6)
    elif input_norm == "mean_norm":
      mu, n = jnp.zeros_like(x_BxD[:, :1]), jnp.broadcast_to(1.0 / scale, x_BxD[:, :1].shape)
    else:
      mu, n = jnp.zeros_like(x_BxD[:, :1]), jnp.ones_like(x_BxD[:, :1])
    return arch.encode(params, x, extras, hp), (mu, n)

  def dec(params, z_BxN, mu_Bx1, n_Bx1):
    x_hat = arch.decode(params, z_BxN)
    if input_norm == "none":
      return x_hat
    return x_hat * n_Bx1 + mu_Bx1
  return jax.jit(enc), jax.jit(dec)


class SAEOnRaw:
  """An SAE applied to raw activations: normalise (`sae_jax.data.batches.normalize`), encode,
  decode and un-normalise, through the architecture interface (`sae_jax.saes.base`).

  For input_norm "unit_norm" the per-token mean and norm are put back, for "mean_norm"
  the reconstruction is divided by the scale, for "none" it is returned as decoded.
  """

  def __init__(self, architecture: str, hp: saes.Hyper, params: dict, extras: Any,
               input_norm: str, norm_scale: float = 1.0):
    self.architecture, self.hp, self.input_norm = architecture, hp, input_norm
    self.params = jax.tree.map(jnp.asarray, dict(params))
    self.extras = jax.tree.map(jnp.asarray, extras if extras is not None else {})
    self.norm_scale = jnp.asarray(norm_scale, jnp.float32)
    self._enc, self._dec = _codec(architecture, hp, input_norm)

  @property
  def n_latents(self) -> int:
    return int(self.hp.n_latents)

  @classmethod
  def from_state(cls, cfg: ml_collections.ConfigDict, state: dict) -> "SAEOnRaw":
    """From a resolved config and a checkpointed train state (dict or TrainState)."""
    get = state.get if isinstance(state, dict) else lambda k: getattr(state, k)
    return cls(cfg.sae.architecture, step_lib.hyper(cfg), get("params"), get("extras"),
               cfg.sae.input_norm, float(np.asarray(get("norm_scale"))))

  def encode(self, x_BxD: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(z [B, n_latents] float32, the un-normalisation (mean, norm) of each token)."""
    z, norm = self._enc(self.params, self.extras, jnp.asarray(x_BxD, jnp.float32),
                        self.norm_scale)
    return np.asarray(z), norm

  def decode(self, z_BxN: np.ndarray, norm: tuple) -> np.ndarray:
    """Raw-space reconstruction [B, d_in] of codes from `encode`."""
    return np.asarray(self._dec(self.params, jnp.asarray(z_BxN), *norm))

  def reconstruct(self, x_BxD: np.ndarray) -> np.ndarray:
    """x_hat in raw activation space, float32 [B, d_in]."""
    z, norm = self.encode(x_BxD)
    return self.decode(z, norm)

  def reconstruct_torch(self, h_BxTxD):
    """`reconstruct` for a torch tensor [..., d_in] (a `sae_jax.evals.splice.Replace`)."""
    import torch  # pylint: disable=import-outside-toplevel  # heavy: only for a splice
    shape = h_BxTxD.shape
    x = h_BxTxD.reshape(-1, shape[-1]).float().cpu().numpy()
    return torch.from_numpy(np.array(self.reconstruct(x)).reshape(shape)).to(h_BxTxD.device)


def is_run_dir(path: str) -> bool:
  """A directory with checkpoints/ and its config (config.json, or records.json from
  `sae-jax train`, whose records hold the resolved config)."""
  return os.path.isdir(os.path.join(path, "checkpoints")) and any(
      os.path.isfile(os.path.join(path, f)) for f in ("config.json", "records.json"))


def run_dirs(path: str) -> list[str]:
  """[path] for a run directory (or its checkpoints/), else the run directories in a
  sweep directory. Raises ConfigError when there are none."""
  path = os.path.abspath(path)
  if os.path.basename(path) == "checkpoints":
    path = os.path.dirname(path)
  if is_run_dir(path):
    return [path]
  runs = sorted(os.path.join(path, d) for d in os.listdir(path)) if os.path.isdir(path) else []
  runs = [r for r in runs if is_run_dir(r)]
  if not runs:
    raise ConfigError(f"{path!r} is neither a run directory (checkpoints/ + config.json or "
                      "records.json) nor a "
                      "sweep directory holding some; give out_dir/<name> or out_dir/<name>/<run_id>")
  return runs


def _on_defaults(stored: dict) -> ml_collections.ConfigDict:
  """A stored config laid over today's defaults, so a run written before a config field
  was added still validates (the new field takes its default)."""
  base = config_lib.default_config().to_dict()

  def merge(b, s):
    for k, v in s.items():
      b[k] = merge(b[k], v) if isinstance(v, dict) and isinstance(b.get(k), dict) else v
    return b
  return ml_collections.ConfigDict(merge(base, stored))


def load_run(run_dir: str) -> tuple[ml_collections.ConfigDict, SAEOnRaw, dict]:
  """(resolved config, the SAE of the latest checkpoint, checkpoint meta) of a run.

  Raises:
    ConfigError: no config.json or no checkpoint in the run directory.
  """
  path = os.path.join(run_dir, "config.json")
  records = os.path.join(run_dir, "records.json")
  if os.path.isfile(path):
    stored = files.load_json(path, "delete it to read the run's config from its records.json"
                             if os.path.isfile(records) else "restore it or retrain the run")
  elif os.path.isfile(records):
    stored = files.load_json(records, "delete it (rerun the sweep to rebuild it from the "
                             "run's last checkpoint)")[-1]["config"]
  else:
    raise ConfigError(f"{run_dir!r} has no config.json or records.json; give a run directory "
                      "written by `sae-jax sweep` or `sae-jax train`")
  cfg = _on_defaults(stored)
  config_lib.validate(cfg)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(s.isdigit() for s in os.listdir(ckpt_dir)):
    raise ConfigError(f"{run_dir!r} has no checkpoint yet; train it first")
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  try:
    state, meta = ckpt.restore_untyped()
  finally:
    ckpt.close()
  meta = dict(meta or {}, step=int(np.asarray(state["step"])))
  return cfg, SAEOnRaw.from_state(cfg, state), meta
