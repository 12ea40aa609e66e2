"""SIGTERM and SIGINT (a cluster's preemption, Ctrl-C) end a run cleanly.

`install()` (called by `sae-jax train` and `sae-jax sweep`) makes the first signal
request a stop: inside the training loop (`deferred()`), the trainer finishes the current
step, checkpoints every SAE of the pass at that step boundary and raises `Interrupted`;
anywhere else (harvest, evaluation, fits) `Interrupted` is raised at once, since those
resume from their own caches and records. A second signal interrupts at once. The CLI
prints one line and exits 128 + the signal number (143 for SIGTERM, 130 for SIGINT); the
relaunch resumes from the checkpoint.
"""

from __future__ import annotations

import contextlib
import signal

_state = {"deferring": False, "requested": None}


class Interrupted(Exception):
  """A run stopped on a signal; `signum` is the signal, `where` what was saved."""

  def __init__(self, signum: int, where: str = ""):
    super().__init__(signum, where)
    self.signum, self.where = signum, where


def _handler(signum, _frame):
  if _state["deferring"] and _state["requested"] is None:
    _state["requested"] = signum  # the trainer stops at the next step boundary
    return
  raise Interrupted(signum)


def install() -> dict:
  """Handle SIGTERM and SIGINT as this module describes (main thread only); returns the
  previous handlers for `restore`."""
  return {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore(previous: dict) -> None:
  """Put back the handlers `install` replaced."""
  for sig, handler in previous.items():
    signal.signal(sig, handler)


def requested() -> int | None:
  """The signal that asked the training loop to stop, or None."""
  return _state["requested"]


@contextlib.contextmanager
def deferred():
  """Within this block a first signal only sets `requested()` (the training loop)."""
  previous = _state["deferring"]
  _state["deferring"] = True
  try:
    yield
  finally:
    _state["deferring"] = previous
    if not previous:
      _state["requested"] = None
