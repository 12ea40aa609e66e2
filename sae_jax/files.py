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
* `check_writable`, `cache_root`, `is_url`: where outputs and caches go.
* `storage_error`, `free_bytes`: a write that fails on a full, read-only or forbidden disk
  becomes one `StorageError` line naming the path and the space needed.
* `Lock`: an exclusive lock on a file that dies with its process (`fcntl.flock`), so two
  processes never train the same point of a sweep.
* `inject_fault`: test-only, makes chosen writes fail as on a full disk
  ($SAE_JAX_TEST_WRITE_FAULT).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from sae_jax.errors import ConfigError, StorageError


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
                 mode: int | None = None, size: int | None = None) -> None:
  """Replace `path` with what `write(tmp_path)` writes to a temporary file beside it.

  The parent directory is created if needed; the new file gets `mode` (default: the
  usual permissions under the umask, not mkstemp's 0600). If `write` raises, the target
  is untouched and the temporary file removed.

  Raises:
    StorageError: the disk is full, read-only or forbids the write; the message names
      `path` and, for a full disk, `size` (bytes, when the caller knows it) and the
      space free. The target is untouched.
  """
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    inject_fault(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, new_file_mode() if mode is None else mode)
    write(tmp)
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(parent)
  except OSError as e:
    err = storage_error(e, path, size)
    if err is None:
      raise
    raise err from None
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replace `path` with `data`, atomically (`atomic_write`)."""

  def write(tmp: str) -> None:
    with open(tmp, "wb") as f:
      f.write(data)
  atomic_write(path, write, size=len(data))


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
    StorageError: a file could not be written or moved (disk full, read-only); nothing
      under `out_dir` changed.
  """
  out_dir = os.fspath(out_dir)
  check_writable(out_dir)
  staging = tempfile.mkdtemp(dir=out_dir, prefix=".staging-")
  try:
    try:
      yield staging
      _commit_staged(staging, out_dir, remove)
    except OSError as e:  # a full disk: name the file as the user knows it, not its staging path
      err = storage_error(e)
      if err is None:
        raise
      raise StorageError(str(err).replace(staging + os.sep, out_dir + os.sep)) from None
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _commit_staged(staging: str, out_dir: str, remove: Iterable[str | os.PathLike]) -> None:
  staged = []
  for root, _, names in os.walk(staging):
    staged += [os.path.relpath(os.path.join(root, n), staging) for n in names]
  staged.sort(key=lambda rel: (os.sep not in rel, rel))  # sub-directories first
  mode = new_file_mode()
  for rel in staged:
    inject_fault(os.path.join(out_dir, rel))
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


def is_url(location: str | None) -> bool:
  """True for a URL (``scheme://...``, e.g. gs://bucket/x, file:///x), False for a path."""
  return bool(location) and "://" in str(location)


