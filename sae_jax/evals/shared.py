"""What every SAE of one activation cache shares in an evaluation: the LM (loaded on first
need), the tokenizer, the held-out tokens, the probe tasks and their reference probes, and
the cost bounds of the measures (`Options`)."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from sae_jax import files
from sae_jax.data import corpus
from sae_jax.data import lm as lm_lib
from sae_jax.data import settings as data_settings
from sae_jax.errors import ConfigError
from sae_jax.evals import probes


@dataclasses.dataclass(frozen=True)
class Options:
  """Cost bounds of the measures.

  max_contexts: held-out contexts for the downstream loss (64 tokens each by default).
  max_latents: latents sampled for ablation sparsity and explainability.
  max_probe_examples: examples per probe task (balanced, half train half test).
  n_future: positions after an ablated latent whose logits count (Gao et al.: 16).
  batch_size: contexts per LM forward pass.
  seed: for the latent and example samples.
  """
  max_contexts: int = 32
  max_latents: int = 32
  max_probe_examples: int = 4000
  n_future: int = 16
  batch_size: int = 8
  seed: int = 0


class Shared:
  """What every SAE of one activation cache shares: the LM (loaded on first need), the
  tokenizer, the held-out tokens, the probe tasks and reference probes."""

  def __init__(self, cfg: ml_collections.ConfigDict, cache, options: Options = Options()):
    self.cfg, self.cache, self.options = cfg, cache, options
    self.meta = getattr(cache, "meta", {})
    self.layer = self.meta.get("layer")
    self.start = int(bool(self.meta.get("exclude_first", False)))
    self._lm = self._tokenizer = self._tokens = self._probe_tasks = None

  @property
  def tokens(self) -> np.ndarray:
    """int32 [C, S] held-out contexts. Raises ConfigError for a cache without tokens."""
    if self._tokens is None:
      if not hasattr(self.cache, "tokens"):
        raise ConfigError("this measure needs a language-model activation cache with tokens "
                          "(data.source=lm); use --measures basics for synthetic data")
      self._tokens = self.cache.tokens("eval")
    return self._tokens

  @property
  def lm(self):
    if self._lm is None:
      d = self.cfg.data
      self._lm, self._tokenizer, _ = lm_lib.load_lm(
          self.meta.get("model", d.model), d.device,
          self.meta.get("torch_dtype", data_settings.torch_dtype(d)), cache_dir=files.cache_root(self.cfg.data.cache_dir))
    return self._lm

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel  # heavy
      folder, gguf = lm_lib.resolve_model(self.meta.get("model", self.cfg.data.model))
      self._tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    return self._tokenizer

  def rows(self, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Cache rows of (context, position) pairs (row r = context r // P, position
    r % P + start, `sae_jax.data.cache`)."""
    P = self.tokens.shape[1] - self.start
    return np.asarray(c, np.int64) * P + (np.asarray(p, np.int64) - self.start)

  def valid(self) -> np.ndarray:
    """bool [C, S]: positions that have a cache row."""
    C, S = self.tokens.shape
    P = S - self.start
    r = np.arange(C)[:, None] * P + np.arange(S)[None, :] - self.start
    return (np.arange(S)[None, :] >= self.start) & (r < self.cache.n_tokens("eval"))

  def probe_tasks(self) -> dict:
    """name -> dict(train=(rows, y), test=(rows, y), reference=...) for every usable task."""
    if self._probe_tasks is None:
      tok = self.tokens
      tz = self.tokenizer
      texts = probes.token_texts(tz, tok)
      labels = probes.task_labels(tok, texts, getattr(tz, "all_special_ids", []),
                                  token_sources(self.cfg, self.meta, tz, tok))
      valid = self.valid()
      tasks = {}
      for i, (name, lab) in enumerate(labels.items()):
        split = probes.balanced_split(lab, valid, self.options.max_probe_examples,
                                      seed=self.options.seed + i)
        if split is None:
          continue
        (c0, p0, y0), (c1, p1, y1) = split
        x0 = self.cache.read("eval", self.rows(c0, p0))
        x1 = self.cache.read("eval", self.rows(c1, p1))
        tasks[name] = dict(x_train=x0, y_train=y0, x_test=x1, y_test=y1,
                           reference=probes.reference_probe(x0, y0, x1, y1),
                           n_train=len(y0), n_test=len(y1), positive_rate=float(lab[valid].mean()))
      self._probe_tasks = tasks
    return self._probe_tasks


def token_sources(cfg, meta: dict, tokenizer, tokens_CxS: np.ndarray) -> np.ndarray | None:
  """bool [C, S]: the token came from a King James Bible document, recovered by rebuilding
  the held-out contexts from the corpus exactly as the harvest packed them
  (`sae_jax.data.cache.context_tokens`). None when the corpus has no KJV documents or is
  streamed, or the rebuilt tokens differ from the cache's."""
  spec = meta.get("corpus", cfg.data.corpus)
  if corpus.is_streaming(spec):
    return None
  docs = corpus.load_documents(spec, files.cache_root(cfg.data.cache_dir),
                               cfg.data.get("corpus_encoding", "utf-8"))
  if not any(d.source == "kjv" for d in docs):
    return None
  _, eval_docs = corpus.split_documents(docs, meta.get("eval_doc_fraction", cfg.data.eval_doc_fraction),
                                        meta.get("seed", cfg.seed))
  C, S = tokens_CxS.shape
  ids, src = [], []
  eos = tokenizer.eos_token_id
  for doc, piece in zip(eval_docs, corpus.tokenize_lazily(tokenizer, eval_docs)):
    ids.extend(list(piece) + ([eos] if eos is not None else []))
    src.extend([doc.source == "kjv"] * (len(piece) + (eos is not None)))
    if len(ids) >= C * S:
      break
  if len(ids) < C * S or not np.array_equal(np.asarray(ids[:C * S]).reshape(C, S), tokens_CxS):
    return None
  return np.asarray(src[:C * S], bool).reshape(C, S)
