"""lr*(n, D) from one constant-lr sweep evaluated at several token counts (analysis.lr_rule)."""

import math

import numpy as np
import pytest

from analysis import lr_rule
from sae_jax.errors import ConfigError


def _sweep(alpha=0.3, beta=0.2, noise=0.0, seed=0):
  """Loss = L0(n, D) exp(0.3 (log lr - log lr*)^2), lr* = 0.05 n^-alpha D^-beta, every run
  evaluated at 5 token counts."""
  rng = np.random.default_rng(seed)
  out = []
  for n in (256, 512, 1024, 2048):
    for lr in 1e-4 * 2.0 ** np.arange(0, 9):
      for D in 25_600 * 2 ** np.arange(5):
        lr_star = 0.05 * n**-alpha * D**-beta
        loss = 0.5 * n**-0.2 * D**-0.1 * math.exp(0.3 * math.log(lr / lr_star) ** 2)
        out.append({"n_latents": n, "lr": float(lr), "tokens": int(D), "final": D == 409_600,
                    "normalized_mse": loss * math.exp(rng.normal(0, noise))})
  return out


def test_recovers_planted_exponents_of_n_and_budget():
  out = lr_rule.optimal_lr_by_budget(_sweep(), n_bootstrap=0)
  assert len(out["per_budget"]) == 5  # every evaluated token count, not only the final one
  p = out["fit"]["params"]
  assert p["alpha"] == pytest.approx(0.3, abs=1e-4)
  assert p["beta"] == pytest.approx(0.2, abs=1e-4)
  assert p["a"] == pytest.approx(0.05, rel=1e-3)
  noisy = lr_rule.optimal_lr_by_budget(_sweep(noise=0.005, seed=1), n_bootstrap=0)["fit"]["params"]
  assert abs(noisy["alpha"] - 0.3) < 0.05 and abs(noisy["beta"] - 0.2) < 0.05


def test_edge_optima_are_left_out_and_a_single_lr_is_an_error():
  recs = [r for r in _sweep() if r["lr"] <= 4e-4]  # best lr at the top edge for small n, D
  out = lr_rule.optimal_lr_by_budget(recs, n_bootstrap=0)
  edges = [p for per_n in out["per_budget"].values() for p in per_n if p["edge"]]
  assert edges and len(out["points"]) == sum(
      len(per_n) for per_n in out["per_budget"].values()) - len(edges)
  with pytest.raises(ConfigError, match="3 or more learning rates"):
    lr_rule.optimal_lr_by_budget([r for r in _sweep() if r["lr"] == 1e-4])
