"""Writing files so that a failure never destroys what was there: every write goes to a
temporary file in the target's directory, is flushed to disk, then renamed over the
target (a rename within a directory is atomic on POSIX)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from sae_jax.config import ConfigError


def _fsync_dir(directory: str) -> None:
  try:  # make the rename itself durable
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError:
    pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replace `path` with `data`, atomically; the parent directory is created if needed.
  The new file gets the usual permissions (umask), not mkstemp's 0600."""
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(parent)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any, jsonl: bool = False) -> None:
  """Write `obj` as indented JSON, or, with jsonl, each item of `obj` on its own line.

  Raises TypeError / ValueError if `obj` is not JSON-serialisable (nothing is written).
  NumPy scalars are written as floats.
  """
  if jsonl:
    text = "".join(json.dumps(rec, default=float) + "\n" for rec in obj)
  else:
    text = json.dumps(obj, indent=1, default=float) + "\n"
  atomic_write_bytes(path, text.encode())


def read_jsonl(path: str | os.PathLike) -> list:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def check_writable(directory: str, what: str = "output directory",
                   fix: str = "set out_dir=... to a writable path") -> None:
  """Create `directory` if needed and prove files can be created in it, before any work
  starts. Raises ConfigError naming the directory and the fix."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
      pass
  except OSError as e:
    raise ConfigError(f"cannot write to {what} {directory!r} ({e.strerror or e}); {fix}") from None
