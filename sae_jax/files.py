"""Files, written so that a failure never destroys what was there (a leaf: imports nothing
of the project but its errors).

* `atomic_write`: the one writer. Every file the project writes goes to a temporary file
  in the target's directory, is flushed to disk, then renamed over the target (a rename
  within a directory is atomic on POSIX), so a reader sees the old file or the new one,
  never half of either.
* `write_json_atomic`, `json_safe`: JSON with one rule for non-finite numbers (they
  become null, so every file is strict JSON that any reader parses).
* `staged_outputs`: several files (fits.json and its plots) that appear together or not
  at all: written into a staging directory, moved into place only when all succeeded.
* `read_jsonl`: JSON lines, tolerating only a truncated last line (a writer still going).
* `check_writable`, `cache_root`: where outputs and caches go.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from sae_jax.errors import ConfigError


def _fsync_dir(directory: str) -> None:
  try:  # make the rename itself durable
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError:
    pass


def new_file_mode() -> int:
  """The mode `open()` gives a new file (0o666 less the umask); mkstemp gives 0o600."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None],
                 mode: int | None = None) -> None:
  """Replace `path` with what `write(tmp_path)` writes to a temporary file beside it.

  The parent directory is created if needed; the new file gets `mode` (default: the
  usual permissions under the umask, not mkstemp's 0600). If `write` raises, the target
  is untouched and the temporary file removed.
  """
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  os.close(fd)
  try:
    os.chmod(tmp, new_file_mode() if mode is None else mode)
    write(tmp)
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(parent)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replace `path` with `data`, atomically (`atomic_write`)."""

  def write(tmp: str) -> None:
    with open(tmp, "wb") as f:
      f.write(data)
  atomic_write(path, write)


def json_safe(obj: Any) -> Any:
  """`obj` with NumPy scalars and arrays as Python numbers and lists, tuples as lists,
  mapping keys as strings, and non-finite floats (NaN, inf) as None: what JSON can hold."""
  if isinstance(obj, Mapping):
    return {str(k): json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return json_safe(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):  # e.g. a jax.Array
    return json_safe(np.asarray(obj)[()] if np.ndim(obj) == 0 else np.asarray(obj))
  return obj


def dumps_json(obj: Any, indent: int | None = 1, sort_keys: bool = False) -> str:
  """Strict JSON text of `json_safe(obj)`. Raises TypeError for an object JSON cannot hold."""
  return json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, obj: Any, jsonl: bool = False,
                      sort_keys: bool = False) -> None:
  """Write `obj` as indented JSON, or, with jsonl, each item of `obj` on its own line,
  atomically (`atomic_write`), through `json_safe` (non-finite numbers become null).

  Raises TypeError if `obj` holds something JSON cannot (nothing is written).
  """
  if jsonl:
    text = "".join(dumps_json(rec, indent=None, sort_keys=sort_keys) + "\n" for rec in obj)
  else:
    text = dumps_json(obj, sort_keys=sort_keys) + "\n"
  atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike,
                   remove: Iterable[str | os.PathLike] = ()) -> Iterator[str]:
  """Write a set of files that must appear together or not at all (a fits.json and the
  plots drawn from it).

  Yields a fresh staging directory inside `out_dir`; the block writes its files under it
  at the relative paths they should have under `out_dir`. If the block raises, the
  staging directory is deleted and nothing under `out_dir` changes. If it returns, every
  staged file is moved onto its place (`os.replace`, atomic per file; files in
  sub-directories first, then the top-level ones, so an index such as fits.json lands
  last), then the paths of `remove` (relative to `out_dir`: outputs of an earlier run
  that this one no longer writes) are deleted. No computation runs between the moves,
  so only a crash within those few renames could leave a mixture.

  Raises:
    ConfigError: `out_dir` cannot be written (nothing is computed or moved).
  """
  out_dir = os.fspath(out_dir)
  check_writable(out_dir)
  staging = tempfile.mkdtemp(dir=out_dir, prefix=".staging-")
  try:
    yield staging
    staged = []
    for root, _, names in os.walk(staging):
      staged += [os.path.relpath(os.path.join(root, n), staging) for n in names]
    staged.sort(key=lambda rel: (os.sep not in rel, rel))  # sub-directories first
    mode = new_file_mode()
    for rel in staged:
      target = os.path.join(out_dir, rel)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.chmod(os.path.join(staging, rel), mode)
      os.replace(os.path.join(staging, rel), target)
    for rel in remove:
      target = os.path.join(out_dir, os.fspath(rel))
      if os.fspath(rel) not in staged and os.path.isfile(target):
        os.remove(target)
    _fsync_dir(out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
  """The JSON in `path`, or `default` if it is missing or not valid JSON (for caches and
  memos that are rebuilt when unreadable)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def load_json(path: str | os.PathLike, fix: str) -> Any:
  """The JSON in `path`, a file the project wrote and needs (a run's records.json or
  config.json).

  Raises:
    ConfigError: it cannot be read or is not valid JSON (a disk error, a hand edit): one
      line naming the file, where it breaks, and `fix` (what to do about it).
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column "
                      f"{e.colno}); {fix}") from None
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path} cannot be read ({e}); {fix}") from None


def read_jsonl(path: str | os.PathLike, warn: Callable[[str], None] = warnings.warn,
               line_numbers: bool = False) -> list[dict] | list[tuple[int, dict]]:
  """Every record of a JSON-lines file, in file order (with `line_numbers`: (line, record)
  pairs, lines counted from 1, so a caller can name the line of a bad record).

  A truncated last line (no final newline: a writer still going) is skipped, saying so
  through `warn`; any other line that is not a JSON object is an error.

  Raises:
    ConfigError: a line (other than a truncated last one) is not a JSON object, or the
      file is not UTF-8; the message names the file and line.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); give a JSON-lines file") from None
  records = []
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == last and i == len(lines) - 1:  # no trailing newline: a write in progress
        warn(f"{path}:{i + 1}: skipping a truncated last line ({e.msg})")
        continue
      raise ConfigError(f"{path}:{i + 1} is not valid JSON ({e.msg}); "
                        f"fix or delete that line") from None
    if not isinstance(record, dict):
      raise ConfigError(f"{path}:{i + 1} is a JSON {type(record).__name__}, not an object; "
                        f"each line must be one record")
    records.append((i + 1, record) if line_numbers else record)
  return records


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
  """sha256 (hex) of a file's bytes, read in chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while b := f.read(chunk):
      h.update(b)
  return h.hexdigest()


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


def cache_root(cache_dir: str | None = None) -> str:
  """Where caches live: `cache_dir` (the config's data.cache_dir), else $SAE_JAX_CACHE,
  else $XDG_CACHE_HOME/sae_jax, else ~/.cache/sae_jax."""
  if cache_dir:
    return os.path.expanduser(cache_dir)
  if os.environ.get("SAE_JAX_CACHE"):
    return os.path.expanduser(os.environ["SAE_JAX_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(base, "sae_jax")
