"""The checks of the config's `data` block, owned by the data layer so that its public
entry points (`sources.get_source`, `harvest.get_or_harvest`) refuse bad settings
themselves, before any LM is loaded (`sae_jax.config.validate` calls this for the whole
config)."""

from __future__ import annotations

import codecs

from sae_jax.errors import ConfigError

SOURCES = ("lm", "synthetic")
DTYPES = ("float16", "bfloat16")  # storage dtypes of the activation cache


def validate(d) -> None:
  """Check a `data` block (a ConfigDict or anything with its attributes).

  Raises:
    ConfigError: the first bad value, saying what to change.
  """

  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  need(d.source in SOURCES, f"data.source={d.source!r} is not 'lm' or 'synthetic'")
  need(d.dtype in DTYPES, f"data.dtype={d.dtype!r} is not one of {', '.join(DTYPES)}")
  need(d.context_length >= 2, f"data.context_length={d.context_length} must be at least 2")
  need(d.layer is None or d.layer >= 0, f"data.layer={d.layer} must be non-negative")
  need(d.n_train_tokens > 0 and d.n_eval_tokens > 0,
       "data.n_train_tokens and data.n_eval_tokens must be positive")
  need(0 < d.eval_doc_fraction < 1,
       f"data.eval_doc_fraction={d.eval_doc_fraction} must be in (0, 1)")
  encoding = d.get("corpus_encoding", "utf-8") if hasattr(d, "get") else "utf-8"
  try:
    codecs.lookup(encoding)
  except LookupError:
    need(False, f"data.corpus_encoding={encoding!r} is not a known text encoding; use "
         "utf-8 or latin-1")
  need(d.shard_tokens > 0, f"data.shard_tokens={d.shard_tokens} must be positive")
