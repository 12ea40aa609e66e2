"""The on-disk activation cache, and the harvest that fills it (corpus -> LM -> cache).

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

import contextlib
import fcntl
import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import shutil
import sys

import ml_dtypes
import numpy as np

from sae_jax import config as config_lib
from sae_jax import files
from sae_jax import corpus as corpus_lib
from sae_jax import lm as lm_lib
from sae_jax.config import ConfigError

SPLITS = ("train", "eval")
CACHE_FORMAT = 1
_STORAGE = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}  # bf16 as bits
log = logging.getLogger(__name__)


class CacheCorruptError(ConfigError):
  """A cache file is missing, truncated or does not match its recorded sha256."""


def _version() -> str:
  try:
    return importlib.metadata.version("sae_jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


# ------------------------------------------------------------------ small file helpers


def _atomic_write_json(path: str, obj) -> None:
  files.atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def _read_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a, allow_pickle=False)
  return buf.getvalue()


def _write_npy(path: str, a: np.ndarray) -> dict:
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


class _ShardWriter:
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
    self.records.append(_write_npy(os.path.join(self.split_dir, name), block))
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


def _finalize(partial: str, final: str, meta: dict, records: dict, d_in: int) -> dict:
  """Add the per-split records and train statistics to meta, write it, rename into place."""
  meta = dict(meta)
  meta["d_in"] = int(d_in)
  meta["stats"] = dict(split="train", **_compute_stats(
      os.path.join(partial, "train"), records["train"]["shards"], meta["dtype"], d_in))
  meta["splits"] = records
  meta["sae_jax_version"] = _version()
  meta["format"] = CACHE_FORMAT
  meta["complete"] = True
  _atomic_write_json(os.path.join(partial, "meta.json"), meta)
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
    w = _ShardWriter(os.path.join(partial, split), dtype, shard_tokens, shards)
    for i in range(0, len(x), shard_tokens):
      w.add(np.asarray(x[i:i + shard_tokens]))
    w.close()
    rec = dict(n_tokens=int(len(x)), n_contexts=None, shards=shards, tokens=None)
    if tokens is not None and split in tokens:
      t = np.asarray(tokens[split], np.int32)
      rec["tokens"] = _write_npy(os.path.join(partial, split, "tokens.npy"), t)
      rec["n_contexts"] = int(len(t))
    records[split] = rec
  _finalize(partial, path, dict(meta, dtype=dtype, shard_tokens=int(shard_tokens)), records,
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
  def open(cls, path: str, verify: bool = True) -> "ActivationCache":
    """Open a cache; check every file's size and shape, and with verify its sha256.

    Raises:
      ConfigError: no complete meta.json in `path`.
      CacheCorruptError: a shard is missing, truncated or altered.
    """
    meta = _read_json(os.path.join(path, "meta.json"))
    if not meta or not meta.get("complete"):
      raise ConfigError(f"{path} is not a complete activation cache (no meta.json with "
                        "complete: true); delete it and harvest again")
    cache = cls(path, meta)
    for split in meta["splits"]:
      cache._mmaps[split] = [cache._load_shard(split, rec) for rec in meta["splits"][split]["shards"]]
    if verify:
      cache.verify()
    return cache

  def _corrupt(self, file: str, why: str) -> CacheCorruptError:
    return CacheCorruptError(f"activation cache file {file} is {why}; delete {self.path} "
                             "to rebuild the cache")

  def _load_shard(self, split: str, rec: dict) -> np.ndarray:
    f = os.path.join(self.path, split, rec["file"])
    if not os.path.isfile(f):
      raise self._corrupt(f, "missing")
    if os.path.getsize(f) != rec["n_bytes"]:
      raise self._corrupt(f, f"truncated or altered ({os.path.getsize(f)} bytes, "
                          f"expected {rec['n_bytes']})")
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
        if lm_lib.file_sha256(f) != rec["sha256"]:
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

    Raises:
      IndexError: a row outside [0, n_tokens(split)).
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
        out_BxD[order[a:b]] = from_storage(mm[sorted_rows[a:b] - s * self.shard_tokens],
                                           self.dtype)
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


# ---------------------------------------------------------------------------- harvest


def cache_settings(cfg, weights_hash: str, layer: int, corpus_hash: str) -> dict:
  """The settings that determine a cache's content (hashed into its key)."""
  d = cfg.data
  return dict(
      format=CACHE_FORMAT, model=d.model, weights_hash=weights_hash, layer=int(layer),
      site=d.site, dtype=d.dtype, context_length=int(d.context_length),
      exclude_first=bool(d.exclude_first), corpus=d.corpus, corpus_hash=corpus_hash,
      n_train_tokens=int(d.n_train_tokens), n_eval_tokens=int(d.n_eval_tokens),
      eval_doc_fraction=float(d.eval_doc_fraction), shard_tokens=int(d.shard_tokens),
      torch_dtype=d.torch_dtype, seed=int(cfg.seed))


