"""Matryoshka BatchTopK sparse autoencoder, pure-functional (Bussmann et al. 2025,
"Learning multi-level features with Matryoshka sparse autoencoders", Sec. 3).

The dictionary is read as nested prefixes m_1 < m_2 < ... < m_G = n_latents: latents
[0, m_g) must reconstruct the input on their own. The code z is the BatchTopK code of the
whole dictionary (`sae_jax.saes.batchtopk`), and the reconstruction loss is the mean,
over the G prefixes and the empty dictionary (b_pre alone, x_hat_0 = b_pre), of the
normalized MSE of the reconstruction by that prefix alone:

    x_hat_g = W_dec[:m_g]^T z[:m_g] + b_pre                      (g = 0: b_pre only)
    loss    = 1/(G + 1) · sum_{g=0..G} ||x - x_hat_g||^2 / (B · variance) + aux_coef · AuxK
                      (Bussmann et al. 2025, Sec. 3; as the reference code computes it,
                       bartbussmann/matryoshka_sae `get_loss_dict`: mean_l2_loss)

so early latents learn general features that later ones refine, instead of absorbing them.
`Output.normalized_mse` is the full dictionary's (x_hat_G), the number every architecture
reports. AuxK is Gao et al.'s, on the full reconstruction's residual.

Prefixes come from `Hyper.prefixes` (ascending, last = n_latents; `sae.prefixes` in the
config), else the default n_latents / 64, / 16, / 4, / 1 (our choice of geometric sizes;
sizes below 1 dropped). Inference, threshold, init, decoder constraint and input
normalisation ("unit_norm") are BatchTopK's; the sparsity knob is k.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sae_jax.errors import ConfigError
from sae_jax.saes import base, batchtopk

Params = base.Params


@dataclasses.dataclass(frozen=True)
class Hyper(batchtopk.Hyper):
  """Matryoshka BatchTopK's hyperparameters: BatchTopK's plus the nested sizes."""
  # Nested dictionary sizes m_1 < ... < m_G = n_latents (`sae.prefixes`); None: n_latents
  # / 64, / 16, / 4, / 1 (Bussmann et al. 2025 use several nested sizes; these are ours).
  prefixes: tuple[int, ...] | None = None

init = batchtopk.init
init_extras = batchtopk.init_extras
encode = batchtopk.encode
decode = base.decode


def prefixes(n_latents: int, hp: base.Hyper) -> tuple[int, ...]:
  """The nested dictionary sizes m_1 < ... < m_G = n_latents.

  Raises ConfigError if `hp.prefixes` is not strictly ascending, positive and ending at
  n_latents."""
  if hp.prefixes:
    m = tuple(int(p) for p in hp.prefixes)
    if any(a >= b for a, b in zip(m, m[1:])) or m[0] < 1 or m[-1] != n_latents:
      raise ConfigError(f"sae.prefixes={m} must be strictly ascending positive sizes ending at "
                        f"n_latents={n_latents}, e.g. ({n_latents // 16}, {n_latents // 4}, {n_latents})")
    return m
  return tuple(sorted({max(1, n_latents // f) for f in (64, 16, 4, 1)}))


def prefix_reconstructions(params: Params, z_BxN: jax.Array, m: tuple[int, ...]) -> list[jax.Array]:
  """[x_hat_g for each prefix m_g]: W_dec[:m_g]^T z[:m_g] + b_pre, each [B, d_in].

  Computed as running sums of the groups' decodes, so the G reconstructions cost one
  decode."""
  out, acc_BxD, start = [], params["b_pre"][None, :], 0
  for end in m:
    acc_BxD = acc_BxD + z_BxN[:, start:end] @ params["W_dec"][start:end]
    out.append(acc_BxD)
    start = end
  return out


def prefix_losses(params: Params, x_BxD: jax.Array, z_BxN: jax.Array, m: tuple[int, ...],
                  variance: jax.Array | float = 1.0) -> jax.Array:
  """float32 [G]: the normalized MSE of each prefix's reconstruction alone."""
  return jnp.stack([base.normalized_mse(x_BxD, x_hat, variance)
                    for x_hat in prefix_reconstructions(params, z_BxN, m)])


def loss(params: Params, x_BxD: jax.Array, extras: dict, hp: base.Hyper, *,
         variance: jax.Array | float = 1.0, dead_N: jax.Array | None = None) -> base.Output:
  """Matryoshka BatchTopK training loss (Bussmann et al. 2025, Sec. 3).

  Args/returns as `batchtopk.loss`; `loss` is the mean of the normalized MSEs of b_pre
  alone and of each prefix (G + 1 terms; the reference code's mean_l2_loss) plus
  aux_coef · AuxK, `normalized_mse` the full dictionary's.

  Raises:
    ConfigError: bad `hp.prefixes`. ValueError: k exceeds n_latents.
  """
  n_latents = params["W_enc"].shape[1]
  m = prefixes(n_latents, hp)
  pre_BxN = batchtopk.pre_activations(params, x_BxD)
  z_BxN = batchtopk.batch_topk(pre_BxN, hp.k)
  x_hats = prefix_reconstructions(params, z_BxN, m)
  per_prefix = jnp.stack([base.normalized_mse(x_BxD, x_hat, variance) for x_hat in x_hats])
  b_pre_only = base.normalized_mse(x_BxD, jnp.broadcast_to(params["b_pre"], x_BxD.shape), variance)
  reconstruction = (b_pre_only + jnp.sum(per_prefix)) / (len(m) + 1)
  aux = batchtopk.auxk(params, pre_BxN, x_BxD, x_hats[-1], dead_N, hp.k_aux)
  fired_N, l0 = base.stats(z_BxN, hp.fired_threshold)
  threshold = batchtopk.update_threshold(extras["threshold"], z_BxN, hp.threshold_momentum)
  return base.Output(reconstruction + hp.aux_coef * aux, per_prefix[-1],
                    jnp.zeros((), jnp.float32), aux, fired_N, l0, {"threshold": threshold})


def validate(hp: Hyper) -> None:
  """Raise ConfigError for prefixes that are not strictly ascending and ending at n_latents,
  or a non-positive encoder_init_scale."""
  batchtopk.ARCH.validate(hp)
  prefixes(hp.n_latents, hp)


# Recipes (`sae.recipe`): Bussmann et al. 2025's code (bartbussmann/matryoshka_sae) builds
# on their BatchTopK code and keeps its optimiser and dead-latent settings.
RECIPES = {
    "bussmann2025": {**batchtopk.RECIPES["bussmann2024"]},
}

ARCH = base.Architecture(
    name="matryoshka_batchtopk", hyper=Hyper, knob="k", unit_norm_decoder=True, init=init,
    init_extras=init_extras, encode=encode, decode=decode, loss=loss,
    paper="Bussmann et al. 2025, Learning multi-level features with Matryoshka sparse autoencoders",
    input_norm="unit_norm", encode_formula="as batchtopk: " + batchtopk.ENCODE_FORMULA,
    saelens=("jumprelu", True), zoo_grid=batchtopk.ARCH.zoo_grid, validate=validate,
    recipes=RECIPES)
