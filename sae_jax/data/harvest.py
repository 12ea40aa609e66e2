"""The harvest: corpus -> language model -> the activation cache (`sae_jax.data.cache`).

A harvest writes shard by shard (a local cache into ``<key>.partial/``, renamed to
``<key>/`` when complete; a URL cache in place, complete once ``meta.json`` exists), each
shard recorded with its sha256 in ``progress.json`` as it is written; a killed run is
continued by the next one from the shards still missing, and only a finished cache
(``meta.json`` with ``complete: true``) is ever read. Several processes can harvest one
cache together, each a disjoint range of its shards (`get_or_harvest_many`). The key is a hash of every setting that
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
import sys
from typing import Callable

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
                        progress: bool = True, verify: bool = False,
                        process: tuple[int, int] = (0, 1),
                        barrier: Callable[[str], None] | None = None
                        ) -> dict[tuple[int, str], cache_lib.ActivationCache]:
  """The caches of several (layer, site) hook points of one model, corpus and token
  budget (default `targets_of(cfg)`): those not complete are harvested together, from
  ONE LM forward per batch of contexts stopped after the deepest block they need
  (`lm.activations`). Returns {(layer, site): cache} in the order of `targets`.

  A multi-host harvest: `process` = (index i, count P) and `barrier(name)` a function
  that returns once every process has called it (`sae-jax harvest` passes
  `jax.experimental.multihost_utils.sync_global_devices` under jax.distributed). Every
  process runs this with the same config; process i harvests the i-th of P contiguous
  ranges of each split's shards (`shards_of`) into the same cache, which must be shared
  (a URL, or a local path on a shared file system). The result is bit-identical to a
  1-process harvest: the LM batches are the same contexts [b * lm_batch_size, ...) (a
  batch that straddles two ranges is computed by both processes). Process 0 prepares
  the cache, checks what an interrupted run left, and writes meta.json once all are
  done. Raises as `get_or_harvest`."""
  d = cfg.data
  data_settings.validate(d)
  index, n_proc = int(process[0]), int(process[1])
  if not 0 <= index < n_proc or (n_proc > 1 and barrier is None):
    raise ConfigError(f"process={process} must be (index, count) with 0 <= index < count, "
                      "and a multi-process harvest needs a barrier")
  root = files.cache_root(d.cache_dir)
  if files.is_url(d.cache_dir):
    cache_lib.check_url(d.cache_dir)
    act_dir = cache_lib.join(d.cache_dir, "activations")
  else:
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
    plans[(layer, site)] = (settings, key, cache_lib.layout_of(cache_lib.join(act_dir, key)))
  out = {}

  def reuse():
    for t, (_, _, layout) in plans.items():
      if t not in out and layout.is_complete():
        _say(f"reusing activation cache {layout.location} (layer {t[0]} {t[1]})"
             + (", verifying sha256s" if verify else ""), progress)
        out[t] = cache_lib.ActivationCache.open(layout.location, verify=verify)

  reuse()
  if len(out) < len(plans):
    with contextlib.ExitStack() as stack:
      locks = [plans[t][2].lock_path for t in sorted(t for t in plans if t not in out)]
      locks = [p for p in locks if p is not None] if n_proc == 1 else []  # P > 1: coordinated
      for path in locks:  # one order: no deadlock
        stack.enter_context(_harvest_lock(path, progress))
      reuse()  # another process may have finished some while we waited
      todo = {t: p for t, p in plans.items() if t not in out}
      if todo:
        docs = (None if corpus_lib.is_streaming(d.corpus)
                else corpus_lib.load_documents(d.corpus, root,
                                                 d.get("corpus_encoding", "utf-8")))
        out.update(_harvest(cfg, root, info, docs, todo, progress, (index, n_proc),
                            barrier or (lambda name: None)))
        for path in locks:
          os.remove(path)  # safe: the cache is complete, so nobody locks it again
  return {t: out[t] for t in targets}


def shards_of(n_shards: int, process: tuple[int, int]) -> range:
  """The shards process i of P harvests: the i-th of P contiguous, near-equal ranges."""
  i, P = process
  return range(i * n_shards // P, (i + 1) * n_shards // P)


@contextlib.contextmanager
def _harvest_lock(path: str, progress: bool):
  """An exclusive lock so two processes never write the same `.partial` directory."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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


def _progress_names(n_proc: int) -> list[str]:
  return ["progress.json"] + [f"progress_{j}.json" for j in range(n_proc)]


