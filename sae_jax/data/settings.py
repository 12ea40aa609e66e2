"""The checks of the config's `data` block, owned by the data layer so that its public
entry points (`sources.get_source`, `harvest.get_or_harvest`) refuse bad settings
themselves, before any LM is loaded (`sae_jax.config.validate` calls this for the whole
config)."""

from __future__ import annotations

from sae_jax.errors import ConfigError

SOURCES = ("lm", "synthetic")
DTYPES = ("float16", "bfloat16")  # storage dtypes of the activation cache


def torch_dtype(d) -> str:
  """The LM forward's dtype: data.torch_dtype, or when unset bfloat16 on a CUDA device (its
  tensor cores' format; activations are stored as float16/bfloat16 anyway) and float32
  elsewhere (a CPU gains nothing from bfloat16)."""
  if d.get("torch_dtype") is not None:
    return d.torch_dtype
  return "bfloat16" if str(d.device).startswith("cuda") else "float32"


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
  need(d.get("torch_dtype") in (None, "float32", "bfloat16", "float16"),
       f"data.torch_dtype={d.get('torch_dtype')!r} is not float32, bfloat16 or float16 "
       "(or unset: bfloat16 on CUDA, float32 on CPU)")
  need(d.shard_tokens > 0, f"data.shard_tokens={d.shard_tokens} must be positive")
  need(d.get("shuffle_block_rows", 0) >= 0,
       f"data.shuffle_block_rows={d.get('shuffle_block_rows')} must be 0 (random rows) or "
       "a positive block size")
  need(d.get("shuffle_buffer_blocks", 1) >= 1,
       f"data.shuffle_buffer_blocks={d.get('shuffle_buffer_blocks')} must be at least 1")