def cache_root(cache_dir: str | None = None) -> str:
  """Where caches live: `cache_dir` (the config's data.cache_dir), else $SAE_JAX_CACHE,
  else $XDG_CACHE_HOME/sae_jax, else ~/.cache/sae_jax. A URL cache_dir holds only the
  activation caches (`sae_jax.data.cache`); the local files (model weights' memo, the
  corpus) then live in the default local root."""
  if cache_dir and not is_url(cache_dir):
    return os.path.expanduser(cache_dir)
  if os.environ.get("SAE_JAX_CACHE"):
    return os.path.expanduser(os.environ["SAE_JAX_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(base, "sae_jax")


FAULT_ENV = "SAE_JAX_TEST_WRITE_FAULT"
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def inject_fault(path: str | os.PathLike) -> None:
  """Test-only: fail a write to `path` as a full or read-only disk would, when
  $SAE_JAX_TEST_WRITE_FAULT asks for it (unset in normal use: one environ lookup).

  The variable holds rules `ERRNO:GLOB` separated by ';', e.g.
  `ENOSPC:*/checkpoints/*;EROFS:*/fits.json`: a write whose absolute path matches GLOB
  (`fnmatch`) raises OSError(ERRNO). Called by every writer of the project: `atomic_write`,
  `staged_outputs` and `sae_jax.training.checkpoint.Checkpointer.save`.
  """
  spec = os.environ.get(FAULT_ENV)
  if not spec:
    return
  target = os.path.abspath(os.fspath(path))
  for rule in filter(None, (r.strip() for r in spec.split(";"))):
    name, _, pattern = rule.partition(":")
    if fnmatch.fnmatch(target, pattern):
      code = getattr(errno, name.strip())
      raise OSError(code, os.strerror(code), target)


def _existing(path: str) -> str:
  """`path` or its nearest existing ancestor."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def free_bytes(path: str | os.PathLike) -> int:
  """Bytes free to this user on the file system that holds (or would hold) `path`."""
  return shutil.disk_usage(_existing(os.fspath(path))).free


def mount_point(path: str | os.PathLike) -> str:
  """The mount point of the file system that holds (or would hold) `path`."""
  path = _existing(os.fspath(path))
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


def same_disk(a: str | os.PathLike, b: str | os.PathLike) -> bool:
  """Whether `a` and `b` are (or would be) on the same file system."""
  return os.stat(_existing(os.fspath(a))).st_dev == os.stat(_existing(os.fspath(b))).st_dev


def human_bytes(n: float) -> str:
  """`n` bytes as a short string in binary units: 512 B, 3.1 MiB, 2.00 GiB."""
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
    n /= 1024
  return f"{n} B"


WHERE = "out_dir=... (runs) or data.cache_dir=... (activation caches)"


def storage_error(e: BaseException, path: str | os.PathLike | None = None,
                  size: int | None = None, where: str = WHERE) -> StorageError | None:
  """The one-line `StorageError` for a write that failed on a full (ENOSPC, EDQUOT),
  read-only (EROFS) or forbidden (EACCES, EPERM) disk, or None for any other error.

  Args:
    e: the error: an OSError, or an error whose text carries one (tensorstore's
      "No space left on device [os_error_code='28']").
    path: what was being written (default: the error's filename).
    size: bytes the write needed, when known.
    where: the settings that move the output elsewhere, for the message.
  """
  code = getattr(e, "errno", None)
  if code not in STORAGE_ERRNOS:
    text = str(e)
    code = next((c for c in STORAGE_ERRNOS if f"os_error_code='{c}'" in text
                 or os.strerror(c) in text), None)
    if code is None:
      return None
  if isinstance(e, StorageError):
    return e
  path = os.fspath(path if path is not None else getattr(e, "filename", None) or "?")
  rerun = "then rerun the same command: what was saved is intact and the run resumes"
  if code in (errno.ENOSPC, errno.EDQUOT):
    try:
      free = f"{human_bytes(free_bytes(path))} free on {mount_point(path)}"
    except OSError:
      free = "free space unknown"
    need = f"needs {human_bytes(size)}, " if size else ""
    what = "disk full" if code == errno.ENOSPC else "disk quota exceeded"
    msg = (f"{what} writing {path} ({need}{free}); free space there or set {where} on a "
           f"larger disk, {rerun}")
  elif code == errno.EROFS:
    msg = (f"cannot write {path}: read-only file system; set {where} to a writable disk, "
           f"{rerun}")
  else:
    msg = f"cannot write {path}: permission denied; set {where} to a writable path, {rerun}"
  err = StorageError(msg)
  err.errno, err.filename = code, path
  return err


class Lock:
  """An exclusive lock on the file `path` (`fcntl.flock`), held until `release` or the
  end of the process, however it ends: the kernel drops it when a process is killed
  (SIGKILL included), so a crashed holder never leaves a point locked. The holder's pid
  is written into the file for messages. Advisory: it excludes only other `Lock`s.
  Within one process a path is locked through one `Lock` at a time."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._f = None

  @property
  def held(self) -> bool:
    return self._f is not None

  def acquire(self, blocking: bool = True) -> bool:
    """Take the lock (waiting for it when `blocking`); return whether it is held."""
    if self._f is not None:
      return True
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    f = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
      f.close()
      return False
    except BaseException:
      f.close()
      raise
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    self._f = f
    return True

  def holder(self) -> str:
    """The pid the last holder wrote, or '?'."""
    try:
      with open(self.path, encoding="utf-8") as f:
        return f.read().strip() or "?"
    except OSError:
      return "?"

  def release(self) -> None:
    if self._f is not None:
      fcntl.flock(self._f, fcntl.LOCK_UN)
      self._f.close()
      self._f = None

  def __enter__(self) -> "Lock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
