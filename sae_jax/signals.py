"""SIGTERM and SIGINT (a cluster's preemption, Ctrl-C) end a run cleanly.

`install()` (called by `sae-jax train`, `sweep` and `harvest`, and by a submitit job for
its preemption signal) makes the first signal request a stop. The handler itself only
records the signal where stopping at once could leave work half-done: inside `deferred()`
blocks, which the long loops open and poll at their safe boundaries:

* the training loop (`sae_jax.training.trainer.train_many`) finishes the current step,
  checkpoints every SAE of the pass at that step boundary (or, with
  `train.preempt_checkpoint_within_s` > 0, trains on to a scheduled checkpoint due within
  that many seconds) and raises `Interrupted`;
* the harvest (`sae_jax.data.harvest`) stops after the current LM batch, with every shard
  written so far recorded in its progress file (`check()`), so the relaunch continues it.

Anywhere else (startup, evaluation, fits, the results table: all written atomically or
redone from saved state) the handler raises `Interrupted` at once, as Python raises
KeyboardInterrupt. A second signal interrupts at once everywhere. The CLI prints one line
and exits, through a normal interpreter exit, with 128 + the signal number (143 for
SIGTERM, 130 for SIGINT); the relaunch resumes.
"""

from __future__ import annotations

import contextlib
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"deferring": 0, "requested": None}


class Interrupted(Exception):
  """A run stopped on a signal; `signum` is the signal, `where` what was saved."""

  def __init__(self, signum: int, where: str = ""):
    super().__init__(signum, where)
    self.signum, self.where = signum, where


def name(signum: int) -> str:
  """'SIGTERM' for 15, ...; 'signal N' for an unnamed number."""
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f"signal {signum}"


def _handler(signum, _frame):
  if _state["requested"] is None:
    _state["requested"] = signum
    if _state["deferring"]:
      return  # the loop stops at its next boundary
  raise Interrupted(signum)


def install(signums=SIGNALS) -> dict:
  """Handle `signums` (default SIGTERM and SIGINT) as this module describes (main thread
  only); returns the previous handlers for `restore`."""
  _state["requested"] = None
  return {sig: signal.signal(sig, _handler) for sig in signums}


def restore(previous: dict) -> None:
  """Put back the handlers `install` replaced."""
  for sig, handler in previous.items():
    signal.signal(sig, handler)
  _state["requested"] = None


def requested() -> int | None:
  """The signal that asked the running loop to stop, or None."""
  return _state["requested"]


def check(where: str = "") -> None:
  """Raise `Interrupted` (with `where`: what was saved) if a signal asked to stop."""
  if _state["requested"] is not None:
    raise Interrupted(_state["requested"], where)


@contextlib.contextmanager
def deferred():
  """Within this block a first signal only sets `requested()`; the block's loop polls it
  (`check`) at its safe boundaries. A signal that arrived before the block, or after
  its loop's last poll, raises on entering or leaving it."""
  check()
  _state["deferring"] += 1
  try:
    yield
  finally:
    _state["deferring"] -= 1
  check()
