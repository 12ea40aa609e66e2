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
import functools
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

from sae_jax import files, signals
from sae_jax.data import cache as cache_lib
from sae_jax.data import corpus as corpus_lib
from sae_jax.data import lm as lm_lib
from sae_jax.data import settings as data_settings
from sae_jax.errors import ConfigError

log = logging.getLogger(__name__)


def cache_settings(cfg, weights_hash: str, layer: int, corpus_hash: str,
                   site: str | None = None) -> dict:
  """The settings that determine a cache's content (hashed into its key); `site`
  defaults to data.site."""
  d = cfg.data
  return dict(
      format=cache_lib.CACHE_FORMAT, model=d.model, weights_hash=weights_hash, layer=int(layer),
      site=site or d.site, dtype=d.dtype, context_length=int(d.context_length),
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


def targets_of(cfg, n_layers: int) -> list[tuple[int, str]]:
  """The (layer, site) caches a config's harvest fills: its own (data.layer, data.site)
  first, then data.layers x data.sites (either empty: the config's own)."""
  d = cfg.data
  own = (lm_lib.middle_layer(n_layers) if d.layer is None else int(d.layer), d.site)
  layers = [int(l) for l in (d.get("layers", ()) or ())] or [own[0]]
  sites = list(d.get("sites", ()) or ()) or [own[1]]
  return [own] + [(l, s) for l in layers for s in sites if (l, s) != own]


def own_target(cfg) -> tuple[int, str]:
  """The (layer, site) a config trains on, its layer resolved (`lm.middle_layer` for None)
  from the model's memoised description, without loading it."""
  d = cfg.data
  info = lm_lib.describe_lm(d.model, files.cache_root(d.cache_dir))
  return targets_of(cfg, info["n_layers"])[0]


def get_or_harvest(cfg, progress: bool = True, verify: bool = False
                   ) -> cache_lib.ActivationCache:
  """The activation cache for a config's (data.layer, data.site): reused if complete,
  continued if half-written, else harvested (corpus -> split by document -> tokens -> LM
  hook site -> shards), together with the caches of data.layers x data.sites in the same
  LM pass (`get_or_harvest_many`).

  Uses ``cfg.data.*`` (checked by `sae_jax.data.settings.validate`) and ``cfg.seed``.
  The layer defaults to `lm.middle_layer`. The LM is loaded, and the corpus parsed, only
  when activations must be computed: reusing a complete cache costs O(metadata) (the
  weights' and corpus's hashes are memoised by file size and mtime; shard sizes and
  shapes are checked on open), and its sha256s are checked once when it is written and
  again only with `verify` (`sae-jax harvest --verify`).

  Returns:
    The opened `cache_lib.ActivationCache`.

  Raises:
    ConfigError: an invalid setting, an unwritable cache dir, an unknown model, a layer
      out of range, a site the model lacks, or a corpus split with too little text for
      its token budget (nothing is written for any of these).
    CacheCorruptError: a file of the complete cache is missing, of the wrong size or
      shape, or (with `verify`, or right after the harvest) fails its sha256.
  """
  return next(iter(get_or_harvest_many(cfg, None, progress, verify).values()))


def get_or_harvest_many(cfg, targets: list[tuple[int, str]] | None = None,
                        progress: bool = True, verify: bool = False
                        ) -> dict[tuple[int, str], cache_lib.ActivationCache]:
  """The caches of several (layer, site) hook points of one model, corpus and token
  budget (default `targets_of(cfg)`): those not complete are harvested together, from
  ONE LM forward per batch of contexts stopped after the deepest block they need
  (`lm.activations`). Returns {(layer, site): cache} in the order of `targets`. Raises
  as `get_or_harvest`."""
  d = cfg.data
  data_settings.validate(d)
  root = files.cache_root(d.cache_dir)
  act_dir = os.path.join(root, "activations")
  files.check_writable(act_dir, "the activation cache directory",
                      "set data.cache_dir or SAE_JAX_CACHE to a writable path")

  info = lm_lib.describe_lm(d.model, root)
  targets = targets_of(cfg, info["n_layers"]) if targets is None else [
      (int(l), s) for l, s in targets]
  for layer, site in targets:
    data_settings.check_sites([site])
    if site == "residual":
      lm_lib.check_layer(layer, info["n_layers"], d.model)
    elif not 0 <= layer < info["n_layers"]:
      raise ConfigError(f"layer {layer} is out of range for {d.model} at site {site!r} "
                        f"({info['n_layers']} blocks: use 0..{info['n_layers'] - 1})")
  if corpus_lib.is_streaming(d.corpus):
    c_hash = hashlib.sha256(d.corpus.encode()).hexdigest()  # identified by name
  else:
    c_hash = corpus_lib.corpus_hash_of(d.corpus, root, d.get("corpus_encoding", "utf-8"))
  plans = {}
  for layer, site in targets:
    settings = cache_settings(cfg, info["weights_hash"], layer, c_hash, site)
    key = cache_key(settings)
    plans[(layer, site)] = (settings, key, os.path.join(act_dir, key))
  out = {}

  def reuse():
    for t, (_, _, final) in plans.items():
      if t not in out and os.path.isdir(final):
        _say(f"reusing activation cache {final} (layer {t[0]} {t[1]})"
             + (", verifying sha256s" if verify else ""), progress)
        out[t] = cache_lib.ActivationCache.open(final, verify=verify)

  reuse()
  if len(out) < len(plans):
    with contextlib.ExitStack() as stack:
      for t in sorted(t for t in plans if t not in out):  # one order: no deadlock
        stack.enter_context(_harvest_lock(plans[t][2] + ".lock", progress))
      reuse()  # another process may have finished some while we waited
      todo = {t: p for t, p in plans.items() if t not in out}
      if todo:
        docs = (None if corpus_lib.is_streaming(d.corpus)
                else corpus_lib.load_documents(d.corpus, root,
                                                 d.get("corpus_encoding", "utf-8")))
        out.update(_harvest(cfg, root, info, docs, todo, progress))
        for _, _, final in todo.values():
          os.remove(final + ".lock")  # safe: `final` exists, so nobody locks it again
  return {t: out[t] for t in targets}


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


def _harvest(cfg, root: str, info: dict, docs, todo: dict, progress: bool) -> dict:
  """Harvest (or continue harvesting) the caches of `todo` {(layer, site): (settings, key,
  final)} into `<final>.partial`, all from the same LM passes, then rename each to its
  `final`."""
  d = cfg.data
  n_tok = {"train": int(d.n_train_tokens), "eval": int(d.n_eval_tokens)}
  n_shards = {s: math.ceil(n_tok[s] / d.shard_tokens) for s in cache_lib.SPLITS}
  what = ", ".join(f"layer {l} {s}" for l, s in todo)
  _say(f"loading {d.model} to harvest {what}", progress)
  model, tokenizer, _ = lm_lib.load_lm(d.model, d.device, data_settings.torch_dtype(d),
                                       cache_dir=root)
  for _, site in todo:  # before anything is written
    if site != "residual":
      lm_lib.check_site_available(model, site)
  jobs = {}
  for t, (settings, key, final) in todo.items():
    partial = final + ".partial"
    state = (files.read_json(os.path.join(partial, "progress.json"))
             if os.path.isdir(partial) else None)
    if (state is not None and state.get("settings") == settings
        and state.get("lm_batch_size") == int(d.lm_batch_size)):
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
    jobs[t] = dict(state=state, partial=partial, final=final, settings=settings, key=key,
                   save=functools.partial(files.write_json_atomic, progress_path, state))

  train_docs, eval_docs = _split_docs(d.corpus, docs, d.eval_doc_fraction, cfg.seed)
  try:  # both splits' contexts first: a too-small corpus fails before any LM work
    tokens = {split: context_tokens(tokenizer, split_docs, n_tok[split], d.context_length,
                                    d.exclude_first, split, d.corpus)
              for split, split_docs in (("train", train_docs), ("eval", eval_docs))}
  except ConfigError:
    for job in jobs.values():
      if not any(job["state"]["splits"].values()):
        shutil.rmtree(job["partial"], ignore_errors=True)
    raise
  records, d_in = {t: {} for t in jobs}, info["d_model"]
  for split, tok_CxS in tokens.items():
    tok_recs = {}
    for t, job in jobs.items():
      split_dir = os.path.join(job["partial"], split)
      tok_path = os.path.join(split_dir, "tokens.npy")
      if os.path.isfile(tok_path) and not np.array_equal(np.load(tok_path), tok_CxS):
        _say(f"the {split} tokens changed since the interrupted run; redoing its shards",
             progress)
        job["state"]["splits"][split] = []
      tok_recs[t] = cache_lib.write_npy(tok_path, tok_CxS)
    _harvest_split(model, tok_CxS, n_tok[split], d, jobs, split, progress)
    for t, job in jobs.items():
      records[t][split] = dict(n_tokens=n_tok[split], n_contexts=int(len(tok_CxS)),
                               shards=job["state"]["splits"][split], tokens=tok_recs[t])
  caches = {}
  for t, job in jobs.items():
    meta = dict(job["settings"], key=job["key"], n_layers=info["n_layers"], model_info=info,
                hook_name=data_settings.hook_name(t[1], t[0]))
    cache_lib.finalize(job["partial"], job["final"], meta, records[t], d_in)
    _say(f"wrote activation cache {job['final']} (layer {t[0]} {t[1]})", progress)
    caches[t] = cache_lib.ActivationCache.open(job["final"], verify=True)  # once, as written
  return caches


def _harvest_split(model, tok_CxS: np.ndarray, n_tokens: int, d, jobs: dict, split: str,
                   progress: bool) -> None:
  """Run the LM over the contexts and write each job's missing shards of the split, every
  (layer, site) from the same forward pass of a batch.

  Batches are always contexts [i*B, (i+1)*B) for the B recorded in progress.json, so a
  resumed run computes bit-identical rows to an uninterrupted one.
  """
  ef = int(d.exclude_first)
  P = d.context_length - ef
  B = int(d.lm_batch_size)
  todo = []
  for t, job in jobs.items():
    records = job["state"]["splits"][split]
    rows_done = sum(r["n_rows"] for r in records)
    if rows_done >= n_tokens:
      continue
    first_batch = (rows_done // P) // B
    todo.append(dict(
        target=t, first=first_batch, emitted=rows_done,
        skip=rows_done - first_batch * B * P,  # rows of the first batch already on disk
        writer=cache_lib.ShardWriter(os.path.join(job["partial"], split), d.dtype,
                                     d.shard_tokens, records, job["save"])))
  if not todo:
    return
  device = torch.device(d.device)
  start = min(j["first"] for j in todo)
  with tqdm(total=n_tokens, initial=min(j["emitted"] for j in todo), unit="tok",
            desc=f"harvest {split}", disable=not progress) as bar, signals.deferred():
    for b in range(start, math.ceil(len(tok_CxS) / B)):
      # SIGTERM / SIGINT: stop between LM batches; every shard written so far is in
      # progress.json and the rows buffered towards the next one are recomputed on resume
      signals.check(f"the harvest is saved at {len(todo[0]['writer'].records)} {split} shards")
      active = [j for j in todo if j["first"] <= b and j["emitted"] < n_tokens]
      if not active:
        break
      ids_BxS = torch.from_numpy(tok_CxS[b * B:(b + 1) * B].astype(np.int64)).to(device)
      acts = lm_lib.activations(model, ids_BxS, [j["target"] for j in active])
      before = min(j["emitted"] for j in todo)
      for j in active:
        x_BxSxD = acts[j["target"]]
        x_NxD = x_BxSxD[:, ef:, :].float().cpu().numpy().reshape(-1, x_BxSxD.shape[-1])
        x_NxD = x_NxD[j["skip"]:n_tokens - j["emitted"] + j["skip"]]
        j["skip"] = 0
        j["writer"].add(x_NxD)
        j["emitted"] += len(x_NxD)
      bar.update(min(j["emitted"] for j in todo) - before)
  for j in todo:
    j["writer"].close()
