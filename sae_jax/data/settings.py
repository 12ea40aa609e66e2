"""The checks of the config's `data` block, owned by the data layer so that its public
entry points (`sources.get_source`, `harvest.get_or_harvest`) refuse bad settings
themselves, before any LM is loaded (`sae_jax.config.validate` calls this for the whole
config)."""

from __future__ import annotations

import codecs

from sae_jax.errors import ConfigError

SOURCES = ("lm", "synthetic")
CACHES = ("disk", "none")  # data.cache: harvest to disk first, or train from the LM forward
# Hook sites of block L, named as TransformerLens names its hooks (SAELens's hook_name),
# -> (TransformerLens hook, what is captured in a transformers model).
SITES = {
    "residual": ("blocks.{L}.hook_resid_pre",
                 "hidden_states[L] of transformers: the input of block L (L = n_layers: the "
                 "final norm's output); the original site, kept for its caches"),
    "resid_pre": ("blocks.{L}.hook_resid_pre", "the input of block L"),
    "attn_out": ("blocks.{L}.hook_attn_out", "the output of block L's attention module"),
    "resid_mid": ("blocks.{L}.hook_resid_mid",
                  "resid_pre + attn_out: the input of block L's post-attention norm "
                  "(sequential-residual blocks only)"),
    "mlp_in": ("blocks.{L}.ln2.hook_normalized",
               "the input of block L's MLP, after its norm (TransformerLens's hook_mlp_in "
               "is before the norm, i.e. resid_mid)"),
    "mlp_out": ("blocks.{L}.hook_mlp_out", "the output of block L's MLP"),
    "resid_post": ("blocks.{L}.hook_resid_post",
                   "the output of block L (before the final norm for the last block)"),
}


def hook_name(site: str, layer: int) -> str:
  """The TransformerLens / SAELens hook name of a site, e.g. blocks.15.hook_resid_pre."""
  return SITES[site][0].format(L=layer)


def check_sites(sites, layers=()) -> None:
  """Raise ConfigError for an unknown site or a site or layer listed twice (data.sites,
  data.layers)."""
  for s in sites:
    if s not in SITES:
      raise ConfigError(f"unknown hook site {s!r}; use one of {', '.join(SITES)}")
  for what, xs in (("data.sites", list(sites)), ("data.layers", list(layers))):
    dup = sorted({x for x in xs if xs.count(x) > 1}, key=str)
    if dup:
      raise ConfigError(f"{what}={tuple(xs)} lists {dup[0]!r} twice; give each once")


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
  encoding = d.get("corpus_encoding", "utf-8") if hasattr(d, "get") else "utf-8"
  try:
    codecs.lookup(encoding)
  except LookupError:
    need(False, f"data.corpus_encoding={encoding!r} is not a known text encoding; use "
         "utf-8 or latin-1")
  need(d.shard_tokens > 0, f"data.shard_tokens={d.shard_tokens} must be positive")
  check_sites([d.site])
  sites, layers = tuple(d.get("sites", ()) or ()), tuple(d.get("layers", ()) or ())
  need(all(isinstance(l, int) and l >= 0 for l in layers),
       f"data.layers={layers} must be non-negative integers")
  check_sites(sites, layers)
  need(d.get("torch_dtype") in (None, "float32", "bfloat16", "float16"),
       f"data.torch_dtype={d.get('torch_dtype')!r} is not float32, bfloat16 or float16 "
       "(or unset: bfloat16 on CUDA, float32 on CPU)")
  need(d.get("shuffle_block_rows", 0) >= 0,
       f"data.shuffle_block_rows={d.get('shuffle_block_rows')} must be 0 (random rows) or "
       "a positive block size")
  cache = d.get("cache", "disk") if hasattr(d, "get") else "disk"
  need(cache in CACHES, f"data.cache={cache!r} is not 'disk' (harvest the activation cache, "
       "then train) or 'none' (train from the LM forward, nothing written)")
  need(cache == "disk" or not d.get("shuffle_block_rows", 0),
       f"data.shuffle_block_rows={d.get('shuffle_block_rows')} applies to the disk cache; with "
       "data.cache='none' a block is one LM batch (data.lm_batch_size contexts): set it to 0")
  need(d.get("lm_batch_size", 1) >= 1,
       f"data.lm_batch_size={d.get('lm_batch_size')} must be at least 1")
  need(d.get("shuffle_buffer_blocks", 1) >= 1,
       f"data.shuffle_buffer_blocks={d.get('shuffle_buffer_blocks')} must be at least 1")
