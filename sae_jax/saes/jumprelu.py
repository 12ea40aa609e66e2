"""JumpReLU sparse autoencoder, pure-functional (Rajamanoharan et al. 2024b, "Jumping
ahead: improving reconstruction fidelity with JumpReLU sparse autoencoders").

    pre   = W_enc x + b_enc                                        (Eq. 1, no b_pre inside)
    z     = JumpReLU_theta(pre) = pre · H(pre - theta)             (Eq. 4)
    x_hat = W_dec z + b_pre
    loss  = ||x - x_hat||^2 / (B · variance) + lambda · mean_b sum_i H(pre_i - theta_i)
                                                     (Sec. 3: the L0 sparsity penalty)

Each latent i has a learned threshold theta_i > 0, stored in log space
(params["log_threshold"], theta = exp(log_threshold)) so it stays positive. The jump makes
the loss piecewise constant in theta; its gradient comes from straight-through estimators
with a kernel K of bandwidth epsilon (`Hyper.bandwidth` · s, see Units) (Sec. 4, Eqs. 11-12):

    d/dtheta JumpReLU_theta(pre) := -(theta / epsilon) · K((pre - theta) / epsilon)
    d/dtheta H(pre - theta)      := -(1 / epsilon)     · K((pre - theta) / epsilon)
    K(u) = 1[|u| < 1/2]   (rectangle)

while d/dpre JumpReLU = H(pre - theta) (the ordinary derivative) and d/dpre H = 0: the L0
penalty trains only the thresholds, the reconstruction trains everything.

Recipe (Rajamanoharan et al. 2024b, Sec. 5 and App.; Lieberum et al. 2024, Gemma Scope,
Sec. 3): tied init with unit-norm decoder rows (W_enc = W_dec^T), b_enc = 0, every
threshold at theta_0; decoder rows kept at unit norm; inputs scaled by one constant (Gemma
Scope: to unit mean squared norm); Adam beta1 = 0 and a linear warm-up of lambda: the
recipe "gemmascope2024" (`RECIPES`). b_pre starts at the trainer's geometric median
(theirs: zero).

Anthropic's variant (Conerly et al. 2025, "Circuits updates, January 2025"; recipe
"conerly2025", `Hyper.penalty = "tanh"`): the L0 penalty becomes a tanh of each latent's
decoder-norm-weighted activation, and dead latents get a pre-activation loss that pulls
their pre-activations up towards the threshold:

    sparsity = lambda · mean_b sum_i tanh(c · z_i · ||W_dec,i||)          (c = tanh_c = 4)
    preact   = preact_coef · mean_b sum_{i dead} ReLU(theta_i - pre_i) · ||W_dec,i||

The tanh term reaches theta through the JumpReLU's straight-through gradient (Eq. 11).
c and preact_coef are in the units of Anthropic's inputs (mean norm sqrt(d_in), the
recipe's input_norm), not in units of s.

Units, and why (scale-aware bandwidth). epsilon and theta_0 are lengths in pre-activation
space: the straight-through gradient reaches a threshold only through pre-activations
within epsilon / 2 of it, so an epsilon chosen for one input scale is silent at another
(raw inputs of norm ~3 left every threshold at its start and L0 the same at lambda 0.003
and 0.3; README, "The SAE zoo"). Gemma Scope fixes the scale instead: inputs are
multiplied by one constant so that E||x||^2 = 1, and then epsilon = 1e-3 (Lieberum et al.
2024, Sec. 3; Rajamanoharan et al. 2024b, App.). Here both are in units of the input
scale s = sqrt(E||x||^2) of the normalised inputs (`Hyper.input_scale`, measured):

    epsilon_used = bandwidth · s,   theta_0 = initial_threshold · s,

which is the paper's setting exactly when s = 1 ("unit_norm", or any input scaled to unit
mean squared norm) and its equivalent at every other `sae.input_norm`: the loss of inputs
c·x with (epsilon, theta) scaled by c equals that of x, parameter for parameter. lambda
multiplies an L0 (a count), so it needs no unit; ours is lambda_paper / variance, because
our reconstruction term is divided by variance = E||x - E x||^2 (<= s^2). The sparsity
knob is lambda (`sae.sparsity_coefficient`, default 1e-2).

Params: W_enc [d_in, n_latents], b_enc [n_latents], log_threshold [n_latents],
W_dec [n_latents, d_in], b_pre [d_in].
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from sae_jax.errors import ConfigError
from sae_jax.saes import base

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(base.Hyper):
  """JumpReLU's hyperparameters (`sae.sparsity_coefficient`, `sae.bandwidth`,
  `sae.initial_threshold`)."""
  # lambda, the knob, in our units (lambda_paper / variance): 1e-2 puts lambda / 10, lambda
  # and 10 lambda a factor >= 1.25 apart in L0 at every input_norm
  # (tests/sparsity_monotonicity_test.py)
  sparsity_coefficient: float = 1e-2
  # epsilon of the straight-through kernel, in units of s: Gemma Scope's 1e-3 at unit
  # mean squared norm (Lieberum et al. 2024, Sec. 3; Rajamanoharan et al. 2024b)
  bandwidth: float = 1e-3
  # theta_0 in units of s. From the papers' 1e-3, Adam (<= lr per step in log space) needs
  # ~ln(100) / lr steps (~6k at lr 8e-4) to reach the scale of the pre-activations
  # (~0.1 s); 0.05 starts near there, so a run of a few thousand steps sees the knob act
  # (the zoo's unit_norm calibration started at 0.05 too).
  initial_threshold: float = 0.05
  # "l0": lambda · L0 (Rajamanoharan et al. 2024b); "tanh": lambda · sum tanh(c z ||W_dec||)
  # plus the pre-activation loss on dead latents (Conerly et al. 2025; module docstring)
  penalty: str = "l0"
  tanh_c: float = 4.0  # c of the tanh penalty (Conerly et al. 2025)
  # weight of the pre-activation loss on dead latents, our units (Conerly et al. 2025: 3e-6
  # on their unnormalised loss; divide by the variance, as lambda); 0: off
  preact_coef: float = 0.0


def init(key: jax.Array, d_in: int, n_latents: int, b_pre_D: jax.Array | None = None,
         hp: base.Hyper | None = None) -> Params:
  """Tied init (unit-norm decoder rows, W_enc = W_dec^T, b_enc = 0) and every threshold at
  theta_0 = hp.initial_threshold · s (Lieberum et al. 2024, Sec. 3; s = hp.input_scale,
  module docstring, Units). Raises ValueError if the initial threshold is not positive."""
  hp = hp or Hyper(n_latents=n_latents)
  theta0 = hp.initial_threshold * base.scale(hp)
  if not theta0 > 0:
    raise ValueError(f"initial_threshold={hp.initial_threshold} must be positive (it is "
                     "stored as a log)")
  params = base.tied_init(key, d_in, n_latents, b_pre_D)
  params["log_threshold"] = jnp.full((n_latents,), jnp.log(theta0), jnp.float32)
  return params


def rectangle(u: jax.Array) -> jax.Array:
  """K(u) = 1[|u| < 1/2], the rectangle kernel (Rajamanoharan et al. 2024b, Sec. 4)."""
  return (jnp.abs(u) < 0.5).astype(u.dtype)


def _sum_to(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sum a cotangent over the leading axes theta was broadcast along (theta [N] or [])."""
  return jnp.sum(g, axis=tuple(range(g.ndim - len(shape)))).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, theta: jax.Array, bandwidth: float) -> jax.Array:
  """JumpReLU_theta(pre) = pre · H(pre - theta), theta broadcast over leading axes
  (Rajamanoharan et al. 2024b, Eq. 4), with the straight-through gradient of Eq. 11."""
  return jnp.where(pre > theta, pre, 0.0)


