"""The SAE zoo on SmolLM2-135M: every architecture at several sparsities, compared on the
sparsity–fidelity frontier (normalized MSE vs L0, one curve per architecture).

Same activations as sweeps/quickstart.py (residual stream of SmolLM2-135M-Instruct at
layer 15, 409,600 training tokens of Shakespeare + KJV, 16,384 held-out tokens), so the
activation cache is shared with it. Every SAE has n_latents = 512 and sees half the
cache (204,800 tokens, batch 512, the default lr rule
`sae_jax.config.default_lr`: lr*(n, D) measured on this cache),
so the whole comparison runs in minutes; scale it up with, e.g.,
`--set sae.n_latents=2048 train.token_budget=409600` (about 8x the time). The sparsity knob is k for the TopK family (topk, batchtopk,
matryoshka_batchtopk) and the penalty coefficient lambda for the others (relu_l1,
relu_l1_unit_norm, kl, jumprelu, gated); every record holds the measured L0, the axis the
curves share.

Input normalisation. The papers normalise differently (`Architecture.input_norm`:
"unit_norm" per token for the TopK family, one "mean_norm" constant for Anthropic's and
DeepMind's recipes), but a normalized MSE is only comparable between runs that share it:
in SmolLM2's raw (or mean_norm-scaled) residual stream one direction (the massive-
activation dimensions) carries 92% of the variance, so a mean_norm SAE reaches a
normalized MSE of ~0.02 that a unit_norm SAE of the same quality would report as ~0.2.
So by default every point uses COMMON_INPUT_NORM ("unit_norm", Gao et al.'s, where the
normalized MSE measures the structure beyond that direction); set it to None to give each
architecture its paper's normalisation instead (and then compare curves within one
normalisation only).

Recipes. Every point trains with its architecture's paper recipe (`sae.recipe`, the first
of `Architecture.recipes`: optimiser, lr schedule, lambda warm-up, dead-latent remedy;
README "Recipes"), except for what this file sets for every point (input normalisation,
lr, token budget, dead_tokens from the quickstart); kl has none. `sweeps/
architectures_defaults.py` is the same sweep with no recipe (every architecture on the
shared defaults: constant lr, Adam 0.9 / 0.999, no warm-ups), for comparison.

The lambda grids are chosen so that L0 spans roughly the range of k in {8, 16, 32, 64};
they come from short calibration runs (n_latents 1024, 300 steps, on the first 65k tokens
of the cache), so the L0 of the full runs can be off by a factor of ~2; widen a grid if its
curve does not cover the range.

Run time on a 2-core CPU, measured with the quickstart's cache present: 4 min 40 s for
the 32 SAEs (8 per pass over the data), fits and the frontier plot included; add ~5 min
of harvesting if the cache is absent. At n_latents 2048 and the whole cache, expect ~35 min.
The plot lands in runs/architectures/plots/sparsity_fidelity.{png,pdf} (`sae-jax fit`
draws it for any table that mixes architectures).

    sae-jax sweep sweeps/architectures.py
"""

from sae_jax import saes
from sweeps import quickstart

N_LATENTS = 512
USE_RECIPES = True  # False: every architecture on the shared defaults (architectures_defaults.py)
COMMON_INPUT_NORM = "unit_norm"  # None: each architecture's paper's (Architecture.input_norm)
# Each architecture declares its own zoo grid (four knob values, high to low sparsity, per
# input_norm; `Architecture.zoo_grid`) and the settings a short run needs beyond the knob
# (`Architecture.zoo_overrides`, e.g. JumpReLU's starting threshold): see its module. The
# lambda grids come from calibration runs (n_latents 1024, 300 steps, on the first 65k
# tokens of the cache), in this codebase's units (the reconstruction term is the
# normalized MSE, penalties in units of the input scale s = sae.input_scale; each module's
# docstring gives the conversion to its paper's).


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "architectures"
  c.sae.n_latents = N_LATENTS
  c.train.token_budget = 204_800
  return c


def get_sweep():
  points = []
  for arch in saes.architectures():
    name = arch.name
    norm = COMMON_INPUT_NORM or arch.input_norm
    extra = dict(arch.zoo_overrides.get(norm, {}))
    recipe = saes.default_recipe(name) if USE_RECIPES else None
    if recipe:
      extra["sae.recipe"] = recipe
    for value in arch.zoo_grid[norm]:
      points.append({"sae.architecture": name, "sae.input_norm": norm,
                     f"sae.{arch.knob}": value, **extra})
  return points
