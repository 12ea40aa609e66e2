"""The harvest: corpus -> language model -> the activation cache (`sae_jax.data.cache`).

A harvest writes into ``<key>.partial/`` shard by shard (each shard renamed into place and
recorded with its sha256 in ``progress.json``); a killed run is continued by the next one
from its first missing shard, and only a finished cache (``meta.json`` with ``complete:
true``) is renamed to ``<key>/`` and ever read. The key is a hash of every setting that
determines the content (`cache_settings`), so the same settings reuse the same directory
without running (or loading) the LM.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_jax import files
from sae_jax.data import cache as cache_lib
from sae_jax.data import corpus as corpus_lib
from sae_jax.data import lm as lm_lib
from sae_jax.data import settings as data_settings
from sae_jax.errors import ConfigError

log = logging.getLogger(__name__)


def cache_settings(cfg, weights_hash: str, layer: int, corpus_hash: str) -> dict:
  """The settings that determine a cache's content (hashed into its key)."""
  d = cfg.data
  return dict(
      format=cache_lib.CACHE_FORMAT, model=d.model, weights_hash=weights_hash, layer=int(layer),
      site=d.site, dtype=d.dtype, context_length=int(d.context_length),
      exclude_first=bool(d.exclude_first), corpus=d.corpus, corpus_hash=corpus_hash,
      n_train_tokens=int(d.n_train_tokens), n_eval_tokens=int(d.n_eval_tokens),
      eval_doc_fraction=float(d.eval_doc_fraction), shard_tokens=int(d.shard_tokens),
      torch_dtype=data_settings.torch_dtype(d), seed=int(cfg.seed))


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
            and files.file_sha256(f) == rec["sha256"]):
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


def get_or_harvest(cfg, progress: bool = True) -> cache_lib.ActivationCache:
  """The activation cache for a config: reused if complete, continued if half-written,
  else harvested (corpus -> split by document -> tokens -> LM residual stream -> shards).

  Uses ``cfg.data.*`` (checked by `sae_jax.data.settings.validate`) and ``cfg.seed``.
  The layer defaults to `lm.middle_layer`. The LM is loaded only when activations must be
  computed.

  Returns:
    The opened, verified `cache_lib.ActivationCache`.

  Raises:
    ConfigError: an invalid setting, an unwritable cache dir, an unknown model, a layer
      out of range, or a corpus split with too little text for its token budget.
    CacheCorruptError: the complete cache for these settings fails verification.
  """
  d = cfg.data
  data_settings.validate(d)
  if d.site != "residual":
    raise ConfigError(f"data.site={d.site!r} is not supported; use 'residual'")
  root = files.cache_root(d.cache_dir)
  act_dir = os.path.join(root, "activations")
  files.check_writable(act_dir, "the activation cache directory",
                      "set data.cache_dir or SAE_JAX_CACHE to a writable path")

  info = lm_lib.describe_lm(d.model, root)
  layer = lm_lib.middle_layer(info["n_layers"]) if d.layer is None else int(d.layer)
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
    return cache_lib.ActivationCache.open(final)
  with _harvest_lock(final + ".lock", progress):
    if os.path.isdir(final):  # another process finished it while we waited
      _say(f"reusing activation cache {final}", progress)
      return cache_lib.ActivationCache.open(final)
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
             final: str, progress: bool) -> cache_lib.ActivationCache:
  """Harvest (or continue harvesting) into `<final>.partial`, then rename it to `final`."""
  d = cfg.data
  partial = final + ".partial"
  n_tok = {"train": int(d.n_train_tokens), "eval": int(d.n_eval_tokens)}
  n_shards = {s: math.ceil(n_tok[s] / d.shard_tokens) for s in cache_lib.SPLITS}
  state = files.read_json(os.path.join(partial, "progress.json")) if os.path.isdir(partial) else None
  if state is not None and state.get("settings") == settings:
    good = _verified_prefix(os.path.join(partial, "train"), state["splits"]["train"])
    if len(good) < len(state["splits"]["train"]):
      state["splits"]["eval"] = []  # eval is harvested after train
    state["splits"]["train"] = good
    state["splits"]["eval"] = _verified_prefix(os.path.join(partial, "eval"),
                                               state["splits"]["eval"])
    done = sum(len(state["splits"][s]) for s in cache_lib.SPLITS)
    _say(f"resuming a half-written cache {partial} at shard {done}/{sum(n_shards.values())}",
         progress)
  else:
    if os.path.isdir(partial):
      _say(f"discarding an unusable half-written cache {partial}", progress)
      shutil.rmtree(partial)
    for s in cache_lib.SPLITS:
      os.makedirs(os.path.join(partial, s))
    state = dict(key=key, settings=settings, lm_batch_size=int(d.lm_batch_size),
                 splits={s: [] for s in cache_lib.SPLITS})
  progress_path = os.path.join(partial, "progress.json")
  files.write_json_atomic(progress_path, state)

  _say(f"loading {d.model} to harvest layer {layer} into {final}", progress)
  model, tokenizer, _ = lm_lib.load_lm(d.model, d.device, data_settings.torch_dtype(d),
                                       cache_dir=root)
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
    tok_rec = cache_lib.write_npy(tok_path, tok_CxS)
    _harvest_split(model, tok_CxS, layer, n_tok[split], d, state, split, split_dir,
                   lambda: files.write_json_atomic(progress_path, state), progress)
    records[split] = dict(n_tokens=n_tok[split], n_contexts=int(len(tok_CxS)),
                          shards=state["splits"][split], tokens=tok_rec)
  meta = dict(settings, key=key, n_layers=info["n_layers"], model_info=info)
  cache_lib.finalize(partial, final, meta, records, d_in)
  _say(f"wrote activation cache {final}", progress)
  return cache_lib.ActivationCache.open(final, verify=False)


def _harvest_split(model, tok_CxS: np.ndarray, layer: int, n_tokens: int, d, state: dict,
                   split: str, split_dir: str, save_progress, progress: bool) -> None:
  """Run the LM over the contexts and write the split's missing shards.

  Batches are always contexts [i*B, (i+1)*B) for the B recorded in progress.json, so a
  resumed run computes bit-identical rows to an uninterrupted one.
  """

  records = state["splits"][split]
  ef = int(d.exclude_first)
  P = d.context_length - ef
  B = int(state["lm_batch_size"])
  rows_done = sum(r["n_rows"] for r in records)
  if rows_done >= n_tokens:
    return
  writer = cache_lib.ShardWriter(split_dir, d.dtype, d.shard_tokens, records, save_progress)
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
