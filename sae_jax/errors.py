"""The errors a user can act on (a leaf: imports nothing of the project).

Every entry point prints these as one line, `sae-jax: error: <message>`, and exits with
status 2; the message says what is wrong and what to change. Anything else that escapes
is a bug in sae_jax and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A configuration value or input a user must change; the message says which and how."""


class CacheCorruptError(ConfigError):
  """An activation-cache file is missing, truncated or does not match its recorded
  sha256; the message names the file and how to rebuild it."""


class CheckpointCorruptError(ConfigError):
  """No checkpoint of a run can be read; the message names the directory and what to
  delete to start over."""


class TrainingDivergedError(ConfigError):
  """The loss became NaN or inf; the message names the step and the last good checkpoint
  (lower train.lr or check the activations)."""


class StorageError(ConfigError, OSError):
  """A write failed because its disk is full, read-only or not permitted (ENOSPC, EDQUOT,
  EROFS, EACCES, EPERM); the message names the path, the space needed when known, and
  what to change. Everything saved before is intact and a rerun resumes. Also an OSError
  (with its `errno`), so code that tolerates a failed optional write still does."""

  def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..." form
    return str(self.args[0]) if self.args else ""
