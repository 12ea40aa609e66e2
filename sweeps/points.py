"""A sweep file and its points: load it, apply the command line's overrides, validate
every point, and name each run.

A sweep is a Python file (big_vision style) with two functions:

    def get_config() -> ml_collections.ConfigDict   # the base config, formulas and all
    def get_sweep() -> list[dict]                     # one {"dotted.key": value} per point
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import traceback

import ml_collections

from sae_jax import config as config_lib, files, overrides as overrides_lib
from sae_jax.errors import ConfigError


def _user_code_error(path: str, what: str, e: BaseException) -> ConfigError:
  """A one-line ConfigError for an exception raised by the sweep file's own code, at the
  deepest line of that file in the traceback (file:line)."""
  line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
  if line is None:
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    line = frames[-1].lineno if frames else None
  where = f"{path}:{line}" if line else path
  msg = e.msg if isinstance(e, SyntaxError) else str(e)
  msg = (msg.splitlines() or [""])[0]
  return ConfigError(f"{where}: {what}: {type(e).__name__}: {msg}; fix the sweep file")


def load_sweep(path: str) -> tuple[ml_collections.ConfigDict, list[dict]]:
  """Import a sweep file; return (base config, points).

  Raises:
    ConfigError: the file is missing; does not import (a syntax error or any exception
      its code raises, named with file:line); lacks get_config / get_sweep; or they do not
      return a ConfigDict and a list of {"dotted.key": value} dicts.
  """
  if not os.path.isfile(path):
    raise ConfigError(f"sweep file {path!r} not found (try sweeps/quickstart.py)")
  name = "_sae_jax_sweep_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"sweep file {path!r} is not a Python file; give a .py file")
  module = importlib.util.module_from_spec(spec)
  try:  # the sweep file is the user's code: whatever it raises is their input to fix
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise _user_code_error(path, "cannot import it", e) from None
  for fn in ("get_config", "get_sweep"):
    if not callable(getattr(module, fn, None)):
      raise ConfigError(f"sweep file {path!r} defines no {fn}()")
  try:
    base = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise _user_code_error(path, "get_config() failed", e) from None
  if not isinstance(base, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(base).__name__}, not a ConfigDict; "
                      "return sae_jax.config.default_config() with your changes")
  try:
    points = module.get_sweep()
    points = None if points is None or isinstance(points, (str, bytes, dict)) else list(points)
  except Exception as e:  # pylint: disable=broad-except
    raise _user_code_error(path, "get_sweep() failed", e) from None
  if points is None:
    raise ConfigError(f"{path}: get_sweep() returned no list; return a list of "
                      "{'dotted.key': value} dicts, one per point")
  for i, p in enumerate(points):
    if not isinstance(p, dict) or not all(isinstance(k, str) for k in p):
      raise ConfigError(f"{path}: point {i} of get_sweep() is {p!r}, not a dict of "
                        "{'dotted.key': value}")
  return base, points


def run_id(point: dict, resolved: ml_collections.ConfigDict) -> str:
  """Readable id from the point's values plus a hash of the whole resolved config, so a
  changed config never reuses an old run."""
  short = {"sae.n_latents": "n", "sae.k": "k", "train.token_budget": "t", "train.lr": "lr",
           "sae.architecture": "", "sae.sparsity_coefficient": "lam"}
  parts = [f"{short.get(k, k.split('.')[-1])}{v}" for k, v in point.items()]
  identity = resolved.to_dict()
  identity.pop("out_dir", None)  # where results go is not what was trained
  identity["data"].pop("cache_dir", None)
  if identity["data"].get("corpus_encoding") == "utf-8":
    del identity["data"]["corpus_encoding"]  # the default, as before the field existed
  for key in ("layers", "sites"):
    identity["data"].pop(key, None)  # other caches filled in the same LM pass
  for key in ("eval_measures", "eval_max_contexts", "eval_max_latents"):
    identity["train"].pop(key, None)  # what is measured is not what was trained
  for key in ("loggers", "log_every_steps"):
    identity["train"].pop(key, None)  # how a run is watched is not what was trained
  identity["train"].pop("topk_step", None)  # same results either way (tests/sparse_test.py)
  identity["train"].pop("divergence_factor", None)  # a run finishes identically or fails
  identity["train"].pop("preempt_checkpoint_within_s", None)  # when a stop saves, not what
  identity["train"].pop("sparse_impl", None)  # likewise
  if identity["sae"].get("input_scale") is None:
    identity["sae"].pop("input_scale", None)  # measured at training (as before the field)
  on_the_fly = identity["data"].get("cache", "disk") == "none"
  if not on_the_fly:
    identity["data"].pop("cache", None)  # the disk cache: as before the field existed
  if not identity["data"].get("shuffle_block_rows") and not on_the_fly:  # random rows
    identity["data"].pop("shuffle_block_rows", None)
    identity["data"].pop("shuffle_buffer_blocks", None)
  if identity["train"].get("compute_dtype") == "float32":
    del identity["train"]["compute_dtype"]  # the default, as before the field existed
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str)
                          .encode()).hexdigest()[:8]
  return "_".join(parts + [digest]).replace("/", "-")


def prepare(path: str, cli_overrides: dict | None = None, override_points: bool = False
            ) -> tuple[ml_collections.ConfigDict, list[dict], list[ml_collections.ConfigDict]]:
  """(base config, points, one config per point) of a sweep file with the command-line
  overrides applied; every point validated.

  A command-line key that a point also sets would be silently replaced by the point's
  value, so it is refused; with `override_points` (`--override-points`) the command line
  wins for every point instead (and the points show its value).

  Raises:
    ConfigError: a bad sweep file or point; a command-line key the points also set
      (without `override_points`); points that become identical under `override_points`.
  """
  base, points = load_sweep(path)
  cli_overrides = dict(cli_overrides or {})
  base = overrides_lib.apply(base, cli_overrides)
  if not points:
    raise ConfigError(f"sweep {path!r} has no points (get_sweep() returned [])")
  clash = sorted({k for p in points for k in p if k in cli_overrides})
  if clash and not override_points:
    raise ConfigError(f"--set {clash[0]} is also set by the points of {path}, which would "
                      f"replace it; drop it, edit get_sweep(), or pass --override-points "
                      f"to apply it to every point")
  if clash:
    points = [{**p, **{k: cli_overrides[k] for k in clash if k in p}} for p in points]
  configs = [overrides_lib.apply(base, p) for p in points]
  seen: dict[str, int] = {}
  for i, cfg in enumerate(configs):
    config_lib.resolve(cfg)  # fail fast on any bad point
    identity = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if clash and identity in seen:
      raise ConfigError(f"points {seen[identity]} and {i} of {path} are the same run "
                        f"(after --set {', '.join(clash)} --override-points); remove the duplicate")
    seen[identity] = i
  return base, points, configs


LOCKS = ".locks"  # <out_dir>/.locks/<name>/<run_id>.lock: held by the process training it


def lock_path(out: str, what: str) -> str:
  """Where the lock `what` of the sweep directory `out` (= <out_dir>/<name>) lives:
  <out_dir>/.locks/<name>/<what>.lock, beside the sweep's directory rather than in it, so
  the sweep directory holds only its runs and results."""
  out = os.path.abspath(out)
  return os.path.join(os.path.dirname(out), LOCKS, os.path.basename(out), f"{what}.lock")


def point_lock(out: str, rid: str) -> files.Lock:
  """The lock a process holds while it trains (and exports) run `rid` of the sweep
  directory `out` (`files.Lock`: released when the process ends, even on SIGKILL), so two
  `sae-jax sweep` or `train` processes never write the same checkpoints."""
  return files.Lock(lock_path(out, rid))
