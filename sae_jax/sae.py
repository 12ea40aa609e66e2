"""The one interface every SAE architecture implements, and the registry of them.

An architecture is a few pure functions over a params pytree (a dict of arrays) and an
`extras` pytree (training-state that is not trained by gradient, e.g. BatchTopK's
inference threshold), plus static facts the trainer needs:

    params = arch.init(key, d_in, n_latents, b_pre_D, hp)
    extras = arch.init_extras(n_latents, hp)
    z_BxN  = arch.encode(params, x_BxD, extras, hp)          # inference
    x_hat  = arch.decode(params, z_BxN)
    out    = arch.loss(params, x_BxD, extras, hp, variance=v, dead_N=dead)   # training

`hp` (`Hyper`) holds the static hyperparameters; `out` (`Output`) the loss, its parts, the
latents that fired, L0 and the updated extras. Sweeps, the trainer and the analysis see
only this interface, so they have no special cases per architecture.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sae_jax.config import ConfigError

Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Static hyperparameters of an architecture's encoder and loss (hashable, for jit)."""
  n_latents: int
  k: int | None = None  # TopK family: active latents per token
  sparsity_coefficient: float | None = None  # lambda of penalty-based architectures
  k_aux: int = 0  # AuxK latents (0: off)
  aux_coef: float = 1 / 32  # AuxK weight alpha
  multi_topk: bool = False  # Gao et al. 2024 Multi-TopK: L(k) + L(4k) / 8
  bandwidth: float = 1e-3  # JumpReLU straight-through kernel width epsilon
  initial_threshold: float = 1e-3  # JumpReLU threshold at init
  target_activation: float = 1e-3  # KL-sparsity target rho
  prefixes: tuple[int, ...] = ()  # Matryoshka nested dictionary sizes (ascending, last = n_latents)
  threshold_momentum: float = 0.99  # BatchTopK: EMA of the inference threshold
  # TopK family: None trains with the dense autodiff step (the reference); "xla" or
  # "cpu_kernels" with the sparse step of `sae_jax.sparse` (same results, less work).
  sparse_impl: str | None = None
  compute_dtype: str = "float32"  # sparse step: dtype of the encoder matmul's inputs


class Output(NamedTuple):
  """What an architecture's loss returns (all scalars unless noted)."""
  loss: jax.Array  # the objective: normalized_mse + sparsity + aux terms, weighted
  normalized_mse: jax.Array  # sum ||x - x_hat||^2 / (B * variance)
  sparsity_loss: jax.Array  # the weighted sparsity penalty (0 for the TopK family)
  aux_loss: jax.Array  # the architecture's auxiliary loss, unweighted (AuxK, Gated aux)
  fired_N: jax.Array  # bool [n_latents]: fired on some token of the batch
  l0: jax.Array  # mean active latents per token
  extras: Any  # updated extras pytree


class Architecture(NamedTuple):
  name: str
  knob: str  # the sparsity knob a sweep varies: "k" or "sparsity_coefficient"
  default_knob: float  # its value when the config leaves it unset
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
  # Whether its loss has the sparse form of `sae_jax.sparse` (used when Hyper.sparse_impl
  # is set, i.e. train.topk_step = "sparse").
  sparse_step: bool = False


# name -> module defining ARCH; imported on first use.
_MODULES = {
    "topk": "sae_jax.topk",
    "batchtopk": "sae_jax.batchtopk",
    "matryoshka_batchtopk": "sae_jax.matryoshka",
    "relu_l1": "sae_jax.relu_l1",
    "relu_l1_unit_norm": "sae_jax.relu_l1_unit_norm",
    "kl": "sae_jax.kl",
    "jumprelu": "sae_jax.jumprelu",
    "gated": "sae_jax.gated",
}


def names() -> list[str]:
  return sorted(_MODULES)


def get(name: str) -> Architecture:
  """The architecture called `name`. Raises ConfigError listing the known ones."""
  if name not in _MODULES:
    raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(names())}")
  return importlib.import_module(_MODULES[name]).ARCH


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


def stats(z_BxN: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(fired_N, l0) of a batch of latents."""
  active = z_BxN != 0
  return jnp.any(active, axis=0), jnp.mean(jnp.sum(active, axis=-1).astype(jnp.float32))
