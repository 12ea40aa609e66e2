"""The interface every SAE architecture implements, and the math they share.

An architecture is a module of pure functions over a params pytree (a dict of arrays)
and an `extras` pytree (training state that is not trained by gradient, e.g. BatchTopK's
inference threshold), plus its hyperparameters, declared once as a `Hyper` subclass in
that module. Every architecture, TopK included, exposes the same functions with the same
signatures (shapes: x_BxD [B, d_in], z_BxN [B, n_latents]):

    params = arch.init(key, d_in, n_latents, b_pre_D, hp)
        dict of float32 arrays with at least W_enc [d_in, n_latents], W_dec [n_latents,
        d_in], b_pre [d_in]; b_pre_D is the trainer's starting b_pre (the geometric
        median of a sample) or None (zeros). Pure: the same key gives the same params.
    extras = arch.init_extras(n_latents, hp)
        a pytree whose structure `loss` keeps ({} when there is none).
    z_BxN  = arch.encode(params, x_BxD, extras, hp)
        the inference code of normalised inputs: each token's code depends on that token
        only (so BatchTopK uses its learned threshold, not the batch).
    x_BxD  = arch.decode(params, z_BxN)
        x_hat = W_dec^T z + b_pre (`decode`, shared by every architecture).
    out    = arch.loss(params, x_BxD, extras, hp, *, variance, dead_N)
        `Output`: the objective (differentiable in params), its parts, the latents that
        fired [n_latents] bool, L0 and the updated extras. variance = E||x - E x||^2 of
        the normalised inputs, so the reconstruction term is the normalized MSE; dead_N
        [n_latents] bool marks the dead latents (for AuxK; others may ignore it).

`hp` is the architecture's `Hyper`: frozen and hashable (static under jit), built by the
trainer from the config (`Architecture.make_hyper`). Its base fields (n_latents and the
training settings every architecture receives) are declared here; an architecture's own
(its sparsity knob, JumpReLU's bandwidth, ...) in its module, with their defaults and
sources, and nowhere else: the config's `sae` block, `--set sae.<name>`, the trainer and
the exports read them from there (`sae_jax.saes.registry.config_fields`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp


Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Static hyperparameters every architecture's functions receive (hashable, for jit).

  An architecture declares its own by subclassing this in its module, each field with
  its default and source. The base fields are set by the trainer from `train.*`.
  """
  n_latents: int
  k_aux: int = 0  # AuxK latents (0: off); Gao et al. 2024, Sec. A.2 (`train.k_aux`)
  aux_coef: float = 1 / 32  # AuxK weight alpha (`train.aux_coef`)
  # TopK family: None trains with the dense autodiff step (the reference); "xla" or
  # "cpu_kernels" with the sparse step of `sae_jax.saes.sparse` (`train.topk_step`).
  sparse_impl: str | None = None
  compute_dtype: str = "float32"  # input dtype of the encoder matmul (`train.compute_dtype`)
  # A latent fires on a token when z > fired_threshold (`train.fired_threshold`): the dead-
  # latent counters (AuxK, resampling) and the evaluation's dead / dense fractions all use
  # it. 1e-3 as OpenAI's reference code (openai/sparse_autoencoder, model.py:
  # `topk.values > 1e-3`); 0 counts every non-zero activation.
  fired_threshold: float = 1e-3
  # s, the input scale (`sae.input_scale`): the RMS token norm sqrt(E||x||^2) of the
  # normalised inputs the SAE sees. Every penalty coefficient, JumpReLU's bandwidth and its
  # initial threshold are expressed in units of s (each module's docstring says how), so a
  # knob means the same at every `sae.input_norm` and raw scale. The config's None is
  # measured before training (`sae_jax.config.resolve`, from the training split's
  # statistics: exactly 1 for "unit_norm"); None here (a Hyper built by hand) counts as 1.
  input_scale: float | None = None


BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Hyper))
# The base fields set from the config's `sae` block (the others come from `train`).
SAE_FIELDS: dict[str, type] = {"input_scale": float}


def scale(hp: Hyper) -> float:
  """s = hp.input_scale, the unit of the penalty knobs (1 when unset)."""
  return 1.0 if hp.input_scale is None else float(hp.input_scale)


class Output(NamedTuple):
  """What an architecture's loss returns (all scalars unless noted)."""
  loss: jax.Array  # the objective: normalized_mse + sparsity + aux terms, weighted
  normalized_mse: jax.Array  # sum ||x - x_hat||^2 / (B * variance)
  sparsity_loss: jax.Array  # the weighted sparsity penalty (0 for the TopK family)
  aux_loss: jax.Array  # the architecture's auxiliary loss, unweighted (AuxK, Gated aux)
  fired_N: jax.Array  # bool [n_latents]: z > Hyper.fired_threshold on some token of the batch
  l0: jax.Array  # mean active latents per token
  extras: Any  # updated extras pytree


