"""The zoo sweep (sweeps/architectures.py) without the papers' recipes: every
architecture trained on the shared defaults (constant lr, Adam 0.9 / 0.999, no warm-ups,
no resampling), the comparison for the recipes' effect on the sparsity–fidelity frontier
and the dead-latent fraction (README, "Recipes").

    sae-jax sweep sweeps/architectures_defaults.py
"""

from sweeps import architectures


def get_config():
  c = architectures.get_config()
  c.name = "architectures_defaults"
  return c


def get_sweep():
  saved, architectures.USE_RECIPES = architectures.USE_RECIPES, False
  try:
    return architectures.get_sweep()
  finally:
    architectures.USE_RECIPES = saved
