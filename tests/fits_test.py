"""Tests of analysis.fitting and analysis.sweep_fits: planted laws are recovered, the frontier is the lower envelope,
and bad inputs fail with one actionable ConfigError."""

import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats

from analysis.fitting import (PowerLawFit, compute_frontier, fit_frontier_law, fit_power_law,
                              fit_law, frontier_tangent_points)
from analysis.sweep_fits import fit_scaling_laws
from sae_jax.errors import ConfigError

A, ALPHA, C = 3.0, 0.7, 0.05
N = 2.0 ** np.arange(3, 13)  # 8 .. 4096: a*N^-alpha spans 14x c down to 0.2x c


def _noisy(y, seed=0, sigma=0.02):
  """Multiplicative lognormal noise, sigma 2% (fixed seed)."""
  return y * np.exp(np.random.default_rng(seed).normal(0.0, sigma, np.shape(y)))


def _rel(x, ref):
  return abs(x / ref - 1)


def test_pure_power_law_recovers_planted_exponent():
  fit = fit_power_law(N, _noisy(A * N ** -ALPHA), irreducible=False)
  assert isinstance(fit, PowerLawFit)
  assert _rel(fit.params["alpha"], ALPHA) < 0.05
  assert _rel(fit.params["a"], A) < 0.05
  assert set(fit.params) == {"a", "alpha"} and fit.n_points == len(N)
  assert 0 < fit.stderr["alpha"] < 0.05


def test_irreducible_power_law_recovers_planted_exponent_and_floor():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a healthy fit must not warn
    fit = fit_power_law(N, _noisy(A * N ** -ALPHA + C), irreducible=True)
  assert _rel(fit.params["alpha"], ALPHA) < 0.05
  assert _rel(fit.params["c"], C) < 0.05
  assert _rel(fit.params["a"], A) < 0.10  # a is strongly correlated with alpha
  assert not fit.degenerate and fit.note == ""
  assert all(v is not None and v > 0 for v in fit.stderr.values())


def test_pure_fit_equals_polyfit_in_log_log():
  y = _noisy(A * N ** -ALPHA + C, seed=3, sigma=0.1)  # misspecified on purpose
  fit = fit_power_law(N, y, irreducible=False)
  slope, intercept = np.polyfit(np.log(N), np.log(y), 1)
  np.testing.assert_allclose(fit.params["alpha"], -slope, rtol=1e-10)
  np.testing.assert_allclose(np.log(fit.params["a"]), intercept, rtol=1e-10)
  np.testing.assert_allclose(fit.residuals, np.polyval([slope, intercept], np.log(N)) - np.log(y),
                             atol=1e-10)


def test_fit_is_json_serialisable_and_predicts():
  fit = fit_power_law(N, A * N ** -ALPHA + C, irreducible=True)
  d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
  assert d["law"] == "L(N) = a * N^(-alpha) + c" and d["irreducible"] is True
  np.testing.assert_allclose(fit.predict(N), A * N ** -ALPHA + C, rtol=1e-6)


def test_degenerate_irreducible_fit_warns_and_says_so():
  # A pure power law has no floor: c must run to 0.
  with pytest.warns(UserWarning, match="degenerate") as caught:
    fit = fit_power_law(N, A * N ** -ALPHA, irreducible=True)
  assert fit.degenerate and "ran to 0" in fit.note
  ours = [w for w in caught if "degenerate fit" in str(w.message)]
  assert [w.filename for w in ours] == [__file__]  # the caller's line, not analysis' internals


def test_frontier_is_the_lower_envelope():
  flops = [1, 2, 2, 3, 4, 5, 6, 7, 7, 8]
  loss = [5.0, 4.0, 3.0, 3.5, 2.0, 2.0, 2.5, 1.0, 1.0, 0.5]
  # kept: 0 (5.0), 2 (3.0 beats 4.0 at equal compute), 4 (2.0), 7 (first of the tie 1.0), 9.
  np.testing.assert_array_equal(compute_frontier(flops, loss), [0, 2, 4, 7, 9])
  # Input order does not matter (up to which of two exact duplicates is kept).
  perm = np.random.default_rng(0).permutation(len(flops))
  c_P, l_P = np.array(flops)[perm], np.array(loss)[perm]
  got = compute_frontier(c_P, l_P)
  assert list(zip(c_P[got], l_P[got])) == [(1, 5.0), (2, 3.0), (4, 2.0), (7, 1.0), (8, 0.5)]
  assert compute_frontier([], []).size == 0


