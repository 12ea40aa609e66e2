"""Checkpoints through Orbax's CheckpointManager: the train state pytree plus a JSON
metadata item (evaluation records so far, wall time). Orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save keeps its
previous checkpoint; a save that fails on a full or read-only disk removes its temporary
directory and raises a one-line `StorageError`, and the earlier steps stay readable.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from sae_jax import files
from sae_jax.errors import CheckpointCorruptError

MAX_TO_KEEP = 2  # steps kept on disk; a third is written before the oldest is deleted


class Checkpointer:
  """Save and restore (state, meta) at integer steps under `directory`."""

  def __init__(self, directory: str, max_to_keep: int = MAX_TO_KEEP):
    self.directory = os.path.abspath(directory)
    # cleanup_tmp_directories: a save that died half-way (a kill, a full disk) leaves a
    # <step>.orbax-checkpoint-tmp directory; the next manager deletes it
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Write the state pytree and the JSON-serialisable meta dict for `step`.

    Raises:
      StorageError: the disk is full, read-only or forbids the write; the message names
        the step's directory and the bytes of the state. The partial step is deleted;
        the earlier steps are untouched.
    """
    target = os.path.join(self.directory, str(step))
    try:
      files.inject_fault(target)
      self._mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # tensorstore's ValueError, OSError
      size = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
      err = files.storage_error(e, target, size)
      if err is None:
        raise
      for tmp in glob.glob(glob.escape(target) + ".orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)  # free what the failed save took
      raise err from None

  def delete(self, step: int) -> None:
    """Delete the checkpoint of `step` (a diverged state, `trainer._Run.fail`)."""
    self._mngr.delete(step)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def restore_latest(self, template: Any, sharding: Any) -> tuple[Any, dict] | None:
    """(state, meta) of the latest readable step, placed with `sharding`; None if none.

    A step whose files cannot be read (truncated, bit-flipped) is named on stderr and
    deleted, and the previous step is used (a resume from it retrains the same steps).

    Args:
      template: a pytree of jax.ShapeDtypeStruct (e.g. from jax.eval_shape) giving the
        structure to restore into.
      sharding: one jax.sharding.Sharding for every leaf, or a pytree of them.

    Raises:
      CheckpointCorruptError: no step is readable; the message names the directory.
    """
    steps = sorted(self._mngr.all_steps(), reverse=True)
    if not steps:
      return None
    if isinstance(sharding, jax.sharding.Sharding):
      sharding = jax.tree.map(lambda _: sharding, template)
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), template, sharding)
    for step in steps:
      try:
        out = self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore: many types
        why = (str(e).strip().splitlines() or [""])[0][:160]
        if step == steps[-1]:
          raise CheckpointCorruptError(
              f"no checkpoint under {self.directory} can be read (step {step}: "
              f"{type(e).__name__}: {why}); delete {self.directory} to start the run "
              "over") from None
        print(f"[sae_jax] checkpoint {self.directory}/{step} cannot be read "
              f"({type(e).__name__}: {why}); deleting it and resuming from the previous one",
              file=sys.stderr, flush=True)
        self._mngr.delete(step)
        continue
      return out["state"], out["meta"]
    return None

  def restore_untyped(self, step: int | None = None) -> tuple[Any, dict]:
    """(state as nested dicts of arrays on one local device, meta) of `step` (default:
    latest), without a template, whatever topology saved it: for inspection and export,
    not for resuming."""
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    # Orbax logs a warning that a manager's item has no step-level metadata file; the
    # array metadata it then reads is all we need.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
      metadata = ocp.StandardCheckpointer().metadata(
          os.path.join(self.directory, str(step), "state")).item_metadata
    finally:
      absl_logger.setLevel(level)
    metadata = getattr(metadata, "tree", metadata)
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                            metadata, is_leaf=lambda m: hasattr(m, "shape"))
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def close(self) -> None:
    self._mngr.close()
