"""The activation cache: its format, its writer and its reader (`sae_jax.data.harvest`
fills it from a language model).

Two layouts of the same content, chosen by `data.cache_dir` (`layout_of`):

* a local path (the default, and the fastest on one machine: `benchmarks/cache_backends.py`):
  ``<cache_root>/activations/<key>/``::

    meta.json              settings, shard list with sha256s, train-split statistics
    train/shard_00000.npy  [shard_tokens, d_in] float16 (bfloat16 stored as its uint16 bits)
    train/tokens.npy       int32 [n_contexts, context_length]: the contexts the LM read
    eval/...               the same for the held-out documents

  written into ``<key>.partial/`` and renamed to ``<key>/`` when complete;

* a URL (``file://``, ``gs://``, ``s3://``, ``memory://``): object storage through
  tensorstore's kvstores, ``<url>/activations/<key>/`` holding the same ``meta.json``
  and ``<split>/tokens.npy``, and per split one zarr3 array ``<split>/activations/`` of
  shape [n_tokens, d_in] whose chunks are the shards (``shard_tokens`` rows, one object
  each, the unit a harvest process writes) split into inner chunks of `READ_CHUNK_ROWS`
  rows with a crc32c each (the unit a read fetches: a host reads only the rows it asks
  for). Object stores have no rename: the cache is complete once ``meta.json`` (written
  last) exists; missing chunks read as NaN and are refused like altered ones.

Row r of a split is context ``r // P`` at position ``r % P + exclude_first`` with
``P = context_length - exclude_first``; shard s holds rows [s * shard_tokens, (s + 1) *
shard_tokens). The key is a hash of every setting that determines the content, so the
same settings reuse the same cache without running (or loading) the LM. A harvest
records each shard with its sha256 in ``progress.json`` (``progress_<i>.json`` for
process i of a multi-host harvest) as it is written; a killed run is continued by the
next one from the shards still missing, and only a finished cache (``meta.json`` with
``complete: true``) is ever read.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import shutil
import urllib.parse

import ml_dtypes
import numpy as np
import tensorstore as ts

import sae_jax
from sae_jax import files
from sae_jax.errors import CacheCorruptError, ConfigError

SPLITS = ("train", "eval")
CACHE_FORMAT = 1
_STORAGE = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}  # bf16 as bits
_NAN_BITS = {"float16": "NaN", "bfloat16": 0xFFFF}  # zarr fill value: a missing chunk is NaN
URL_SCHEMES = ("file", "memory", "gs", "s3")  # tensorstore kvstore drivers a cache may use
READ_CHUNK_ROWS = 256  # rows of a zarr inner chunk: the smallest read of a URL cache
_MAX_SLICE_READS = 256  # more runs of consecutive rows than this: one index-array read
URL_TIMEOUT_S = 60.0  # the first metadata read of a URL cache must answer within this
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


def stored_rows(x_NxD: np.ndarray, dtype: str) -> np.ndarray:
  """`to_storage`, refusing activations that overflow float16.

  Raises:
    ConfigError: a value is not finite in float16 (says to set data.dtype='bfloat16').
  """
  s = to_storage(x_NxD, dtype)
  if dtype == "float16" and not np.isfinite(s).all():
    raise ConfigError(f"activations overflow float16 (max |x| = {np.abs(x_NxD).max():.4g}); "
                      "set data.dtype='bfloat16'")
  return s


# ---------------------------------------------------------------------------- layouts


_TS_CONTEXT: list = []


def _ts_context() -> "ts.Context":
  """One tensorstore context per process, so that every open of a ``memory://`` URL sees
  the same store (and chunk caches are shared)."""
  if not _TS_CONTEXT:
    _TS_CONTEXT.append(ts.Context())
  return _TS_CONTEXT[0]


def check_url(url: str, what: str = "data.cache_dir") -> None:
  """Raise ConfigError unless `url` has a scheme the cache can use (`URL_SCHEMES`)."""
  scheme = urllib.parse.urlsplit(url).scheme
  if scheme not in URL_SCHEMES:
    raise ConfigError(f"{what}={url!r} has the unknown scheme {scheme!r}; use a local path "
                      "or a file://, gs://, s3:// or memory:// URL")


def join(location: str, *names: str) -> str:
  """A path or URL below `location`."""
  if files.is_url(location):
    return "/".join([location.rstrip("/")] + [n.strip("/") for n in names])
  return os.path.join(location, *names)


def layout_of(location: str) -> "NpyLayout | ZarrLayout":
  """The layout of the cache at `location`: a URL -> `ZarrLayout`, a path -> `NpyLayout`.

  Raises:
    ConfigError: a URL with a scheme not in `URL_SCHEMES`.
  """
  if files.is_url(location):
    check_url(location)
    return ZarrLayout(location)
  return NpyLayout(location)


class NpyLayout:
  """A cache in a local directory: one .npy file per shard, written into
  ``<path>.partial/`` and renamed to ``<path>/`` once complete."""

  def __init__(self, path: str):
    self.location = path
    self.partial = path.rstrip("/") + ".partial"
    self.lock_path: str | None = path + ".lock"

  def is_complete(self) -> bool:
    return os.path.isdir(self.location)

  def read_json(self, name: str):
    return files.read_json(os.path.join(self.partial, name))

  def write_json(self, name: str, obj) -> None:
    files.write_json_atomic(os.path.join(self.partial, name), obj)

  def delete(self, name: str) -> None:
    if os.path.exists(os.path.join(self.partial, name)):
      os.remove(os.path.join(self.partial, name))

  def discard(self) -> None:
    shutil.rmtree(self.partial, ignore_errors=True)

  def create(self, n_tokens: dict, d_in: int, dtype: str, shard_tokens: int) -> None:
    for split in n_tokens:
      os.makedirs(os.path.join(self.partial, split), exist_ok=True)

  def write_shard(self, split: str, index: int, block: np.ndarray) -> dict:
    return dict(write_npy(os.path.join(self.partial, split, f"shard_{index:05d}.npy"), block),
                index=int(index))

  def shard_ok(self, split: str, rec: dict, shard_tokens: int) -> bool:
    f = os.path.join(self.partial, split, rec["file"])
    return (os.path.isfile(f) and os.path.getsize(f) == rec["n_bytes"]
            and files.file_sha256(f) == rec["sha256"])

  def read_shard(self, split: str, rec: dict, shard_tokens: int) -> np.ndarray:
    return np.load(os.path.join(self.partial, split, rec["file"]), mmap_mode="r")

  def read_tokens(self, split: str) -> np.ndarray | None:
    f = os.path.join(self.partial, split, "tokens.npy")
    return np.load(f) if os.path.isfile(f) else None

  def write_tokens(self, split: str, tok: np.ndarray) -> dict:
    return write_npy(os.path.join(self.partial, split, "tokens.npy"), tok)

  def commit(self, meta: dict) -> None:
    files.write_json_atomic(os.path.join(self.partial, "meta.json"), meta, sort_keys=True)
    os.rename(self.partial, self.location)


class ZarrLayout:
  """A cache at a URL through tensorstore: ``meta.json``, ``progress*.json`` and
  ``<split>/tokens.npy`` as kvstore keys, the activations of a split as one zarr3 array
  ``<split>/activations/`` (module docstring). Written in place; complete once
  ``meta.json`` exists."""

  def __init__(self, url: str):
    self.location = url.rstrip("/") + "/"
    parts = urllib.parse.urlsplit(self.location)
    self.lock_path = (urllib.parse.unquote(parts.path).rstrip("/") + ".lock"
                      if parts.scheme == "file" else None)  # object stores: no lock
    self._kv = None
    self._arrays: dict = {}  # split -> the opened zarr3 array

  def _fail(self, e: Exception, doing: str) -> ConfigError:
    return ConfigError(f"cannot {doing} the activation cache at {self.location} "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no answer'}"
                       f"); check the URL, the network and the credentials "
                       "(GOOGLE_APPLICATION_CREDENTIALS, AWS_*), or use a local data.cache_dir")

  @property
  def kv(self) -> "ts.KvStore":
    if self._kv is None:
      try:
        self._kv = ts.KvStore.open(self.location, context=_ts_context()).result(
            timeout=URL_TIMEOUT_S)
      except (ValueError, TimeoutError, RuntimeError) as e:
        raise self._fail(e, "open") from None
    return self._kv

  def read_bytes(self, name: str) -> bytes | None:
    try:
      r = self.kv.read(name).result(timeout=URL_TIMEOUT_S)
    except (ValueError, TimeoutError, RuntimeError) as e:
      raise self._fail(e, "read") from None
    return bytes(r.value) if r.state == "value" else None

  def write_bytes(self, name: str, data: bytes) -> None:
    try:
      self.kv.write(name, data).result()
    except (ValueError, RuntimeError) as e:
      raise self._fail(e, "write to") from None

  def read_json(self, name: str):
    data = self.read_bytes(name)
    try:
      return None if data is None else json.loads(data)
    except ValueError:
      return None

  def write_json(self, name: str, obj, sort_keys: bool = False) -> None:
    self.write_bytes(name, json.dumps(obj, indent=1, sort_keys=sort_keys).encode())

  def is_complete(self) -> bool:
    meta = self.read_json("meta.json")
    return bool(meta and meta.get("complete"))

  def delete(self, name: str) -> None:
    self.kv.delete_range(ts.KvStore.KeyRange(name, name + "\0")).result()

  def discard(self) -> None:
    self._arrays = {}
    self.kv.delete_range(ts.KvStore.KeyRange()).result()

  def array(self, split: str, create: dict | None = None) -> "ts.TensorStore":
    """The zarr3 array of a split; `create` (n_rows, d_in, dtype, shard_tokens) makes it
    if missing."""
    if create is None and split in self._arrays:
      return self._arrays[split]
    spec = {"driver": "zarr3", "kvstore": self.location + f"{split}/activations/"}
    if create is not None:
      T, dtype = int(create["shard_tokens"]), create["dtype"]
      inner = [min(READ_CHUNK_ROWS, T), int(create["d_in"])]
      raw = [{"name": "bytes", "configuration": {"endian": "little"}}]
      spec.update(open=True, create=True, metadata={
          "shape": [int(create["n_rows"]), int(create["d_in"])],
          "data_type": _STORAGE[dtype].name,
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [T, inner[1]]}},
          "codecs": [{"name": "sharding_indexed", "configuration": {
              "chunk_shape": inner, "codecs": raw + [{"name": "crc32c"}],
              "index_codecs": raw + [{"name": "crc32c"}]}}],
          "fill_value": _NAN_BITS[dtype]})
    try:
      self._arrays[split] = ts.open(spec, context=_ts_context()).result(timeout=URL_TIMEOUT_S)
    except (ValueError, TimeoutError, RuntimeError) as e:
      raise self._fail(e, "open the zarr array of split " + split + " of") from None
    return self._arrays[split]

  def create(self, n_tokens: dict, d_in: int, dtype: str, shard_tokens: int) -> None:
    for split, n in n_tokens.items():
      self.array(split, dict(n_rows=n, d_in=d_in, dtype=dtype, shard_tokens=shard_tokens))

  def write_shard(self, split: str, index: int, block: np.ndarray) -> dict:
    n = len(block)
    arr = self.array(split)
    T = arr.chunk_layout.write_chunk.shape[0]
    arr[index * T:index * T + n].write(np.ascontiguousarray(block)).result()
    return dict(index=int(index), n_rows=int(n),
                sha256=hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest())

  def read_shard(self, split: str, rec: dict, shard_tokens: int) -> np.ndarray:
    s = int(rec["index"]) * shard_tokens
    return self.array(split)[s:s + rec["n_rows"]].read().result()

  def shard_ok(self, split: str, rec: dict, shard_tokens: int) -> bool:
    try:
      block = self.read_shard(split, rec, shard_tokens)
    except (ValueError, RuntimeError):
      return False
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest() == rec["sha256"]

  def read_tokens(self, split: str) -> np.ndarray | None:
    data = self.read_bytes(f"{split}/tokens.npy")
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)

  def write_tokens(self, split: str, tok: np.ndarray) -> dict:
    data = _npy_bytes(tok)
    self.write_bytes(f"{split}/tokens.npy", data)
    return dict(file="tokens.npy", n_rows=int(tok.shape[0]), n_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest())

  def commit(self, meta: dict) -> None:
    self.write_json("meta.json", meta, sort_keys=True)


# ---------------------------------------------------------------------------- writing


class ShardWriter:
  """Buffers activation rows of one split and writes fixed-size shards as they fill.

  sink: a directory (shards ``shard_<i>.npy`` there) or a function (index, stored block
  [n, d_in]) -> the shard's record (`NpyLayout.write_shard`, `ZarrLayout.write_shard`).
  """

  def __init__(self, sink, dtype: str, shard_tokens: int, records: list, on_shard=None):
    if isinstance(sink, str):
      directory = sink
      sink = lambda i, a: write_npy(os.path.join(directory, f"shard_{i:05d}.npy"), a)
    self.sink, self.dtype, self.shard_tokens = sink, dtype, shard_tokens
    self.records, self.on_shard = records, on_shard
    self._buf, self._n = [], 0

  def add(self, x_NxD: np.ndarray) -> None:
    s = stored_rows(x_NxD, self.dtype)
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
    self.records.append(self.sink(len(self.records), block))
    if self.on_shard is not None:
      self.on_shard()


def _compute_stats(layout, split: str, records: list, dtype: str, d_in: int, shard_tokens: int,
                   chunk: int = 16_384) -> dict:
  """float64 normalisation statistics of a split (of the stored, rounded values)."""
  s_D = np.zeros(d_in, np.float64)
  s_norm = s_sq = 0.0
  n = 0
  for rec in records:
    mm = layout.read_shard(split, rec, shard_tokens)
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


def finalize(layout, meta: dict, records: dict, d_in: int,
             progress_files: tuple = ("progress.json",)) -> dict:
  """Add the per-split records (ordered by shard) and train statistics to meta, remove
  the progress files, write meta.json (and rename a local cache into place)."""
  meta = dict(meta)
  meta["d_in"] = int(d_in)
  meta["stats"] = dict(split="train", **_compute_stats(
      layout, "train", records["train"]["shards"], meta["dtype"], d_in, meta["shard_tokens"]))
  meta["splits"] = records
  meta["sae_jax_version"] = sae_jax.__version__
  meta["format"] = CACHE_FORMAT
  meta["complete"] = True
  if isinstance(layout, ZarrLayout):
    meta["layout"] = "zarr3"
  for name in progress_files:
    layout.delete(name)
  layout.commit(meta)
  return meta


def write_cache(path: str, arrays: dict[str, np.ndarray], meta: dict, dtype: str = "float16",
                shard_tokens: int = 65_536,
                tokens: dict[str, np.ndarray] | None = None) -> "ActivationCache":
  """Write a complete cache from in-memory activations (tests, synthetic sources).

  Args:
    path: the cache to create (must not exist): a local directory, written atomically via
      ``<path>.partial``, or a URL (`layout_of`).
    arrays: split name ("train" and optionally "eval") -> float [n_tokens, d_in].
    meta: extra metadata (model, layer, ...) stored in meta.json.
    dtype: "float16" or "bfloat16" storage.
    shard_tokens: rows per shard.
    tokens: optional split -> int32 [n_contexts, context_length] token ids.

  Returns:
    The opened `ActivationCache`; its `stats` are those of arrays["train"] as stored.

  Raises:
    ConfigError: path exists, no "train" array, inconsistent widths, bad dtype, a URL with
      an unknown scheme or unreachable.
  """
  if "train" not in arrays:
    raise ConfigError("write_cache needs a 'train' array (the statistics come from it)")
  widths = {a.shape[1] for a in arrays.values() if a.ndim == 2}
  if len(widths) != 1 or any(a.ndim != 2 for a in arrays.values()):
    raise ConfigError(f"write_cache arrays must be [n_tokens, d_in] with one d_in; got "
                      f"{ {k: a.shape for k, a in arrays.items()} }")
  if dtype not in _STORAGE:
    raise ConfigError(f"dtype={dtype!r} is not one of {', '.join(_STORAGE)}")
  layout = layout_of(path)
  if layout.is_complete():
    raise ConfigError(f"{path} already exists; delete it or choose another path")
  layout.discard()
  d_in = widths.pop()
  layout.create({s: len(x) for s, x in arrays.items()}, d_in, dtype, shard_tokens)
  records = {}
  for split, x in arrays.items():
    shards: list = []
    w = ShardWriter(functools.partial(layout.write_shard, split), dtype, shard_tokens, shards)
    for i in range(0, len(x), shard_tokens):
      w.add(np.asarray(x[i:i + shard_tokens]))
    w.close()
    rec = dict(n_tokens=int(len(x)), n_contexts=None, shards=shards, tokens=None)
    if tokens is not None and split in tokens:
      t = np.asarray(tokens[split], np.int32)
      rec["tokens"] = layout.write_tokens(split, t)
      rec["n_contexts"] = int(len(t))
    records[split] = rec
  finalize(layout, dict(meta, dtype=dtype, shard_tokens=int(shard_tokens)), records, d_in)
  return ActivationCache.open(path, verify=False)


# ---------------------------------------------------------------------------- reading


class ActivationCache:
  """Reader of a complete cache, local or at a URL (see the module docstring for both
  layouts).

  Attributes:
    path: the cache directory or URL.
    meta: the parsed meta.json.
    d_in: activation width.
    stats: train-split statistics as numpy float64: mean [d_in], mean_norm (E||x||),
      mean_sq_norm (E||x||^2), total_variance (E||x - mean||^2).
  """

  def __init__(self, path: str, meta: dict, layout=None):
    self.path, self.meta = path, meta
    self.layout = layout or layout_of(path)
    self.d_in = int(meta["d_in"])
    self.dtype = meta["dtype"]
    self.shard_tokens = int(meta["shard_tokens"])
    st = meta["stats"]
    self.stats = dict(mean=np.asarray(st["mean"], np.float64),
                      **{k: np.float64(st[k]) for k in ("mean_norm", "mean_sq_norm",
                                                        "total_variance")})
    self._mmaps: dict[str, list[np.ndarray]] = {}  # local layout: the shards, memory-mapped
    self._arrays: dict[str, "ts.TensorStore"] = {}  # URL layout: one zarr3 array per split

  @classmethod
  def open(cls, path: str, verify: bool = False) -> "ActivationCache":
    """Open a cache: O(metadata). Locally every file's size and every shard's .npy header
    (shape, dtype) are checked against meta.json; at a URL each split's zarr3 metadata
    (shape, dtype). With `verify` also every sha256 (a full read: `sae-jax harvest
    --verify`). Rows are checked as they are read (`read`).

    Raises:
      ConfigError: no complete meta.json at `path`; a URL with an unknown scheme or that
        does not answer.
      CacheCorruptError: a shard is missing, truncated or altered.
    """
    layout = layout_of(path)
    if isinstance(layout, ZarrLayout):
      meta_path = path.rstrip("/") + "/meta.json"
      meta = layout.read_json("meta.json")
      exists = meta is not None or layout.read_bytes("meta.json") is not None
    else:
      meta_path = os.path.join(path, "meta.json")
      meta = files.read_json(meta_path)
      exists = os.path.exists(meta_path)
    if not isinstance(meta, dict) or not meta.get("complete"):
      why = ("no meta.json" if not exists else
             f"{meta_path} is not valid JSON" if meta is None else
             f"{meta_path} does not say complete: true")
      raise ConfigError(f"{path} is not a complete activation cache ({why}); delete it and "
                        "harvest again")
    cache = cls(path, meta, layout)
    for split in meta["splits"]:
      if isinstance(layout, ZarrLayout):
        arr = layout.array(split)
        want = (cache.n_tokens(split), cache.d_in)
        if tuple(arr.shape) != want or arr.dtype.numpy_dtype != _STORAGE[cache.dtype]:
          raise cache._corrupt(join(path, split, "activations"), f"of shape {arr.shape} "
                               f"{arr.dtype}, expected {want} {_STORAGE[cache.dtype]}")
        cache._arrays[split] = arr
        continue
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

  def _shard_name(self, split: str, s: int) -> str:
    """The file (local) or the zarr chunk (URL) of shard s."""
    if self._arrays:
      return join(self.path, split, f"activations/c/{s}/0 (rows {s * self.shard_tokens}.."
                  f"{min((s + 1) * self.shard_tokens, self.n_tokens(split)) - 1})")
    return os.path.join(self.path, split, self._split(split)["shards"][s]["file"])

  def _read_zarr(self, split: str, s: int, rows) -> np.ndarray:
    """Stored rows of a split (a slice, or sorted row indices) through tensorstore: runs
    of consecutive rows as concurrent slice reads (measured ~4x faster than one
    index-array read of the same rows), scattered rows as one index-array read."""
    arr = self._arrays[split]
    try:
      if isinstance(rows, slice):
        return arr[rows].read().result()
      uniq = np.unique(rows)
      cut = np.flatnonzero(np.diff(uniq) != 1) + 1
      if len(cut) < _MAX_SLICE_READS:
        starts, ends = uniq[np.r_[0, cut]], uniq[np.r_[cut - 1, len(uniq) - 1]] + 1
        futures = [arr[int(a):int(b)].read() for a, b in zip(starts, ends)]
        data = np.concatenate([f.result() for f in futures])
      else:
        data = arr[uniq].read().result()
      return data if len(uniq) == len(rows) else data[np.searchsorted(uniq, rows)]
    except (ValueError, RuntimeError) as e:  # a crc32c mismatch, an unreadable chunk
      raise self._corrupt(self._shard_name(split, s), f"unreadable ({str(e).splitlines()[0]})"
                          ) from None

  def verify(self) -> None:
    """Check the sha256 of every shard and tokens file against meta.json.

    Raises:
      CacheCorruptError: naming the first bad file and the cache to delete.
    """
    for split, srec in self.meta["splits"].items():
      if self._arrays:
        for s, rec in enumerate(srec["shards"]):
          lo = s * self.shard_tokens
          block = self._read_zarr(split, s, slice(lo, lo + rec["n_rows"]))
          if hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest() != rec["sha256"]:
            raise self._corrupt(self._shard_name(split, s), "corrupted (sha256 mismatch)")
        tok = srec.get("tokens")
        if tok:
          data = self.layout.read_bytes(f"{split}/tokens.npy")
          if data is None or hashlib.sha256(data).hexdigest() != tok["sha256"]:
            raise self._corrupt(join(self.path, split, "tokens.npy"),
                                "missing" if data is None else "corrupted (sha256 mismatch)")
        continue
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

    Only the shards (local) or inner chunks of `READ_CHUNK_ROWS` rows (URL) that hold
    the rows are read: a process of a multi-host run that asks for its share of a batch
    reads only that. Every row read is checked to be finite (the writer refuses
    non-finite activations, and a missing zarr chunk reads as NaN), which catches a
    shard altered or lost after it was written at the cost of one comparison per value,
    not a hash.

    Raises:
      IndexError: a row outside [0, n_tokens(split)).
      CacheCorruptError: a row read is not finite, or a chunk fails its crc32c; the
        message names its shard.
    """
    rows_B = np.asarray(rows, np.int64).reshape(-1)
    n = self.n_tokens(split)
    if len(rows_B) and (rows_B.min() < 0 or rows_B.max() >= n):
      raise IndexError(f"rows must be in [0, {n}) for split {split!r}")
    out_BxD = np.empty((len(rows_B), self.d_in), np.float32)
    order = np.argsort(rows_B, kind="stable")
    sorted_rows = rows_B[order]
    if split in self._arrays:
      if not len(rows_B):
        return out_BxD
      block = from_storage(self._read_zarr(split, int(sorted_rows[0]) // self.shard_tokens,
                                           sorted_rows), self.dtype)
      bad = ~np.isfinite(block).all(axis=1)
      if bad.any():
        s = int(sorted_rows[np.argmax(bad)]) // self.shard_tokens
        raise self._corrupt(self._shard_name(split, s), "corrupted or missing (non-finite "
                            "activations; `sae-jax harvest --verify` checks every sha256)")
      out_BxD[order] = block
      return out_BxD
    shard_of = sorted_rows // self.shard_tokens
    bounds = np.searchsorted(shard_of, np.arange(len(self._mmaps[split]) + 1))
    for s, mm in enumerate(self._mmaps[split]):
      a, b = bounds[s], bounds[s + 1]
      if a < b:
        block = from_storage(mm[sorted_rows[a:b] - s * self.shard_tokens], self.dtype)
        if not np.isfinite(block).all():
          raise self._corrupt(self._shard_name(split, s), "corrupted (non-finite "
                              "activations; `sae-jax harvest --verify` checks every sha256)")
        out_BxD[order[a:b]] = block
    return out_BxD

  def tokens(self, split: str) -> np.ndarray:
    """The token ids the LM read: int32 [n_contexts, context_length].

    Raises:
      ConfigError: the cache was written without tokens (a synthetic cache).
      CacheCorruptError: a URL cache's tokens.npy is missing.
    """
    rec = self._split(split).get("tokens")
    if not rec:
      raise ConfigError(f"cache {self.path} has no tokens for split {split!r} "
                        "(written by write_cache without tokens)")
    if self._arrays:
      tok = self.layout.read_tokens(split)
      if tok is None:
        raise self._corrupt(join(self.path, split, "tokens.npy"), "missing")
      return tok
    return np.load(os.path.join(self.path, split, rec["file"]))

  def __repr__(self) -> str:
    sizes = ", ".join(f"{s}={self.n_tokens(s)}" for s in self.meta["splits"])
    return f"ActivationCache({self.path!r}, d_in={self.d_in}, {sizes}, dtype={self.dtype})"