def _prepare(job: dict, d, n_tok: dict, tokens: dict, d_in: int, n_proc: int,
             progress: bool) -> None:
  """Process 0: keep what an interrupted harvest with the same settings left (every
  shard's sha256 checked), discard anything else, create the arrays, write the tokens
  and the merged progress.json that every process reads."""
  layout, settings = job["layout"], job["settings"]
  state = layout.read_json("progress.json")
  usable = (state is not None and state.get("settings") == settings
            and state.get("lm_batch_size") == int(d.lm_batch_size))
  n_shards = {s: math.ceil(n_tok[s] / d.shard_tokens) for s in cache_lib.SPLITS}
  done = {s: {} for s in cache_lib.SPLITS}
  if usable:
    prev = int(state.get("n_processes", 1))
    found = [state] + [layout.read_json(f"progress_{j}.json") or {} for j in range(prev)]
    for split in cache_lib.SPLITS:
      for st in found:
        for pos, rec in enumerate(st.get("splits", {}).get(split, [])):
          rec = dict(rec, index=int(rec.get("index", pos)))  # before multi-host: a prefix
          if rec["index"] not in done[split] and layout.shard_ok(split, rec, d.shard_tokens):
            done[split][rec["index"]] = rec
      old = layout.read_tokens(split)
      if old is not None and not np.array_equal(old, tokens[split]):
        _say(f"the {split} tokens changed since the interrupted run; redoing its shards",
             progress)
        done[split] = {}
    for name in _progress_names(prev)[1:]:
      layout.delete(name)
    _say(f"resuming a half-written cache {layout.location} at "
         f"{sum(map(len, done.values()))}/{sum(n_shards.values())} shards", progress)
  else:
    if state is not None or (isinstance(layout, cache_lib.NpyLayout)
                             and os.path.isdir(layout.partial)):
      _say(f"discarding an unusable half-written cache {layout.location}", progress)
    layout.discard()
  layout.create(n_tok, d_in, d.dtype, int(d.shard_tokens))
  tok_recs = {split: layout.write_tokens(split, tokens[split]) for split in cache_lib.SPLITS}
  layout.write_json("progress.json", dict(
      key=job["key"], settings=settings, lm_batch_size=int(d.lm_batch_size),
      n_processes=n_proc, tokens=tok_recs,
      splits={s: [done[s][i] for i in sorted(done[s])] for s in cache_lib.SPLITS}))


def _harvest(cfg, root: str, info: dict, docs, todo: dict, progress: bool,
             process: tuple[int, int], barrier: Callable[[str], None]) -> dict:
  """Harvest (or continue harvesting) the caches of `todo` {(layer, site): (settings, key,
  layout)}, all from the same LM passes; process i of P writes its ranges of shards
  (`shards_of`) and process 0 finalizes each cache once all have (`barrier`)."""
  d = cfg.data
  index, n_proc = process
  n_tok = {"train": int(d.n_train_tokens), "eval": int(d.n_eval_tokens)}
  n_shards = {s: math.ceil(n_tok[s] / d.shard_tokens) for s in cache_lib.SPLITS}
  what = ", ".join(f"layer {l} {s}" for l, s in todo)
  _say(f"loading {d.model} to harvest {what}"
       + (f" (process {index} of {n_proc})" if n_proc > 1 else ""), progress)
  model, tokenizer, _ = lm_lib.load_lm(d.model, d.device, data_settings.torch_dtype(d),
                                       cache_dir=root)
  for _, site in todo:  # before anything is written
    if site != "residual":
      lm_lib.check_site_available(model, site)
  train_docs, eval_docs = _split_docs(d.corpus, docs, d.eval_doc_fraction, cfg.seed)
  # both splits' contexts first (every process: they are the same): a too-small corpus
  # fails before anything is written or any LM work is done
  tokens = {split: context_tokens(tokenizer, split_docs, n_tok[split], d.context_length,
                                  d.exclude_first, split, d.corpus)
            for split, split_docs in (("train", train_docs), ("eval", eval_docs))}
  d_in = info["d_model"]
  jobs = {t: dict(settings=settings, key=key, layout=layout)
          for t, (settings, key, layout) in todo.items()}
  if index == 0:
    for job in jobs.values():
      _prepare(job, d, n_tok, tokens, d_in, n_proc, progress)
  barrier("sae_jax harvest: prepared")
  own_name = "progress.json" if n_proc == 1 else f"progress_{index}.json"
  for job in jobs.values():
    layout = job["layout"]
    job["state"] = state = layout.read_json("progress.json")
    job["done"] = {s: {int(r["index"]) for r in state["splits"][s]} for s in cache_lib.SPLITS}
    job["own"] = state if n_proc == 1 else dict(splits={s: [] for s in cache_lib.SPLITS})
    job["save"] = functools.partial(layout.write_json, own_name, job["own"])
    if n_proc > 1:
      job["save"]()
  for split in cache_lib.SPLITS:
    work = []
    for t, job in jobs.items():
      need = [s for s in shards_of(n_shards[split], process) if s not in job["done"][split]]
      if need:
        work.append(dict(target=t, need=need, layout=job["layout"], save=job["save"],
                         records=job["own"]["splits"][split]))
    _harvest_split(model, tokens[split], n_tok[split], d, work, split, progress)
  barrier("sae_jax harvest: harvested")
  if index == 0:
    for t, job in jobs.items():
      layout = job["layout"]
      found = [layout.read_json(name) or {} for name in _progress_names(n_proc)]
      records = {}
      for split in cache_lib.SPLITS:
        shards = {}
        for st in found:
          for rec in st.get("splits", {}).get(split, []):
            shards.setdefault(int(rec["index"]), rec)
        if sorted(shards) != list(range(n_shards[split])):
          missing = sorted(set(range(n_shards[split])) - set(shards))
          raise ConfigError(f"the harvest of {layout.location} lacks {split} shards "
                            f"{missing[:5]} after every process finished: a multi-host "
                            "harvest needs a data.cache_dir every process shares (a URL or a "
                            "shared filesystem); fix that and run it again")
        records[split] = dict(n_tokens=n_tok[split], n_contexts=int(len(tokens[split])),
                              shards=[shards[i] for i in range(n_shards[split])],
                              tokens=job["state"]["tokens"][split])
      meta = dict(job["settings"], key=job["key"], n_layers=info["n_layers"], model_info=info,
                  hook_name=data_settings.hook_name(t[1], t[0]))
      cache_lib.finalize(layout, meta, records, d_in, tuple(_progress_names(n_proc)))
      _say(f"wrote activation cache {layout.location} (layer {t[0]} {t[1]})", progress)
  barrier("sae_jax harvest: finalized")
  # process 0 checks every sha256 once, as written; the others open it O(metadata)
  return {t: cache_lib.ActivationCache.open(job["layout"].location, verify=index == 0)
          for t, job in jobs.items()}