def cache_key(settings: dict) -> str:
  """First 16 hex digits of the sha256 of the settings' canonical JSON."""
  blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _say(msg: str, progress: bool) -> None:
  log.info(msg)
  if progress:
    print(f"[sae_jax] {msg}", file=sys.stderr, flush=True)


def _verified_prefix(split_dir: str, shards: list) -> list:
  """The leading shards whose files exist with the recorded size and sha256."""
  good = []
  for rec in shards:
    f = os.path.join(split_dir, rec["file"])
    if not (os.path.isfile(f) and os.path.getsize(f) == rec["n_bytes"]
            and lm_lib.file_sha256(f) == rec["sha256"]):
      break
    good.append(rec)
  return good


def _split_docs(spec: str, docs, eval_fraction: float, seed: int):
  """(train docs, eval docs): shuffled lists, or for a streamed corpus lazy filters."""
  if corpus_lib.is_streaming(spec):
    def stream(want_eval):
      for doc in corpus_lib.load_documents(spec, ""):
        if corpus_lib.in_eval_split(doc.id, eval_fraction, seed) == want_eval:
          yield doc
    return stream(False), stream(True)
  return corpus_lib.split_documents(docs, eval_fraction, seed)


def context_tokens(tokenizer, docs, n_tokens: int, context_length: int, exclude_first: bool,
                   split: str, spec: str) -> np.ndarray:
  """Token ids of the contexts that hold `n_tokens` activation rows: int32 [C, S].

  Tokenizes documents in order, lazily, only as many as needed; documents are
  separated by the tokenizer's EOS (`corpus.iter_contexts`).

  Raises:
    ConfigError: the split has too little text for n_tokens.
  """
  P = context_length - int(exclude_first)
  n_ctx = math.ceil(n_tokens / P)
  tok_CxS = corpus_lib.pack_contexts(corpus_lib.tokenize_lazily(tokenizer, docs), context_length,
                                     eos_id=tokenizer.eos_token_id, max_contexts=n_ctx)
  if len(tok_CxS) < n_ctx:
    raise ConfigError(
        f"the {split} split of corpus {spec!r} has only {len(tok_CxS) * P} tokens "
        f"({len(tok_CxS)} contexts of {context_length}), fewer than data.n_{split}_tokens="
        f"{n_tokens}; lower data.n_{split}_tokens or add text")
  return tok_CxS


def get_or_harvest(cfg, progress: bool = True) -> ActivationCache:
  """The activation cache for a config: reused if complete, continued if half-written,
  else harvested (corpus -> split by document -> tokens -> LM residual stream -> shards).

  Uses ``cfg.data.*`` and ``cfg.seed``. The layer defaults to `config.middle_layer`. The
  LM is loaded only when activations must be computed.

  Returns:
    The opened, verified `ActivationCache`.

  Raises:
    ConfigError: an invalid setting, an unwritable cache dir, an unknown model, a layer
      out of range, or a corpus split with too little text for its token budget.
    CacheCorruptError: the complete cache for these settings fails verification.
  """
  config_lib.validate(cfg)
  d = cfg.data
  if d.site != "residual":
    raise ConfigError(f"data.site={d.site!r} is not supported; use 'residual'")
  root = config_lib.cache_root(cfg)
  act_dir = os.path.join(root, "activations")
  files.check_writable(act_dir, "the activation cache directory",
                      "set data.cache_dir or SAE_JAX_CACHE to a writable path")

  info = lm_lib.describe_lm(d.model, root)
  layer = config_lib.middle_layer(info["n_layers"]) if d.layer is None else int(d.layer)
  lm_lib.check_layer(layer, info["n_layers"], d.model)
  if corpus_lib.is_streaming(d.corpus):
    docs, c_hash = None, hashlib.sha256(d.corpus.encode()).hexdigest()  # identified by name
  else:
    docs = corpus_lib.load_documents(d.corpus, root)
    c_hash = corpus_lib.corpus_hash(docs)
  settings = cache_settings(cfg, info["weights_hash"], layer, c_hash)
  key = cache_key(settings)
  final = os.path.join(act_dir, key)
  if os.path.isdir(final):
    _say(f"reusing activation cache {final}", progress)
    return ActivationCache.open(final)
  with _harvest_lock(final + ".lock", progress):
    if os.path.isdir(final):  # another process finished it while we waited
      _say(f"reusing activation cache {final}", progress)
      return ActivationCache.open(final)
    cache = _harvest(cfg, root, info, layer, docs, settings, key, final, progress)
    os.remove(final + ".lock")  # safe: `final` exists, so nobody locks this path again
    return cache


