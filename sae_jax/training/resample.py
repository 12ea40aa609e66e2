"""Dead-latent resampling (Bricken et al. 2023, "Towards monosemanticity", Sec. "Neuron
resampling"), an option for the penalty architectures (`train.resample_fractions`).

At chosen steps, every latent that has not fired for the window (`window_tokens`) is
given a new direction taken from an input the SAE reconstructs badly:

    p_b        ∝ ||x_b - x_hat_b||^4          (probability ∝ the square of the loss)
    u          = (x_j - b_pre) / ||x_j - b_pre||,   j ~ p, one draw per dead latent
    W_dec[i]   = u
    W_enc[:,i] = 0.2 · mean_{alive l} ||W_enc[:,l]|| · u
    b_enc[i]   = 0   (and b_gate, b_mag, r_mag where present)

and its Adam moments (first and second) are zeroed. Deviations from the paper: the inputs
are the current batch (theirs: a sample of 819,200 inputs), and the direction is taken
relative to b_pre, the point the decoder adds to (theirs: "the input vector"). The draw
is keyed by the step, so a resumed run resamples exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from sae_jax import saes

ENCODER_SCALE = 0.2  # Bricken et al. 2023: 0.2 x the mean encoder norm of alive latents
BIASES = ("b_enc", "b_gate", "b_mag", "r_mag")  # per-latent encoder terms reset to 0


def window_tokens(steps: tuple[int, ...], batch_size: int, dead_tokens: int) -> int:
  """Tokens without firing that make a latent dead at a resampling step: dead_tokens, but
  at most the shortest gap between resampling steps (the first counted from step 0)."""
  gaps = [b - a for a, b in zip((0,) + tuple(steps), steps)]
  return min([dead_tokens] + [g * batch_size for g in gaps if g > 0])


def _reset_adam(opt_state: Any, mask: dict) -> Any:
  """Zero Adam's mu and nu where mask[key] is True (mask broadcast to each param)."""
  def reset(s):
    if isinstance(s, optax.ScaleByAdamState):
      keep = lambda m: {k: jnp.where(mask[k], 0.0, v) if k in mask else v for k, v in m.items()}
      return s._replace(mu=keep(s.mu), nu=keep(s.nu))
    return s
  return jax.tree.map(reset, opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))


def resample(key: jax.Array, arch: saes.Architecture, hp: saes.Hyper, params: saes.Params,
             opt_state: Any, extras: Any, x_BxD: jax.Array, dead_N: jax.Array
             ) -> tuple[saes.Params, Any]:
  """(params, opt_state) with every latent of dead_N [n_latents] bool re-initialised from
  the batch x_BxD (normalised inputs) as in the module docstring. Latents not in dead_N,
  and everything when none is dead, are unchanged."""
  z_BxN = arch.encode(params, x_BxD, extras, hp)
  err_B = jnp.sum((x_BxD - arch.decode(params, z_BxN)) ** 2, axis=-1)
  n_latents = dead_N.shape[0]
  logits_B = jnp.where(err_B > 0, 2.0 * jnp.log(jnp.maximum(err_B, 1e-30)), -jnp.inf)
  logits_B = jnp.where(jnp.any(err_B > 0), logits_B, 0.0)  # all zero: uniform
  pick_N = jax.random.categorical(key, logits_B, shape=(n_latents,))
  u_NxD = x_BxD[pick_N] - params["b_pre"]
  u_NxD = u_NxD / jnp.maximum(jnp.linalg.norm(u_NxD, axis=-1, keepdims=True), 1e-12)
  enc_norms_N = jnp.linalg.norm(params["W_enc"], axis=0)
  alive = ~dead_N
  mean_alive = jnp.where(jnp.any(alive),
                         jnp.sum(jnp.where(alive, enc_norms_N, 0.0)) / jnp.maximum(jnp.sum(alive), 1),
                         1.0)
  new = dict(params)
  new["W_dec"] = jnp.where(dead_N[:, None], u_NxD, params["W_dec"])
  new["W_enc"] = jnp.where(dead_N[None, :], (ENCODER_SCALE * mean_alive * u_NxD).T, params["W_enc"])
  mask = {"W_dec": dead_N[:, None], "W_enc": dead_N[None, :]}
  for name in BIASES:
    if name in params:
      new[name] = jnp.where(dead_N, 0.0, params[name])
      mask[name] = dead_N
  return new, _reset_adam(opt_state, mask)
