"""Tests of the laws read off whole sweeps: the frontier of a planted L(C), the
compute-optimal allocation (Templeton et al. 2024), the optimal learning rate (Gao et al.
2024, lr ~ 1/sqrt(n)), the convergence rule, and fit_scaling_laws over them."""

import json
import math
import warnings

import numpy as np
import pytest

from analysis import convergence, optimal
from analysis.fitting import compute_frontier, fit_law
from analysis.sweep_fits import fit_scaling_laws
from sae_jax.errors import ConfigError

D_IN = 64
ALPHA_N, BETA_D = 0.35, 0.7  # L(n, D) = 2 n^-0.35 + 30 D^-0.7: a Chinchilla-form planted law
N_GRID = 2.0 ** np.arange(6, 17)  # 11 runs, n_latents 64 .. 65536
D_GRID = np.geomspace(1e3, 1e9, 40)  # each run evaluated at 40 token counts


def _planted(n, D):
  return 2.0 * n**-ALPHA_N + 30.0 * D**-BETA_D


def _frontier_sweep(noise=0.0, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for n in N_GRID:
    for i, D in enumerate(D_GRID):
      out.append({"sweep": "frontier", "run_id": f"n{int(n)}", "architecture": "topk", "k": 32,
                  "n_latents": int(n), "d_in": D_IN, "tokens": float(D), "step": i,
                  "final": i == len(D_GRID) - 1, "flops": 12.0 * D_IN * n * D,
                  "normalized_mse": _planted(n, D) * math.exp(rng.normal(0, noise)),
                  "lr": 1e-3})
  return out


def test_frontier_of_a_planted_law_follows_its_power_law():
  """min_n L(n, C / (12 d n)) = const * C^-(alpha beta / (alpha + beta)) exactly."""
  recs = _frontier_sweep()
  c = np.array([r["flops"] for r in recs])
  loss = np.array([r["normalized_mse"] for r in recs])
  idx = compute_frontier(c, loss)
  # Keep the compute range whose optimum n lies inside the sweep (away from its edges).
  n_opt = lambda C: (ALPHA_N * 2.0 / (BETA_D * 30.0 * (12 * D_IN / C) ** BETA_D)) ** (
      1 / (ALPHA_N + BETA_D))
  inside = [i for i in idx if 4 * N_GRID[0] < n_opt(c[i]) < N_GRID[-1] / 4]
  assert len(inside) >= 10
  fit = fit_law("power_law", c[inside], loss[inside], n_bootstrap=100)
  want = ALPHA_N * BETA_D / (ALPHA_N + BETA_D)
  assert abs(fit.params["alpha"] / want - 1) < 0.05, (fit.params["alpha"], want)
  # Every frontier point is on the lower envelope: none beaten with less compute.
  for i in idx:
    assert not np.any((c <= c[i]) & (loss < loss[i]))


def test_compute_optimal_allocation_recovers_planted_exponents():
  """n*(C) ~ C^(beta/(alpha+beta)) = C^(2/3), D*(C) ~ C^(1/3): features grow faster."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the levels at the ends of the sweep are edge optima
    out = optimal.compute_optimal_allocation(_frontier_sweep(noise=0.005), n_levels=24,
                                             n_bootstrap=100)
  a_want, b_want = BETA_D / (ALPHA_N + BETA_D), ALPHA_N / (ALPHA_N + BETA_D)
  assert abs(out["a"] / a_want - 1) < 0.05, out["a"]
  assert abs(out["b"] / b_want - 1) < 0.05, out["b"]
  assert out["features_grow_faster"] and abs(out["a_plus_b"] - 1) < 1e-6  # C = 12 d n D
  # the levels interpolate the same runs: no interval is claimed from them
  assert out["n_latents_opt"]["ci95"]["b"] is None
  assert "not independent points" in out["n_latents_opt"]["no_interval"]
  assert sum(not lv["edge"] for lv in out["levels"]) >= 8
  json.dumps(out, allow_nan=False)


def test_approach_3_recovers_the_planted_allocation_exponent():
  """Hoffmann et al.'s Approach 3 on the same sweep: n* ~ C^(beta/(alpha+beta)) = C^(2/3),
  reported once (D*'s exponent is its complement), inside its interval."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = optimal.chinchilla_allocation(_frontier_sweep(noise=0.005), n_bootstrap=0)
  want = BETA_D / (ALPHA_N + BETA_D)
  assert abs(out["n_opt_exponent"] / want - 1) < 0.05, out["n_opt_exponent"]
  assert out["tokens_opt_exponent"] == pytest.approx(1 - out["n_opt_exponent"])
  lo, hi = out["n_opt_exponent_ci95"]
  assert lo < want < hi
  n, d = optimal.allocation(out["fit"]["params"], 1e15, out["kappa"])
  assert n * d * out["kappa"] == pytest.approx(1e15)


def test_compute_optimal_needs_three_n_latents():
  recs = [r for r in _frontier_sweep() if r["n_latents"] in (64, 128)]
  with pytest.raises(ConfigError, match="at least 3 distinct n_latents, got 2"):
    optimal.compute_optimal_allocation(recs)


def _lr_sweep(noise=0.0, seed=0, b=0.5):
  """Final loss = L0(n) * exp(0.3 (log lr - log lr*(n))^2), lr*(n) = 2e-4 (n / 2^14)^-b."""
  rng = np.random.default_rng(seed)
  out = []
  for n in 2.0 ** np.arange(8, 15):
    lr_star = 2e-4 * (n / 2**14) ** -b
    for lr in 2e-4 * 2.0 ** np.arange(-3, 7):  # a fixed absolute grid, not centred on lr*
      loss = 0.5 * n**-0.2 * math.exp(0.3 * math.log(lr / lr_star) ** 2)
      out.append({"sweep": "lr", "run_id": f"n{int(n)}_lr{lr:.3g}", "architecture": "topk",
                  "k": 32, "n_latents": int(n), "tokens": 1e6, "flops": 12 * 64 * n * 1e6,
                  "final": True, "lr": float(lr),
                  "normalized_mse": loss * math.exp(rng.normal(0, noise))})
  return out


def test_optimal_lr_recovers_inverse_sqrt_n():
  out = optimal.optimal_learning_rates(_lr_sweep(), n_bootstrap=0)
  assert abs(out["alpha"] / 0.5 - 1) < 1e-6  # the parabola in log lr is exact here
  noisy = optimal.optimal_learning_rates(_lr_sweep(noise=0.01, seed=1), n_bootstrap=200)
  assert abs(noisy["alpha"] / 0.5 - 1) < 0.05
  lo, hi = noisy["lr_opt"]["ci95"]["alpha"]
  assert lo < 0.5 < hi
  assert all(not p["edge"] for p in noisy["per_n"])


def test_optimal_lr_flags_edges_and_needs_an_lr_sweep():
  recs = [r for r in _lr_sweep() if r["lr"] <= 2e-4 * 2**1]  # large n: best lr off the grid?
  with pytest.warns(UserWarning, match="at the edge of the lrs tried"):
    out = optimal.optimal_learning_rates(recs, n_bootstrap=0)
  assert any(p["edge"] for p in out["per_n"])
  one_lr = [r for r in _lr_sweep() if r["lr"] == 2e-4]
  with pytest.raises(ConfigError, match="3 or more distinct lr values"):
    optimal.optimal_learning_rates(one_lr)


def test_parabola_vertex():
  x = np.array([-1.0, 0.0, 1.0, 2.0])
  assert optimal.parabola_vertex(x, (x - 0.4) ** 2 + 3) == pytest.approx(0.4)
  assert optimal.parabola_vertex(x, -(x**2)) is None  # a maximum, not a minimum
  assert optimal.parabola_vertex([0, 0, 1], [1, 2, 3]) is None  # two distinct x


def test_convergence_rule():
  t = 2.0 ** np.arange(10, 18)
  assert convergence.last_doubling_drop(t, t**-0.3) == pytest.approx(1 - 2**-0.3)  # 18.8%
  flat = 0.1 + 1e-3 * t**-0.5
  assert convergence.last_doubling_drop(t, flat) < 0.05
  # Extrapolated from the last two points when the curve starts after T/2.
  assert convergence.last_doubling_drop([3e5, 4e5], [0.2, 0.19]) == pytest.approx(
      1 - (0.19 / 0.2) ** (math.log(2) / math.log(4 / 3)))
  assert math.isnan(convergence.last_doubling_drop([1e5], [0.2]))
  recs = ([{"sweep": "s", "run_id": "fast", "n_latents": 8, "k": 2, "tokens": float(x),
            "normalized_mse": float(x**-0.3)} for x in t] +
          [{"sweep": "s", "run_id": "done", "n_latents": 16, "k": 2, "tokens": float(x),
            "normalized_mse": float(y)} for x, y in zip(t, flat)] +
          [{"sweep": "s", "run_id": "one", "n_latents": 32, "k": 2, "tokens": 1e5,
            "normalized_mse": 0.3}])
  table = {row["run_id"]: row for row in convergence.convergence_table(recs)}
  assert not table["fast"]["converged"] and "18.8%" in table["fast"]["reason"]
  assert table["done"]["converged"] and table["done"]["reason"] == ""
  assert not table["one"]["converged"] and "single evaluation point" in table["one"]["reason"]


def test_fit_scaling_laws_on_a_frontier_and_lr_sweep_pooled():
  recs = _frontier_sweep(noise=0.005) + _lr_sweep(noise=0.01)
  for r in recs[-len(_lr_sweep()):]:
    r["k"] = 16  # the lr sweep is another group
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fits = fit_scaling_laws(recs, n_bootstrap=50)
  json.dumps(fits, allow_nan=False)
  assert fits["sweeps"] == ["frontier", "lr"]
  co = fits["compute_optimal"]["k=32"]
  assert abs(co["a"] / (BETA_D / (ALPHA_N + BETA_D)) - 1) < 0.05
  assert abs(fits["lr_opt"]["k=16"]["alpha"] / 0.5 - 1) < 0.05
  assert "skipped" in fits["lr_opt"]["k=32"]
  assert fits["L_N"]["k=32"]["unconverged"] == []  # 30 D^-0.7 is flat by 1e9 tokens
  assert "params" in fits["L_NK"]