@contextlib.contextmanager
def _harvest_lock(path: str, progress: bool):
  """An exclusive lock so two processes never write the same `.partial` directory."""
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      _say(f"waiting for another process that is harvesting {path[:-len('.lock')]}", progress)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _harvest(cfg, root: str, info: dict, layer: int, docs, settings: dict, key: str,
             final: str, progress: bool) -> ActivationCache:
  """Harvest (or continue harvesting) into `<final>.partial`, then rename it to `final`."""
  d = cfg.data
  partial = final + ".partial"
  n_tok = {"train": int(d.n_train_tokens), "eval": int(d.n_eval_tokens)}
  n_shards = {s: math.ceil(n_tok[s] / d.shard_tokens) for s in SPLITS}
  state = _read_json(os.path.join(partial, "progress.json")) if os.path.isdir(partial) else None
  if state is not None and state.get("settings") == settings:
    good = _verified_prefix(os.path.join(partial, "train"), state["splits"]["train"])
    if len(good) < len(state["splits"]["train"]):
      state["splits"]["eval"] = []  # eval is harvested after train
    state["splits"]["train"] = good
    state["splits"]["eval"] = _verified_prefix(os.path.join(partial, "eval"),
                                               state["splits"]["eval"])
    done = sum(len(state["splits"][s]) for s in SPLITS)
    _say(f"resuming a half-written cache {partial} at shard {done}/{sum(n_shards.values())}",
         progress)
  else:
    if os.path.isdir(partial):
      _say(f"discarding an unusable half-written cache {partial}", progress)
      shutil.rmtree(partial)
    for s in SPLITS:
      os.makedirs(os.path.join(partial, s))
    state = dict(key=key, settings=settings, lm_batch_size=int(d.lm_batch_size),
                 splits={s: [] for s in SPLITS})
  progress_path = os.path.join(partial, "progress.json")
  _atomic_write_json(progress_path, state)

  _say(f"loading {d.model} to harvest layer {layer} into {final}", progress)
  model, tokenizer, _ = lm_lib.load_lm(d.model, d.device, d.torch_dtype, cache_dir=root)
  train_docs, eval_docs = _split_docs(d.corpus, docs, d.eval_doc_fraction, cfg.seed)
  try:  # both splits' contexts first: a too-small corpus fails before any LM work
    tokens = {split: context_tokens(tokenizer, split_docs, n_tok[split], d.context_length,
                                    d.exclude_first, split, d.corpus)
              for split, split_docs in (("train", train_docs), ("eval", eval_docs))}
  except ConfigError:
    if not any(state["splits"].values()):
      shutil.rmtree(partial, ignore_errors=True)
    raise
  records, d_in = {}, info["d_model"]
  for split, tok_CxS in tokens.items():
    split_dir = os.path.join(partial, split)
    tok_path = os.path.join(split_dir, "tokens.npy")
    if os.path.isfile(tok_path) and not np.array_equal(np.load(tok_path), tok_CxS):
      _say(f"the {split} tokens changed since the interrupted run; redoing its shards", progress)
      state["splits"][split] = []
    tok_rec = _write_npy(tok_path, tok_CxS)
    _harvest_split(model, tok_CxS, layer, n_tok[split], d, state, split, split_dir,
                   lambda: _atomic_write_json(progress_path, state), progress)
    records[split] = dict(n_tokens=n_tok[split], n_contexts=int(len(tok_CxS)),
                          shards=state["splits"][split], tokens=tok_rec)
  meta = dict(settings, key=key, n_layers=info["n_layers"], model_info=info)
  _finalize(partial, final, meta, records, d_in)
  _say(f"wrote activation cache {final}", progress)
  return ActivationCache.open(final, verify=False)


def _harvest_split(model, tok_CxS: np.ndarray, layer: int, n_tokens: int, d, state: dict,
                   split: str, split_dir: str, save_progress, progress: bool) -> None:
  """Run the LM over the contexts and write the split's missing shards.

  Batches are always contexts [i*B, (i+1)*B) for the B recorded in progress.json, so a
  resumed run computes bit-identical rows to an uninterrupted one.
  """
  import torch  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  records = state["splits"][split]
  ef = int(d.exclude_first)
  P = d.context_length - ef
  B = int(state["lm_batch_size"])
  rows_done = sum(r["n_rows"] for r in records)
  if rows_done >= n_tokens:
    return
  writer = _ShardWriter(split_dir, d.dtype, d.shard_tokens, records, save_progress)
  first_batch = (rows_done // P) // B
  skip = rows_done - first_batch * B * P  # rows of the first batch already on disk
  emitted = rows_done
  device = torch.device(d.device)
  with tqdm(total=n_tokens, initial=rows_done, unit="tok", desc=f"harvest {split}",
            disable=not progress) as bar:
    for b in range(first_batch, math.ceil(len(tok_CxS) / B)):
      ids_BxS = torch.from_numpy(tok_CxS[b * B:(b + 1) * B].astype(np.int64)).to(device)
      x_BxSxD = lm_lib.residual_stream(model, ids_BxS, layer)
      x_NxD = x_BxSxD[:, ef:, :].float().cpu().numpy().reshape(-1, x_BxSxD.shape[-1])
      x_NxD = x_NxD[skip:n_tokens - emitted + skip]
      skip = 0
      writer.add(x_NxD)
      emitted += len(x_NxD)
      bar.update(len(x_NxD))
      if emitted >= n_tokens:
        break
  writer.close()