def _jumprelu_fwd(pre, theta, bandwidth):
  return jumprelu(pre, theta, bandwidth), (pre, theta)


def _jumprelu_bwd(bandwidth, res, g):
  pre, theta = res
  d_pre = jnp.where(pre > theta, g, 0.0)
  d_theta = -(theta / bandwidth) * rectangle((pre - theta) / bandwidth) * g
  return d_pre, _sum_to(d_theta, jnp.shape(theta))


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(pre: jax.Array, theta: jax.Array, bandwidth: float) -> jax.Array:
  """H(pre - theta) (1.0 where pre > theta, else 0.0), with the straight-through gradient
  of Rajamanoharan et al. 2024b, Eq. 12 for theta and none for pre."""
  return (pre > theta).astype(pre.dtype)


def _step_fwd(pre, theta, bandwidth):
  return step(pre, theta, bandwidth), (pre, theta)


def _step_bwd(bandwidth, res, g):
  pre, theta = res
  d_theta = -(1.0 / bandwidth) * rectangle((pre - theta) / bandwidth) * g
  return jnp.zeros_like(pre), _sum_to(d_theta, jnp.shape(theta))


step.defvjp(_step_fwd, _step_bwd)


def threshold(params: Params) -> jax.Array:
  """theta = exp(log_threshold), shape [n_latents]."""
  return jnp.exp(params["log_threshold"])