@dataclasses.dataclass(frozen=True)
class Field:
  """One hyperparameter an architecture declares: name, default, Python type."""
  name: str
  default: Any
  type: type


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An architecture: its functions (module docstring), its `Hyper` subclass and the
  static facts the trainer, sweeps and exporters need. Defined once per module as ARCH
  and listed in `sae_jax.saes.registry`."""
  name: str
  hyper: type  # its Hyper subclass: the hyperparameters it declares, with defaults
  knob: str  # the sparsity knob a sweep varies: "k" or "sparsity_coefficient"
  unit_norm_decoder: bool  # decoder rows kept at unit norm (gradient projected, renormalised)
  init: Callable[..., Params]
  init_extras: Callable[[int, Hyper], Any]
  encode: Callable[..., jax.Array]
  decode: Callable[[Params, jax.Array], jax.Array]
  loss: Callable[..., Output]
  paper: str  # the source of the recipe
  # The input normalisation its paper uses (a `sae.input_norm` value). Documentation for
  # sweeps, which set sae.input_norm from it; `config.resolve` does not apply it.
  input_norm: str = "unit_norm"
  # Whether its loss has the sparse form of `sae_jax.saes.sparse` (used when
  # Hyper.sparse_impl is set, i.e. train.topk_step = "sparse").
  sparse_step: bool = False
  # The inference encoder in words, written into an export's config.json.
  encode_formula: str = ""
  # (SAELens architecture, apply_b_dec_to_input) of its SAELens equivalent, or None
  # (`sae_jax.tools.interchange` then refuses to convert it).
  saelens: tuple[str, bool] | None = None
  # The zoo sweep's four knob values (high to low sparsity, L0 ~ 8..64 at n_latents 512)
  # per input_norm, and extra overrides per input_norm (sweeps/architectures.py).
  zoo_grid: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  zoo_overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # Checks of its own hyperparameters beyond their types; raises ConfigError.
  validate: Callable[[Hyper], None] | None = None
  # Its papers' training recipes: name -> {dotted config key: value} (`sae.recipe`; the
  # values fill the fields a config leaves None, `sae_jax.config.apply_recipe`), each value
  # with its source in a comment where declared. The first is the one the zoo sweep uses.
  recipes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

  def fields(self) -> tuple[Field, ...]:
    """The hyperparameters this architecture declares (its Hyper fields beyond the base
    ones), with defaults and types."""
    hints = typing.get_type_hints(self.hyper)
    return tuple(Field(f.name, f.default, _plain_type(hints[f.name]))
                 for f in dataclasses.fields(self.hyper) if f.name not in BASE_FIELDS)

  @property
  def default_knob(self) -> Any:
    """The knob's value when the config leaves it unset."""
    return {f.name: f.default for f in self.fields()}[self.knob]

  def make_hyper(self, values: Mapping[str, Any], **base: Any) -> Hyper:
    """Its `Hyper` from `values` (the config's `sae` block: a field left None takes the
    declared default; lists become tuples) and the base fields in `base`.

    Raises ConfigError from the architecture's own `validate`."""
    own = {}
    for f in self.fields():
      v = values.get(f.name) if hasattr(values, "get") else getattr(values, f.name, None)
      if v is None:
        v = f.default
      elif f.type is tuple:
        v = tuple(v)
      own[f.name] = v
    hp = self.hyper(**base, **own)
    if self.validate is not None:
      self.validate(hp)
    return hp


def _plain_type(hint: Any) -> type:
  """int, float, bool, str or tuple from an annotation such as `tuple[int, ...] | None`."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  origin = typing.get_origin(hint)
  return origin if origin is not None else hint


def no_extras(n_latents: int, hp: Hyper) -> dict:
  del n_latents, hp
  return {}


def decode(params: Params, z_BxN: jax.Array) -> jax.Array:
  """x_hat = W_dec z + b_pre, shape [B, d_in] (the decoder shared by every architecture)."""
  return z_BxN @ params["W_dec"] + params["b_pre"]


def normalized_mse(x_BxD: jax.Array, x_hat_BxD: jax.Array, variance) -> jax.Array:
  """sum ||x - x_hat||^2 / (B * variance): the fraction of variance unexplained when
  variance = E||x - E x||^2 (Gao et al. 2024, Sec. 2.1)."""
  return jnp.sum((x_BxD - x_hat_BxD) ** 2) / (x_BxD.shape[0] * variance)


def unit_norm_rows(W_NxD: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Scale each row to unit L2 norm."""
  return W_NxD / jnp.maximum(jnp.linalg.norm(W_NxD, axis=-1, keepdims=True), eps)


def tied_init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None,
              decoder_norm: float = 1.0) -> Params:
  """W_dec rows random with norm `decoder_norm`, W_enc = W_dec^T, b_enc = 0, b_pre given
  (Gao et al. 2024, Sec. A.1; Conerly et al. 2024 use the same tied start)."""
  W_dec_NxD = unit_norm_rows(jax.random.normal(key, (n_latents, d_in), jnp.float32)) * decoder_norm
  if b_pre_D is None:
    b_pre_D = jnp.zeros((d_in,), jnp.float32)
  return {"W_enc": W_dec_NxD.T, "b_enc": jnp.zeros((n_latents,), jnp.float32),
          "W_dec": W_dec_NxD, "b_pre": jnp.asarray(b_pre_D, jnp.float32)}


def stats(z_BxN: jax.Array, fired_threshold: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(fired_N, l0) of a batch of latents: fired_N [n_latents] bool, z > fired_threshold on
  some token (`Hyper.fired_threshold`); l0 the mean count of non-zero z per token."""
  active = z_BxN != 0
  return (jnp.any(z_BxN > fired_threshold, axis=0),
          jnp.mean(jnp.sum(active, axis=-1).astype(jnp.float32)))


def auxk_normalized_mse(e_BxD: jax.Array, e_hat_BxD: jax.Array) -> jax.Array:
  """sum ||e - e_hat||^2 / sum ||e - mean_b e||^2: the AuxK loss's normalisation, that of
  OpenAI's reference code (openai/sparse_autoencoder, train.py `normalized_mse`: the MSE
  over the MSE of predicting the batch mean of the target). 0 when the denominator is 0.
  Shapes [B, d_in]; e is the residual x - x_hat (a constant)."""
  denom = jnp.sum((e_BxD - jnp.mean(e_BxD, axis=0)) ** 2)
  return jnp.sum((e_BxD - e_hat_BxD) ** 2) / jnp.maximum(denom, 1e-30)