def _harvest_split(model, tok_CxS: np.ndarray, n_tokens: int, d, work: list, split: str,
                   progress: bool) -> None:
  """Run the LM over the contexts that hold the shards each work item needs and write
  them, every (layer, site) from the same forward pass of a batch.

  work: [{target, need: shard indices, layout, records (appended), save}]. Batches are
  always contexts [b*B, (b+1)*B) for the B recorded in progress.json, so a resumed run,
  or one process of several, computes bit-identical rows to an uninterrupted one.
  """
  if not work:
    return
  ef = int(d.exclude_first)
  B, T = int(d.lm_batch_size), int(d.shard_tokens)
  R = B * (d.context_length - ef)  # rows of one LM batch
  span = lambda s: (s * T, min((s + 1) * T, n_tokens))
  batches: dict[int, list] = {}
  for w in work:
    w["need_set"] = set(w["need"])
    for s in w["need"]:
      lo, hi = span(s)
      for b in range(lo // R, (hi - 1) // R + 1):
        if not batches.setdefault(b, []) or batches[b][-1] is not w:
          batches[b].append(w)
  device = torch.device(d.device)
  pieces: dict = {}  # (target, shard) -> [stored blocks], until the shard is full
  with tqdm(total=sum(min(R, n_tokens - b * R) for b in batches), unit="tok",
            desc=f"harvest {split}", disable=not progress) as bar, signals.deferred():
    for b in sorted(batches):
      # SIGTERM / SIGINT: stop between LM batches; every shard written so far is in
      # progress.json and the rows buffered towards the next one are recomputed on resume
      signals.check(f"the harvest is saved at {len(work[0]['records'])} {split} shards")
      ws = batches[b]
      ids_BxS = torch.from_numpy(tok_CxS[b * B:(b + 1) * B].astype(np.int64)).to(device)
      acts = lm_lib.activations(model, ids_BxS, [w["target"] for w in ws])
      r0 = b * R
      for w in ws:
        x_BxSxD = acts[w["target"]]
        x_NxD = x_BxSxD[:, ef:, :].float().cpu().numpy().reshape(-1, x_BxSxD.shape[-1])
        r1 = min(r0 + len(x_NxD), n_tokens)
        for s in range(r0 // T, (r1 - 1) // T + 1):
          if s not in w["need_set"]:
            continue
          lo, hi = span(s)
          a, c = max(lo, r0), min(hi, r1)
          got = pieces.setdefault((w["target"], s), [])
          got.append(cache_lib.stored_rows(x_NxD[a - r0:c - r0], d.dtype))
          if sum(map(len, got)) == hi - lo:
            w["records"].append(w["layout"].write_shard(split, s, np.concatenate(got)))
            del pieces[(w["target"], s)]
            w["save"]()
      bar.update(min(R, n_tokens - r0))