def test_frontier_brute_force_definition():
  rng = np.random.default_rng(1)
  c, l = rng.integers(1, 20, 200).astype(float), rng.uniform(0.1, 1, 200)
  got = set(compute_frontier(c, l).tolist())
  want = {i for i in range(len(c)) if all(l[i] < l[j] for j in range(len(c))
                                           if j != i and c[j] <= c[i])}
  assert got == want


@pytest.mark.parametrize("n, loss, irreducible, match", [
    ([1024, 1024, 1024], [0.3, 0.2, 0.25], False,
     r"need at least 3 points with distinct n_latents, got 1 \(n_latents=1024\)"),
    ([1024, 2048], [0.3, 0.2], False, "need at least 3 points"),
    ([1024, 2048, 4096], [0.3, 0.2, 0.1], True, "need at least 4 points"),
    ([1024, 2048, 4096], [0.3, float("nan"), 0.1], False, "finite and positive"),
    ([1024, 2048, 4096], [0.3, float("inf"), 0.1], False, "finite and positive"),
    ([1024, 2048, 4096], [0.3, 0.0, 0.1], False, "finite and positive"),
    ([1024, 2048, 4096], [0.3, -0.2, 0.1], False, "finite and positive"),
    ([0, 2048, 4096], [0.3, 0.2, 0.1], False, "n_latents must be finite and positive"),
    ([1024, 2048, 4096], [0.3, 0.2], False, "equal length"),
])
def test_bad_inputs_raise_config_error(n, loss, irreducible, match):
  with pytest.raises(ConfigError, match=match) as e:
    fit_power_law(n, loss, irreducible)
  assert "\n" not in str(e.value)


def test_frontier_rejects_nan():
  with pytest.raises(ConfigError, match="finite"):
    compute_frontier([1.0, 2.0], [0.5, float("nan")])


def _records(ns, k, final_only=False):
  out = []
  for n in ns:
    for t in (1e4, 1e5, 1e6):
      out.append({"sweep": "s", "run_id": f"n{n}_k{k}", "architecture": "topk", "k": k,
                  "n_latents": n, "tokens": t, "flops": 12 * 64 * n * t, "final": t == 1e6,
                  "normalized_mse": 2 * n ** -0.5 + t ** -0.3})
  return out


def test_fit_scaling_laws_records_per_k_errors_instead_of_failing():
  records = _records([256, 512, 1024, 2048], 32) + _records([256, 512], 16)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fits = fit_scaling_laws(records)
  json.dumps(fits, allow_nan=False)
  assert list(fits["L_N"]) == ["k=16", "k=32"]
  assert "need at least 3 points" in fits["L_N"]["k=16"]["power_law"]["error"]
  assert fits["L_N"]["k=32"]["power_law"]["params"]["alpha"] > 0
  assert "params" in fits["L_N"]["k=32"]["irreducible"]
  # L(C) per k: compute does not depend on k, so k=16's two runs are not a frontier.
  L_C = fits["L_C"]["k=32"]
  assert L_C["params"]["alpha"] > 0 and len(L_C["frontier"]) >= 3 and L_C["fitted_on"]
  assert len(L_C["fitted_points"]) == L_C["n_points"]
  assert "at least 3 distinct runs, got 2" in fits["L_C"]["k=16"]["error"]
  assert fits["L_C"]["k=32"]["runs"] == [f"s/n{n}_k32" for n in (1024, 2048, 256, 512)]
  assert fits["n_records"] == len(records) and fits["sweeps"] == ["s"]


def test_fit_scaling_laws_rejects_empty():
  with pytest.raises(ConfigError, match="no records"):
    fit_scaling_laws([])


