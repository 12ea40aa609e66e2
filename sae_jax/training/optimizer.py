"""The optimiser: Adam on gradients whose component parallel to each decoder row is
removed, then decoder rows renormalised (Gao et al. 2024, Sec. 2.3, A.1), with the
learning-rate schedules the papers train with (`lr_schedule`) and the sparsity
coefficient's warm-up (`sparsity_warmup`).

Every schedule is a pure function of the optimiser step (optax keeps that count in the
optimiser state, which the checkpoint holds), so a resumed run continues the schedule
exactly where it stopped.

    train.lr_schedule          constant | warmup_constant | warmup_linear_decay |
                               warmup_cosine | wsd          (`SCHEDULES`)
    train.lr_warmup_steps      linear warm-up from 0 (None: train.lr_warmup_fraction of the run)
    train.lr_decay_fraction    the decay phase of warmup_linear_decay and wsd, as a fraction of the run
    train.lr_final_fraction    the lr at the last step, as a fraction of the peak
    train.sparsity_warmup_steps  lambda ramps linearly from 0 (None: train.sparsity_warmup_fraction)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sae_jax.errors import ConfigError
from sae_jax.saes import base


def remove_parallel_component(W_NxD: jax.Array, g_NxD: jax.Array) -> jax.Array:
  """g_i - (g_i . w_i) w_i for unit-norm rows w_i: the gradient tangent to the sphere."""
  return g_NxD - jnp.sum(g_NxD * W_NxD, axis=-1, keepdims=True) * W_NxD


def project_decoder_gradient(key: str = "W_dec") -> optax.GradientTransformation:
  """Remove from params[key]'s gradient its component along each (unit-norm) row."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params):
    updates = dict(updates)
    updates[key] = remove_parallel_component(params[key], updates[key])
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


# name -> where it comes from. Every one but "constant" starts with a linear warm-up from 0
# over `warmup_steps` (0: none).
SCHEDULES = {
    "constant": "constant lr (Gao et al. 2024, Sec. 2.3)",
    "warmup_constant": "linear warm-up, then constant (Bussmann et al. 2024 / 2025 reference code)",
    # Conerly et al. 2024 (Circuits updates April 2024) and Templeton et al. 2024: lr decayed
    # linearly to zero over the last 20% of training.
    "warmup_linear_decay": "linear warm-up, constant, linear decay over the last decay_fraction "
                           "(Conerly et al. 2024)",
    "warmup_cosine": "linear warm-up, then cosine decay to final_fraction (Lieberum et al. 2024, "
                     "Gemma Scope)",
    # Hu et al. 2024 (MiniCPM) warm-up-stable-decay; the 1 - sqrt decay shape of Haegele et
    # al. 2024 ("Scaling laws and compute-optimal training beyond fixed training durations").
    "wsd": "linear warm-up, stable, 1 - sqrt decay over the last decay_fraction (Hu et al. 2024; "
           "Haegele et al. 2024)",
}


def lr_schedule(name: str, lr: float, n_steps: int, warmup_steps: int = 0,
                decay_fraction: float = 0.2, final_fraction: float = 0.0) -> optax.Schedule:
  """The learning rate as a function of the optimiser step (0-based), an optax schedule.

  Args:
    name: one of `SCHEDULES`.
    lr: the peak learning rate.
    n_steps: steps of the whole run (token budget / batch size).
    warmup_steps: linear warm-up from 0 to lr over these steps (step s gets lr · s / W).
    decay_fraction: warmup_linear_decay and wsd decay over the last
      round(decay_fraction · n_steps) steps.
    final_fraction: the lr reached at step n_steps, as a fraction of lr (decaying schedules).

  Raises:
    ConfigError: unknown name, or warm-up (plus decay) longer than the run.
  """
  if name not in SCHEDULES:
    raise ConfigError(f"train.lr_schedule={name!r} is not one of {', '.join(SCHEDULES)}")
  decay_steps = int(round(decay_fraction * n_steps)) if name in ("warmup_linear_decay", "wsd") else 0
  if name != "constant" and warmup_steps + decay_steps > n_steps:
    raise ConfigError(
        f"train.lr_schedule={name!r}: warm-up ({warmup_steps} steps) + decay ({decay_steps}) "
        f"exceeds the run ({n_steps} steps); shorten train.lr_warmup_steps or raise "
        "train.token_budget")
  if name == "constant":
    return optax.constant_schedule(lr)
  final = lr * final_fraction
  if name == "warmup_constant":
    after = optax.constant_schedule(lr)
  elif name == "warmup_cosine":
    after = optax.cosine_decay_schedule(lr, max(1, n_steps - warmup_steps), alpha=final_fraction)
  else:
    stable = n_steps - warmup_steps - decay_steps
    if decay_steps == 0:
      decay = optax.constant_schedule(lr)
    elif name == "warmup_linear_decay":
      decay = optax.linear_schedule(lr, final, decay_steps)
    else:
      def decay(s):
        frac = jnp.clip(s / max(1, decay_steps), 0.0, 1.0)
        return final + (lr - final) * (1.0 - jnp.sqrt(frac))
    after = optax.join_schedules([optax.constant_schedule(lr), decay], [stable])
  if warmup_steps == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after],
                              [warmup_steps])


def sparsity_warmup(step: jax.Array, warmup_steps: int) -> jax.Array:
  """The factor on the sparsity coefficient at 0-based `step`: min(1, step / warmup_steps),
  a linear ramp from 0 (Conerly et al. 2024: over the first 5% of training; Lieberum et al.
  2024, Gemma Scope: over the first 10,000 steps); 1 when warmup_steps is 0."""
  if warmup_steps <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def make(lr: float | optax.Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 6.25e-10,
         project_decoder: bool = True, max_grad_norm: float = 0.0
         ) -> optax.GradientTransformation:
  """Adam (eps 6.25e-10, Gao et al. 2024 Sec. 2.3) at `lr` (a float or an optax schedule
  of the step, `lr_schedule`), after the decoder-gradient projection when the
  architecture keeps unit-norm decoder rows, after clipping the gradient's global norm to
  max_grad_norm when positive (Conerly et al. 2024 clip at 1)."""
  adam = optax.adam(lr, b1=b1, b2=b2, eps=eps)
  chain = [project_decoder_gradient()] if project_decoder else []
  if max_grad_norm > 0:
    chain.insert(0, optax.clip_by_global_norm(max_grad_norm))
  return optax.chain(*chain, adam) if chain else adam


def from_config(c: ml_collections.ConfigDict, project_decoder: bool
                ) -> optax.GradientTransformation:
  """`make` with a resolved config's train.* settings (lr, its schedule, Adam's betas and
  eps; `sae_jax.config.resolve` fills the warm-up steps and checks them)."""
  t = c.train
  n_steps = t.token_budget // t.batch_size
  schedule = lr_schedule(t.lr_schedule, t.lr, n_steps, t.lr_warmup_steps or 0,
                         t.lr_decay_fraction, t.lr_final_fraction)
  lr = t.lr if t.lr_schedule == "constant" else schedule
  return make(lr, t.adam_b1, t.adam_b2, t.adam_eps, project_decoder=project_decoder,
              max_grad_norm=t.max_grad_norm)


def renormalize_decoder(params: base.Params) -> base.Params:
  """Project the decoder rows back to unit norm after an update."""
  return {**params, "W_dec": base.unit_norm_rows(params["W_dec"])}
