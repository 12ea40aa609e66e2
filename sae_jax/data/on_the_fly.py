"""Training without an activation cache (`data.cache = "none"`): the rows are computed by
the LM forward when the trainer's stream asks for them, held in memory in a shuffle
buffer, and never written to disk (as sparsify and SAELens train).

Rows are the cache's rows. The corpus is split and packed exactly as the harvest does it
(`harvest.context_tokens`); the LM runs on the harvest's batches of contexts (LM batch b =
contexts [b*B, (b+1)*B), B = data.lm_batch_size) through the same forward
(`lm.activations`); the rows are rounded to data.dtype as the cache stores them; and row
r is context r // P, position r % P + exclude_first (P = context_length - exclude_first).
On a deterministic device, the training stream therefore holds the cached rows, in
another order, and the held-out split equals the cache's eval split bitwise.

The order (`order`) is a `batches.BlockOrder` whose block is one LM batch (B*P rows) and
whose shuffle buffer holds data.shuffle_buffer_blocks LM batches. Each epoch permutes the
LM batches by (seed, epoch), and a buffer's rows are permuted in memory, so a training
batch mixes tokens from B * shuffle_buffer_blocks contexts (SAELens's mixing buffer). As
for a cache, the stream's position is the step: batch s is a function of (seed, s). A
resumed run restarts the stream at its checkpoint's step, and the LM runs only on the
buffer that step falls in (skipped buffers are not computed), so the resumed run sees the
rows an uninterrupted run would.

Cost: the LM runs once per epoch over the training contexts, and `batches.stream` computes
the next buffer while training consumes the current one. Memory holds the token ids
(int32 [C, S]), the eval split's activations and up to four shuffle buffers (float32
[B * P * shuffle_buffer_blocks, d_in] each: the stream's current and previous one, the
next one being computed, and at the start the first one, kept from set-up). On a GPU, JAX
preallocates 75% of its memory by default; the CLI caps it at half
(XLA_PYTHON_CLIENT_MEM_FRACTION=0.5, `cli.share_gpu_with_lm`) unless it is set. The normalisation statistics (`stats`) come
from the first shuffle buffer of epoch 0, not the whole split (computed at set-up with the
LM batches of the runs' b_pre sample, and reused by the stream), so a data.cache="none" run
differs from its cached twin in that constant (used only by sae.input_norm="mean_norm"),
in its initial b_pre sample (`sample_rows`) and in its order.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys

import numpy as np
import torch

from sae_jax import files
from sae_jax.data import batches
from sae_jax.data import cache as cache_lib
from sae_jax.data import corpus as corpus_lib
from sae_jax.data import harvest
from sae_jax.data import lm as lm_lib
from sae_jax.data import settings as data_settings
from sae_jax.errors import ConfigError

log = logging.getLogger(__name__)


def _say(msg: str, progress: bool) -> None:
  log.info(msg)
  if progress:
    print(f"[sae_jax] {msg}", file=sys.stderr, flush=True)


class OnTheFlySource:
  """An `batches.ActivationSource` whose training rows come from the LM forward on demand.

  Attributes:
    d_in: the LM's d_model.
    stats: normalisation statistics of the first shuffle buffer of epoch 0 (float64, as
      `cache.ActivationCache.stats`).
    meta: model, layer, site, hook_name, exclude_first, torch_dtype, dtype, d_in and
      `cache_key`, the key of the disk cache that would hold these rows.
    order: the `batches.BlockOrder` the trainer must stream in (one block = one LM batch).
    n_forward_contexts: contexts the LM has run on so far (train split), for tests and
      benchmarks.
  """

  def __init__(self, cfg, progress: bool = True):
    """Load the LM, tokenize both splits, compute the eval split and the first shuffle
    buffer (for `stats`).

    Raises:
      ConfigError: as `harvest.get_or_harvest` for a bad setting, model, layer, site or
        too small a corpus; nothing is written except the model's memoised description.
    """
    d = cfg.data
    data_settings.validate(d)
    root = files.cache_root(d.cache_dir)
    info = lm_lib.describe_lm(d.model, root)
    layer, site = harvest.targets_of(cfg, info["n_layers"])[0]
    if site == "residual":
      lm_lib.check_layer(layer, info["n_layers"], d.model)
    elif not 0 <= layer < info["n_layers"]:
      raise ConfigError(f"layer {layer} is out of range for {d.model} at site {site!r} "
                        f"({info['n_layers']} blocks: use 0..{info['n_layers'] - 1})")
    self.target, self.dtype = (layer, site), d.dtype
    self.exclude_first = int(bool(d.exclude_first))
    self.P = int(d.context_length) - self.exclude_first
    self.lm_batch = int(d.lm_batch_size)
    self.d_in = int(info["d_model"])
    self.device = torch.device(d.device)
    self.order = batches.BlockOrder(self.lm_batch * self.P, int(d.shuffle_buffer_blocks))
    self.n_forward_contexts = 0
    self._n = {"train": int(d.n_train_tokens), "eval": int(d.n_eval_tokens)}

    streaming = corpus_lib.is_streaming(d.corpus)
    encoding = d.get("corpus_encoding", "utf-8")
    c_hash = (hashlib.sha256(d.corpus.encode()).hexdigest() if streaming
              else corpus_lib.corpus_hash_of(d.corpus, root, encoding))
    key = harvest.cache_key(harvest.cache_settings(cfg, info["weights_hash"], layer, c_hash, site))
    _say(f"loading {d.model} to train on the fly from layer {layer} {site} (no cache)", progress)
    self.model, tokenizer, _ = lm_lib.load_lm(d.model, d.device, data_settings.torch_dtype(d),
                                              cache_dir=root)
    if site != "residual":
      lm_lib.check_site_available(self.model, site)
    docs = None if streaming else corpus_lib.load_documents(d.corpus, root, encoding)
    train_docs, eval_docs = harvest._split_docs(  # pylint: disable=protected-access
        d.corpus, docs, d.eval_doc_fraction, cfg.seed)
    self._tokens = {
        split: harvest.context_tokens(tokenizer, split_docs, self._n[split], d.context_length,
                                      d.exclude_first, split, d.corpus)
        for split, split_docs in (("train", train_docs), ("eval", eval_docs))}
    self.meta = dict(model=d.model, layer=layer, site=site, n_layers=info["n_layers"],
                     hook_name=data_settings.hook_name(site, layer), d_in=self.d_in,
                     exclude_first=bool(d.exclude_first), context_length=int(d.context_length),
                     torch_dtype=data_settings.torch_dtype(d), dtype=d.dtype, cache="none",
                     cache_key=key, model_info=info)
    _say(f"computing the held-out split ({self._n['eval']:,} tokens)", progress)
    self._eval_NxD = np.concatenate(
        [self._forward("eval", b) for b in range(self._n_blocks("eval"))])
    # the LM batches of the first shuffle buffer and of the runs' b_pre sample
    # (`sample_rows`), kept until the stream reads past them
    self._memo: dict = {}
    head = self.order.epoch_order(self._n["train"], int(cfg.seed), 0)[:max(
        self.order.window_rows, int(cfg.sae.get("geometric_median_samples", 0) or 0))]
    self._memo = {b: self._forward("train", b) for b in np.unique(head // self.order.block_rows)}
    self.stats = _stats(self.read("train", np.sort(head[:self.order.window_rows])))

  def _n_blocks(self, split: str) -> int:
    return math.ceil(math.ceil(self._n[split] / self.P) / self.lm_batch)

  def _forward(self, split: str, b: int) -> np.ndarray:
    """Rows of LM batch b of a split, as the harvest writes them: float32 [<= B*P, d_in]."""
    ids_BxS = torch.from_numpy(
        self._tokens[split][b * self.lm_batch:(b + 1) * self.lm_batch].astype(np.int64))
    x_BxSxD = lm_lib.activations(self.model, ids_BxS.to(self.device), [self.target])[self.target]
    x_NxD = x_BxSxD[:, self.exclude_first:, :].float().cpu().numpy().reshape(-1, self.d_in)
    x_NxD = x_NxD[:self._n[split] - b * self.lm_batch * self.P]
    if not np.isfinite(x_NxD).all():
      raise ConfigError(f"the LM's activations at {self.meta['hook_name']} are not finite in "
                        f"LM batch {b} of the {split} split; use data.torch_dtype=float32")
    if split == "train":
      self.n_forward_contexts += len(ids_BxS)
    return cache_lib.from_storage(cache_lib.to_storage(x_NxD, self.dtype), self.dtype)

  def n_tokens(self, split: str) -> int:
    """Rows of a split ("train" or "eval")."""
    return self._n[split]

  def tokens(self, split: str) -> np.ndarray:
    """The token ids the LM reads: int32 [n_contexts, context_length]."""
    return self._tokens[split]

  def sample_rows(self, n: int, seed: int) -> np.ndarray:
    """Rows for a run's initial sample (the geometric median of b_pre): the first n of
    epoch 0's stream, sorted, so they come from the LM batches the stream computes first
    rather than from the whole split."""
    return np.sort(self.order.epoch_order(self._n["train"], seed, 0)[:n])

  def read(self, split: str, rows: np.ndarray) -> np.ndarray:
    """Rows of a split: float32 [len(rows), d_in]. The train split runs the LM on every LM
    batch that holds a requested row (each once per call).

    Raises:
      IndexError: a row outside [0, n_tokens(split)).
    """
    rows_R = np.asarray(rows, np.int64).reshape(-1)
    n = self._n[split]
    if len(rows_R) and (rows_R.min() < 0 or rows_R.max() >= n):
      raise IndexError(f"rows must be in [0, {n}) for split {split!r}")
    if split == "eval":
      return self._eval_NxD[rows_R]
    block_R = rows_R // self.order.block_rows
    needed = np.unique(block_R)
    if self._memo and not all(int(b) in self._memo for b in needed):
      self._memo = {}  # the stream has moved past the first buffer
    out_RxD = np.empty((len(rows_R), self.d_in), np.float32)
    for b in needed:
      x = self._memo.get(int(b))
      if x is None:
        x = self._forward("train", int(b))
      sel = block_R == b
      out_RxD[sel] = x[rows_R[sel] - b * self.order.block_rows]
    return out_RxD

  def __repr__(self) -> str:
    return (f"OnTheFlySource({self.meta['model']!r}, {self.meta['hook_name']}, d_in={self.d_in}, "
            f"train={self._n['train']}, eval={self._n['eval']}, no cache)")


def _stats(x_NxD: np.ndarray) -> dict:
  """The normalisation statistics of rows (as `cache._compute_stats`, float64)."""
  x = x_NxD.astype(np.float64)
  sq_N = np.einsum("nd,nd->n", x, x)
  mean_D = x.mean(0)
  mean_sq_norm = float(sq_N.mean())
  return dict(mean=mean_D, mean_norm=np.float64(np.sqrt(sq_N).mean()),
              mean_sq_norm=np.float64(mean_sq_norm),
              total_variance=np.float64(mean_sq_norm - float(mean_D @ mean_D)))