def pre_activations(params: Params, x_BxD: jax.Array) -> jax.Array:
  """W_enc x + b_enc, shape [B, n_latents] (Rajamanoharan et al. 2024b, Eq. 1)."""
  return x_BxD @ params["W_enc"] + params["b_enc"]


def encode(params: Params, x_BxD: jax.Array, extras=None, hp: base.Hyper | None = None
           ) -> jax.Array:
  """Latents z = JumpReLU_theta(pre), shape [B, n_latents]; no extras are used."""
  del extras
  return jumprelu(pre_activations(params, x_BxD), threshold(params),
                  bandwidth(hp or Hyper(n_latents=params["W_enc"].shape[1])))


def bandwidth(hp: base.Hyper) -> float:
  """epsilon in pre-activation units: hp.bandwidth · s (module docstring, Units)."""
  return hp.bandwidth * base.scale(hp)


decode = base.decode
init_extras = base.no_extras  # no training state beyond the params


def loss(params: Params, x_BxD: jax.Array, extras, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """JumpReLU training loss: normalized MSE + lambda · L0 (Rajamanoharan et al. 2024b,
  Sec. 3), gradients by the straight-through estimators of Sec. 4, Eqs. 11-12.

  Args:
    params: JumpReLU params; x_BxD: normalised inputs; extras: unused ({}).
    hp: `Hyper` with sparsity_coefficient (lambda), bandwidth (epsilon / s) and input_scale
      (s).
    variance: E||x - E x||^2, so the reconstruction term is the normalized MSE.
    dead_N: bool [n_latents], the dead latents (only the "tanh" penalty's pre-activation
      loss uses them; the L0 STE, not AuxK, revives latents).

  With hp.penalty = "tanh" (Conerly et al. 2025): sparsity_loss = lambda · tanh penalty
  (`tanh_penalty`), aux_loss = the pre-activation loss on the dead latents dead_N
  (`preact_loss`, unweighted), loss = nmse + sparsity_loss + preact_coef · aux_loss.

  Returns:
    `base.Output`; sparsity_loss = lambda · L0 (L0 = mean over tokens of active latents).

  Raises:
    ValueError: hp.penalty is neither "l0" nor "tanh".
  """
  pre_BxN = pre_activations(params, x_BxD)
  theta_N = threshold(params)
  eps = bandwidth(hp)
  z_BxN = jumprelu(pre_BxN, theta_N, eps)
  x_hat_BxD = decode(params, z_BxN)
  nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
  aux = jnp.zeros((), jnp.float32)
  if hp.penalty == "l0":
    penalty = jnp.mean(jnp.sum(step(pre_BxN, theta_N, eps), axis=-1))
  elif hp.penalty == "tanh":
    norms_N = jnp.linalg.norm(params["W_dec"], axis=-1)
    penalty = tanh_penalty(z_BxN, norms_N, hp.tanh_c)
    if dead_N is not None and hp.preact_coef > 0:
      aux = preact_loss(pre_BxN, theta_N, norms_N, dead_N)
  else:
    raise ValueError(f"sae.penalty={hp.penalty!r} must be 'l0' or 'tanh'")
  sparsity = hp.sparsity_coefficient * penalty
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  return base.Output(nmse + sparsity + hp.preact_coef * aux, nmse, sparsity, aux, fired_N, l0,
                    extras)


def tanh_penalty(z_BxN: jax.Array, norms_N: jax.Array, c: float) -> jax.Array:
  """mean over tokens of sum_i tanh(c · z_i · ||W_dec,i||) (Conerly et al. 2025),
  unweighted by lambda. z_BxN [B, n_latents] (JumpReLU outputs), norms_N [n_latents]."""
  return jnp.mean(jnp.sum(jnp.tanh(c * z_BxN * norms_N), axis=-1))


def preact_loss(pre_BxN: jax.Array, theta_N: jax.Array, norms_N: jax.Array,
                dead_N: jax.Array) -> jax.Array:
  """mean over tokens of sum over dead latents of ReLU(theta_i - pre_i) · ||W_dec,i||
  (Conerly et al. 2025's pre-activation loss), unweighted: it raises the pre-activations
  of latents that have stopped firing. dead_N [n_latents] bool."""
  gap_BxN = jax.nn.relu(theta_N - pre_BxN) * norms_N
  return jnp.mean(jnp.sum(jnp.where(dead_N, gap_BxN, 0.0), axis=-1))


def validate(hp: Hyper) -> None:
  """Raise ConfigError for an unknown penalty or a negative pre-activation coefficient."""
  if hp.penalty not in ("l0", "tanh"):
    raise ConfigError(f"sae.penalty={hp.penalty!r} must be 'l0' (Rajamanoharan et al. 2024b) "
                      "or 'tanh' (Conerly et al. 2025)")
  if hp.preact_coef < 0 or hp.tanh_c <= 0:
    raise ConfigError(f"sae.preact_coef={hp.preact_coef} must be >= 0 and sae.tanh_c="
                      f"{hp.tanh_c} > 0")


# Recipes (`sae.recipe`): values in this codebase's config keys; lambda itself is the
# sweep's knob. Runs here are far shorter than the papers', so warm-ups given in steps
# there are fractions of the run here (the papers' steps over their ~1M-step runs).
RECIPES = {
    # Lieberum et al. 2024 (Gemma Scope, Sec. 4) and Rajamanoharan et al. 2024b (App.)
    "gemmascope2024": {
        "sae.input_norm": "mean_norm",  # inputs scaled so E||x||^2 ~ d_in
        "train.adam_b1": 0.0,  # Adam beta1 = 0
        "train.adam_b2": 0.999,
        "train.adam_eps": 1e-8,
        # lr warm-up then cosine decay (issue 14's reading of Gemma Scope): a 1,000-step
        # warm-up of ~1M steps
        "train.lr_schedule": "warmup_cosine",
        "train.lr_warmup_fraction": 1e-3,
        "train.sparsity_warmup_fraction": 1e-2,  # lambda from 0 over the first 10,000 steps
        # epsilon and theta_0 in units of s (module docstring): Gemma Scope's 1e-3 at unit
        # mean squared norm, the same setting at any input_norm
        "sae.bandwidth": 1e-3,  # epsilon (Rajamanoharan et al. 2024b)
        "sae.initial_threshold": 1e-3,  # theta_0 (Lieberum et al. 2024)
        "sae.penalty": "l0",
    },
    # Conerly et al. 2025 (Circuits updates, January 2025): tanh penalty and pre-activation
    # loss; optimiser and schedules kept from their April 2024 recipe (relu_l1's
    # "templeton2024"), which the update does not say it changed.
    "conerly2025": {
        "sae.input_norm": "mean_norm",
        "sae.penalty": "tanh",
        "sae.tanh_c": 4.0,  # c = 4
        # 3e-6 on their unnormalised loss; ours divides by the variance (~ d_in = 576 for
        # SmolLM2 with mean_norm inputs): 3e-6 / 576
        "sae.preact_coef": 3e-6 / 576,
        "train.adam_b1": 0.9,
        "train.adam_b2": 0.999,
        "train.lr_schedule": "warmup_linear_decay",  # lr to 0 over the last 20%
        "train.lr_decay_fraction": 0.2,
        "train.sparsity_warmup_fraction": 0.05,  # lambda from 0 over the first 5%
        "train.max_grad_norm": 1.0,  # gradient norm clipped at 1
    },
}

ARCH = base.Architecture(
    name="jumprelu", hyper=Hyper, knob="sparsity_coefficient", unit_norm_decoder=True,
    init=init, init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Rajamanoharan et al. 2024b, Jumping ahead: improving reconstruction fidelity with "
          "JumpReLU sparse autoencoders", input_norm="mean_norm",
    encode_formula="z = pre * 1[pre > exp(log_threshold)], pre = W_enc^T x + b_enc "
                   "(Rajamanoharan et al. 2024b, Eq. 1)",
    saelens=("jumprelu", False),
    # zoo grids from calibration runs (sweeps/architectures.py): unit_norm lambda 1e-2 ->
    # L0 16 (theta_0 0.05, now the default); mean_norm 1e-3 -> L0 122 (theta_0 0.5 ~ 0.02 s,
    # kept below; that calibration's absolute bandwidth 1e-3 ~ 4e-5 s is now 1e-3 s, so
    # its L0s may shift: not re-run). lambda multiplies an L0, so it has no input unit.
    zoo_grid={"unit_norm": (1e-2, 3e-3, 1e-3, 3e-4), "mean_norm": (2e-2, 8e-3, 3e-3, 1e-3)},
    # theta_0 is set for both normalisations: a zoo run is 400 steps, and Adam moves
    # log_threshold by at most ~lr per step (~1.4 nats in all), so the gemmascope2024
    # recipe's theta_0 = 1e-3 s (made for runs of ~1M steps) never reaches the activations
    # it should gate -- measured on SmolLM2 (unit_norm, n_latents 512): L0 384-388 at every
    # lambda from 3e-4 to 1 (README, "Recipes against the defaults").
    zoo_overrides={"unit_norm": {"sae.initial_threshold": 0.05},
                   "mean_norm": {"sae.initial_threshold": 0.02}},
    validate=validate, recipes=RECIPES)
