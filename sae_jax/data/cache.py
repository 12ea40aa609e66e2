"""The on-disk activation cache: its format, its writer and its reader (`sae_jax.data.harvest`
fills it from a language model).

Layout of one cache, ``<cache_root>/activations/<key>/``::

  meta.json              settings, shard list with sha256s, train-split statistics
  train/shard_00000.npy  [shard_tokens, d_in] float16 (bfloat16 is stored as its uint16 bits)
  train/tokens.npy       int32 [n_contexts, context_length]: the contexts the LM read
  eval/...               the same for the held-out documents

Row r of a split is context ``r // P`` at position ``r % P + exclude_first`` with
``P = context_length - exclude_first``. The key is a hash of every setting that
determines the content, so the same settings reuse the same directory without running
(or loading) the LM. A harvest writes into ``<key>.partial/`` shard by shard (each
shard renamed into place and recorded with its sha256 in ``progress.json``); a killed
run is continued by the next one from its first missing shard, and only a finished
cache (``meta.json`` with ``complete: true``) is renamed to ``<key>/`` and ever read.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil

import ml_dtypes
import numpy as np

import sae_jax
from sae_jax import files
from sae_jax.errors import CacheCorruptError, ConfigError

SPLITS = ("train", "eval")
CACHE_FORMAT = 1
_STORAGE = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}  # bf16 as bits
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ small file helpers


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a, allow_pickle=False)
  return buf.getvalue()


def write_npy(path: str, a: np.ndarray) -> dict:
  """Write an .npy atomically; return its record {file, n_rows, n_bytes, sha256}."""
  data = _npy_bytes(a)
  files.atomic_write_bytes(path, data)
  return dict(file=os.path.basename(path), n_rows=int(a.shape[0]), n_bytes=len(data),
              sha256=hashlib.sha256(data).hexdigest())


def to_storage(x_NxD: np.ndarray, dtype: str) -> np.ndarray:
  """float activations -> the stored array (float16, or bfloat16 as uint16 bits)."""
  if dtype == "float16":
    return np.asarray(x_NxD, np.float16)
  if dtype == "bfloat16":
    return np.asarray(x_NxD, ml_dtypes.bfloat16).view(np.uint16)
  raise ConfigError(f"dtype={dtype!r} is not float16 or bfloat16")


def from_storage(a: np.ndarray, dtype: str) -> np.ndarray:
  """The stored array -> float32."""
  if dtype == "bfloat16":
    return np.asarray(a).view(ml_dtypes.bfloat16).astype(np.float32)
  return np.asarray(a, np.float32)


# ---------------------------------------------------------------------------- writing


class ShardWriter:
  """Buffers activation rows of one split and writes fixed-size shards as they fill."""

  def __init__(self, split_dir: str, dtype: str, shard_tokens: int, records: list,
               on_shard=None):
    self.split_dir, self.dtype, self.shard_tokens = split_dir, dtype, shard_tokens
    self.records, self.on_shard = records, on_shard
    self._buf, self._n = [], 0

  def add(self, x_NxD: np.ndarray) -> None:
    s = to_storage(x_NxD, self.dtype)
    if self.dtype == "float16" and not np.isfinite(s).all():
      raise ConfigError(f"activations overflow float16 (max |x| = {np.abs(x_NxD).max():.4g}); "
                        "set data.dtype='bfloat16'")
    self._buf.append(s)
    self._n += len(s)
    while self._n >= self.shard_tokens:
      self._flush(self.shard_tokens)

  def close(self) -> None:
    if self._n:
      self._flush(self._n)

  def _flush(self, n: int) -> None:
    a = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
    block, rest = a[:n], a[n:]
    self._buf, self._n = ([rest] if len(rest) else []), len(rest)
    name = f"shard_{len(self.records):05d}.npy"
    self.records.append(write_npy(os.path.join(self.split_dir, name), block))
    if self.on_shard is not None:
      self.on_shard()


def _compute_stats(split_dir: str, records: list, dtype: str, d_in: int,
                   chunk: int = 16_384) -> dict:
  """float64 normalisation statistics of a split (of the stored, rounded values)."""
  s_D = np.zeros(d_in, np.float64)
  s_norm = s_sq = 0.0
  n = 0
  for rec in records:
    mm = np.load(os.path.join(split_dir, rec["file"]), mmap_mode="r")
    for i in range(0, len(mm), chunk):
      x = from_storage(mm[i:i + chunk], dtype).astype(np.float64)
      sq_N = np.einsum("nd,nd->n", x, x)
      s_D += x.sum(0)
      s_sq += sq_N.sum()
      s_norm += np.sqrt(sq_N).sum()
      n += len(x)
  mean_D = s_D / max(n, 1)
  mean_sq_norm = s_sq / max(n, 1)
  return dict(mean=mean_D.tolist(), mean_norm=s_norm / max(n, 1), mean_sq_norm=mean_sq_norm,
              total_variance=mean_sq_norm - float(mean_D @ mean_D), n_tokens=n)


def finalize(partial: str, final: str, meta: dict, records: dict, d_in: int) -> dict:
  """Add the per-split records and train statistics to meta, write it, rename into place."""
  meta = dict(meta)
  meta["d_in"] = int(d_in)
  meta["stats"] = dict(split="train", **_compute_stats(
      os.path.join(partial, "train"), records["train"]["shards"], meta["dtype"], d_in))
  meta["splits"] = records
  meta["sae_jax_version"] = sae_jax.__version__
  meta["format"] = CACHE_FORMAT
  meta["complete"] = True
  files.write_json_atomic(os.path.join(partial, "meta.json"), meta, sort_keys=True)
  if os.path.exists(os.path.join(partial, "progress.json")):
    os.remove(os.path.join(partial, "progress.json"))
  os.rename(partial, final)
  return meta


def write_cache(path: str, arrays: dict[str, np.ndarray], meta: dict, dtype: str = "float16",
                shard_tokens: int = 65_536,
                tokens: dict[str, np.ndarray] | None = None) -> "ActivationCache":
  """Write a complete cache from in-memory activations (tests, synthetic sources).

  Args:
    path: the cache directory to create (must not exist); written atomically via
      ``<path>.partial``.
    arrays: split name ("train" and optionally "eval") -> float [n_tokens, d_in].
    meta: extra metadata (model, layer, ...) stored in meta.json.
    dtype: "float16" or "bfloat16" storage.
    shard_tokens: rows per shard file.
    tokens: optional split -> int32 [n_contexts, context_length] token ids.

  Returns:
    The opened `ActivationCache`; its `stats` are those of arrays["train"] as stored.

  Raises:
    ConfigError: path exists, no "train" array, inconsistent widths, bad dtype.
  """
  if "train" not in arrays:
    raise ConfigError("write_cache needs a 'train' array (the statistics come from it)")
  widths = {a.shape[1] for a in arrays.values() if a.ndim == 2}
  if len(widths) != 1 or any(a.ndim != 2 for a in arrays.values()):
    raise ConfigError(f"write_cache arrays must be [n_tokens, d_in] with one d_in; got "
                      f"{ {k: a.shape for k, a in arrays.items()} }")
  if dtype not in _STORAGE:
    raise ConfigError(f"dtype={dtype!r} is not one of float16, bfloat16")
  if os.path.exists(path):
    raise ConfigError(f"{path} already exists; delete it or choose another path")
  partial = path.rstrip("/") + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  records = {}
  for split, x in arrays.items():
    os.makedirs(os.path.join(partial, split))
    shards: list = []
    w = ShardWriter(os.path.join(partial, split), dtype, shard_tokens, shards)
    for i in range(0, len(x), shard_tokens):
      w.add(np.asarray(x[i:i + shard_tokens]))
    w.close()
    rec = dict(n_tokens=int(len(x)), n_contexts=None, shards=shards, tokens=None)
    if tokens is not None and split in tokens:
      t = np.asarray(tokens[split], np.int32)
      rec["tokens"] = write_npy(os.path.join(partial, split, "tokens.npy"), t)
      rec["n_contexts"] = int(len(t))
    records[split] = rec
  finalize(partial, path, dict(meta, dtype=dtype, shard_tokens=int(shard_tokens)), records,
            widths.pop())
  return ActivationCache.open(path, verify=False)


# ---------------------------------------------------------------------------- reading


class ActivationCache:
  """Reader of a complete cache directory (see the module docstring for the layout).

  Attributes:
    path: the cache directory.
    meta: the parsed meta.json.
    d_in: activation width.
    stats: train-split statistics as numpy float64: mean [d_in], mean_norm (E||x||),
      mean_sq_norm (E||x||^2), total_variance (E||x - mean||^2).
  """

  def __init__(self, path: str, meta: dict):
    self.path, self.meta = path, meta
    self.d_in = int(meta["d_in"])
    self.dtype = meta["dtype"]
    self.shard_tokens = int(meta["shard_tokens"])
    st = meta["stats"]
    self.stats = dict(mean=np.asarray(st["mean"], np.float64),
                      **{k: np.float64(st[k]) for k in ("mean_norm", "mean_sq_norm",
                                                        "total_variance")})
    self._mmaps: dict[str, list[np.ndarray]] = {}

  @classmethod
  def open(cls, path: str, verify: bool = False) -> "ActivationCache":
    """Open a cache: O(metadata), every file's size and every shard's .npy header
    (shape, dtype) checked against meta.json; with `verify` also every sha256 (a full
    read: `sae-jax harvest --verify`). Rows are checked as they are read (`read`).

    Raises:
      ConfigError: no complete meta.json in `path`.
      CacheCorruptError: a shard is missing, truncated or altered.
    """
    meta_path = os.path.join(path, "meta.json")
    meta = files.read_json(meta_path)
    if not isinstance(meta, dict) or not meta.get("complete"):
      why = ("no meta.json" if not os.path.exists(meta_path) else
             f"{meta_path} is not valid JSON" if meta is None else
             f"{meta_path} does not say complete: true")
      raise ConfigError(f"{path} is not a complete activation cache ({why}); delete it and "
                        "harvest again")
    cache = cls(path, meta)
    for split in meta["splits"]:
      cache._mmaps[split] = [cache._load_shard(split, rec) for rec in meta["splits"][split]["shards"]]
      tok = meta["splits"][split].get("tokens")
      if tok:
        cache._check_size(os.path.join(path, split, tok["file"]), tok)
    if verify:
      cache.verify()
    return cache

  def _corrupt(self, file: str, why: str) -> CacheCorruptError:
    return CacheCorruptError(f"activation cache file {file} is {why}; delete {self.path} "
                             "to rebuild the cache")

  def _check_size(self, f: str, rec: dict) -> None:
    if not os.path.isfile(f):
      raise self._corrupt(f, "missing")
    if os.path.getsize(f) != rec["n_bytes"]:
      raise self._corrupt(f, f"truncated or altered ({os.path.getsize(f)} bytes, "
                          f"expected {rec['n_bytes']})")

  def _load_shard(self, split: str, rec: dict) -> np.ndarray:
    f = os.path.join(self.path, split, rec["file"])
    self._check_size(f, rec)
    try:
      mm = np.load(f, mmap_mode="r")
    except (ValueError, OSError) as e:
      raise self._corrupt(f, f"unreadable ({e})") from None
    if mm.shape != (rec["n_rows"], self.d_in) or mm.dtype != _STORAGE[self.dtype]:
      raise self._corrupt(f, f"of shape {mm.shape} {mm.dtype}, expected "
                          f"{(rec['n_rows'], self.d_in)} {_STORAGE[self.dtype]}")
    return mm

  def verify(self) -> None:
    """Check the sha256 of every shard and tokens file against meta.json.

    Raises:
      CacheCorruptError: naming the first bad file and the directory to delete.
    """
    for split, srec in self.meta["splits"].items():
      recs = list(srec["shards"]) + ([srec["tokens"]] if srec.get("tokens") else [])
      for rec in recs:
        f = os.path.join(self.path, split, rec["file"])
        if not os.path.isfile(f):
          raise self._corrupt(f, "missing")
        if files.file_sha256(f) != rec["sha256"]:
          raise self._corrupt(f, "corrupted (sha256 mismatch)")

  def n_tokens(self, split: str) -> int:
    """Number of activation rows in a split."""
    return int(self._split(split)["n_tokens"])

  def _split(self, split: str) -> dict:
    if split not in self.meta["splits"]:
      raise ConfigError(f"split {split!r} not in cache {self.path} "
                        f"(has {', '.join(self.meta['splits'])})")
    return self.meta["splits"][split]

  def read(self, split: str, rows: np.ndarray) -> np.ndarray:
    """Activations of arbitrary (unsorted, repeated) rows: float32 [len(rows), d_in].

    Every row read is checked to be finite (the writer refuses non-finite activations),
    which catches a shard altered after it was written at the cost of one comparison
    per value, not a hash.

    Raises:
      IndexError: a row outside [0, n_tokens(split)).
      CacheCorruptError: a row read is not finite; the message names its shard file.
    """
    rows_B = np.asarray(rows, np.int64).reshape(-1)
    n = self.n_tokens(split)
    if len(rows_B) and (rows_B.min() < 0 or rows_B.max() >= n):
      raise IndexError(f"rows must be in [0, {n}) for split {split!r}")
    out_BxD = np.empty((len(rows_B), self.d_in), np.float32)
    order = np.argsort(rows_B, kind="stable")
    sorted_rows = rows_B[order]
    shard_of = sorted_rows // self.shard_tokens
    bounds = np.searchsorted(shard_of, np.arange(len(self._mmaps[split]) + 1))
    for s, mm in enumerate(self._mmaps[split]):
      a, b = bounds[s], bounds[s + 1]
      if a < b:
        block = from_storage(mm[sorted_rows[a:b] - s * self.shard_tokens], self.dtype)
        if not np.isfinite(block).all():
          f = os.path.join(self.path, split, self._split(split)["shards"][s]["file"])
          raise self._corrupt(f, "corrupted (non-finite activations; `sae-jax harvest "
                              "--verify` checks every sha256)")
        out_BxD[order[a:b]] = block
    return out_BxD

  def tokens(self, split: str) -> np.ndarray:
    """The token ids the LM read: int32 [n_contexts, context_length].

    Raises:
      ConfigError: the cache was written without tokens (a synthetic cache).
    """
    rec = self._split(split).get("tokens")
    if not rec:
      raise ConfigError(f"cache {self.path} has no tokens for split {split!r} "
                        "(written by write_cache without tokens)")
    return np.load(os.path.join(self.path, split, rec["file"]))

  def __repr__(self) -> str:
    sizes = ", ".join(f"{s}={self.n_tokens(s)}" for s in self.meta["splits"])
    return f"ActivationCache({self.path!r}, d_in={self.d_in}, {sizes}, dtype={self.dtype})"