def test_mixed_architectures_and_layers_are_fitted_per_group_and_say_so():
  recs = _records([256, 512, 1024, 2048], 32)
  recs += [dict(r, architecture="batchtopk", run_id=r["run_id"] + "_b") for r in recs]
  for r in recs:
    r["layer"] = 15
  recs += [dict(r, layer=10, run_id=r["run_id"] + "_l10") for r in recs if r["architecture"] == "topk"]
  with pytest.warns(UserWarning, match=r"mix 3 \(architecture, k, data settings\) groups: every "
                                       r"law is fitted to each group separately"):
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="^(?!records mix)")
      fits = fit_scaling_laws(recs, n_bootstrap=0)
  keys = {"batchtopk, k=32, layer=15", "topk, k=32, layer=10", "topk, k=32, layer=15"}
  assert set(fits["groups"]) == set(fits["L_N"]) == set(fits["L_C"]) == keys
  for key in keys:
    runs = fits["L_C"][key]["runs"]
    assert len(runs) == 4 and len({r.split("_", 2)[-1] for r in runs}) == 1  # one group's runs
    assert fits["L_N"][key]["runs"] == runs
  assert "error" in fits["L_NK"]  # Eq. 3 needs one architecture and data setting


def _frontier_runs(n_evals=24, span=(1 / 64, 4)):
  """Noise-free L = N^-0.3 + D^-0.3 of 6 runs, N = 2^10 .. 2^15, each evaluated at n_evals
  log-spaced token counts; the compute-optimal L(C) ~ C^-0.15 (Hoffmann et al. 2022, Eq. 4)."""
  c, l, runs = [], [], []
  for n in 2.0 ** np.arange(10, 16):
    for d in np.geomspace(span[0] * n, span[1] * n, n_evals):
      c.append(12 * 64 * n * d)
      l.append(n ** -0.3 + d ** -0.3)
      runs.append(f"n{int(n)}")
  return np.array(c), np.array(l), runs


def test_frontier_law_is_fitted_through_each_runs_tangent_point():
  c, l, runs = _frontier_runs()
  idx = compute_frontier(c, l)
  # the frontier's ends lie above the compute-optimal curve: fitted whole, it is too steep
  whole = -np.polyfit(np.log(c[idx]), np.log(l[idx]), 1)[0]
  assert whole > 0.155
  fit, f_idx, _ = fit_frontier_law(c, l, runs, n_bootstrap=0, warn=False)
  np.testing.assert_array_equal(f_idx, idx)
  assert abs(fit.params["alpha"] - 0.15) < 0.001
  assert fit.n_points == 6 and "compute-efficient point of each of 6 runs" in fit.fitted_on
  # each fitted point is its run's minimum of log L + alpha log C, inside its evaluations
  t_idx = frontier_tangent_points(c, l, runs, fit.params["alpha"])
  np.testing.assert_allclose(fit.x["x"], c[t_idx])
  assert [runs[i] for i in t_idx] == [f"n{2 ** e}" for e in range(10, 16)]


def test_frontier_law_falls_back_to_the_whole_frontier_and_says_why():
  # runs evaluated only past their optimum: none reaches its tangent point
  c, l, runs = _frontier_runs(n_evals=6, span=(2, 8))
  with pytest.warns(UserWarning, match="only 0 runs reach their compute-efficient point"):
    fit, idx, _ = fit_frontier_law(c, l, runs, n_bootstrap=0)
  assert fit.n_points == len(idx) and "whole compute-efficient frontier" in fit.fitted_on
  assert "wider token range" in fit.note


def test_the_floor_E_of_L_N_D_has_an_interval_on_the_linear_scale_that_may_reach_0():
  c, l, runs = _frontier_runs(n_evals=12)
  l = (0.02 + l) * _noisy(np.ones_like(l), seed=2, sigma=0.01)
  n = np.array([float(r[1:]) for r in runs])
  fit = fit_law("chinchilla", {"N": n, "D": c / (12 * 64 * n)}, l, clusters=runs, n_bootstrap=0,
                warn=False)
  lo, hi = fit.ci95["E"]
  E, se = fit.params["E"], fit.stderr["E"]
  half = hi - E
  assert half > 0 and (lo == 0.0 or abs((E - lo) - half) < 1e-9 * half)
  assert abs(half - scipy.stats.t.ppf(0.975, fit.dof) * se) < 1e-9 * half
  lo_a, hi_a = fit.ci95["A"]  # the other log-fitted parameters: exp of their log's interval
  assert abs(math.log(hi_a / fit.params["A"]) - math.log(fit.params["A"] / lo_a)) < 1e-9
