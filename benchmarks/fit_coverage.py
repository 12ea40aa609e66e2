"""Do the intervals of fits.json cover? Planted laws, many noisy replicates, coverage.

For each setting, tables are drawn from a known law plus noise, fitted exactly as
`sae-jax fit` fits them (`analysis.fitting.fit_law`, `fit_frontier_law`,
`analysis.optimal.chinchilla_allocation`), and the table prints, for every interval the
fit reports, how often the nominal 95% interval held the planted value, with the bias
and RMSE of the exponent relative to its mean reported standard error (SE) or interval
half-width. Target: 92-98% coverage at 2% noise, |bias| < SE/4.

Settings (2% multiplicative lognormal noise unless said):
  L(N) pure, alpha = 0.2 / 0.5, 8 n_latents (2^8 .. 2^15)     -- t x sandwich SE
  L(N) pure, alpha = 0.5, 4 n_latents (the quickstart's grid)  -- t x sandwich SE
  L(N) + c, alpha = 0.5, c = min L / 3, 8 n_latents            -- t x sandwich SE
  Eq. 3 (Gao et al. 2024), 6 n_latents x 5 k                    -- t x sandwich SE
  L(C) of the frontier of L(N, D) = A N^-a + B D^-b (a = b = 0.3, so alpha_C = 0.15),
    6 runs x 24 evaluations, 2% run-level + 0.5% point-level noise, fitted through each
    run's compute-efficient point (`fit_frontier_law`) -- t x sandwich SE (reported),
    and, with --bootstrap, the percentile interval of a bootstrap over those runs (not
    reported in fits.json)
  L(N, D) Approach 3 on the same runs with E > 0: n*(C) ~ C^(b/(a+b)) -- as L(C)

  python benchmarks/fit_coverage.py [--replicates 200] [--bootstrap 0] [--only NAME]

All seven settings at 200 replicates with --bootstrap 0 (the reported intervals need no
bootstrap): about 4 min on the shared 2-core CPU when idle; 23 min under load
(2026-12-02, measured).

The test suite runs a fast version (tests/fit_coverage_test.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import warnings

import numpy as np

from analysis.fitting import fit_frontier_law, fit_law
from analysis.optimal import chinchilla_allocation

SIGMA = 0.02
KAPPA = 12 * 576  # FLOPs per token per latent at SmolLM2's d_in


def _noise(rng, shape, sigma=SIGMA):
  return np.exp(rng.normal(0.0, sigma, shape))


def _power(alpha, n_points):
  n = 2.0 ** np.arange(8, 8 + n_points) if n_points > 4 else 2.0 ** np.arange(8, 12)

  def draw(rng, n_bootstrap):
    y = 3.0 * n ** -alpha * _noise(rng, n.shape)
    return fit_law("power_law", n, y, variables={"x": "n_latents"}, n_bootstrap=0, warn=False)
  return draw, {"a": 3.0, "alpha": alpha}, "alpha"


def _irreducible():
  n = 2.0 ** np.arange(8, 16)
  c = 3.0 * n.max() ** -0.5 / 3

  def draw(rng, n_bootstrap):
    y = (3.0 * n ** -0.5 + c) * _noise(rng, n.shape)
    return fit_law("power_law_irreducible", n, y, variables={"x": "n_latents"}, n_bootstrap=0,
                   warn=False)
  return draw, {"a": 3.0, "alpha": 0.5, "c": c}, "alpha"


EQ3 = {"alpha": -0.5, "beta_k": -0.3, "beta_n": -0.2, "gamma": -0.05, "zeta": -4.0, "eta": -0.1}


def _eq3():
  n = np.repeat(2.0 ** np.arange(10, 16), 5)
  k = np.tile(2.0 ** np.arange(3, 8), 6)
  ln, lk = np.log(n), np.log(k)
  L = (np.exp(EQ3["alpha"] + EQ3["beta_k"] * lk + EQ3["beta_n"] * ln + EQ3["gamma"] * lk * ln)
       + np.exp(EQ3["zeta"] + EQ3["eta"] * lk))

  def draw(rng, n_bootstrap):
    return fit_law("joint_nk", {"n": n, "k": k}, L * _noise(rng, L.shape), n_bootstrap=0,
                   warn=False)
  return draw, dict(EQ3), "beta_n"


RUN_NS = 2.0 ** np.arange(10, 16)  # 6 runs


def _runs(rng, E=0.0, a=0.3, b=0.3, run_sigma=SIGMA, point_sigma=0.005):
  """Evaluation records of 6 runs, each trained to 4 N tokens and evaluated at 24
  log-spaced token counts from N/64, loss E + N^-a + D^-b with run and point noise."""
  recs = []
  for n in RUN_NS:
    run_noise = float(np.exp(rng.normal(0.0, run_sigma)))
    for d in np.geomspace(n / 64, 4 * n, 24):
      loss = (E + n ** -a + d ** -b) * run_noise * float(np.exp(rng.normal(0.0, point_sigma)))
      recs.append({"sweep": "planted", "run_id": f"n{int(n)}", "n_latents": float(n),
                   "tokens": float(d), "flops": KAPPA * n * d, "normalized_mse": loss,
                   "architecture": "topk", "k": 32})
  return recs


def _frontier():
  def draw(rng, n_bootstrap):
    recs = _runs(rng)
    fit, _, ci_boot = fit_frontier_law(
        [r["flops"] for r in recs], [r["normalized_mse"] for r in recs],
        [r["run_id"] for r in recs], n_bootstrap=n_bootstrap, seed=int(rng.integers(1 << 30)),
        warn=False)
    return dataclasses.replace(fit, ci95={**fit.ci95, "alpha[run bootstrap]": ci_boot["alpha"]})
  alpha = 0.3 * 0.3 / 0.6
  return draw, {"alpha": alpha, "alpha[run bootstrap]": alpha}, "alpha"


class _Alloc:
  """chinchilla_allocation's result, shaped like a LawFit for the table."""

  def __init__(self, out):
    fit = out["fit"]
    self.params = dict(fit["params"], n_opt_exponent=out["n_opt_exponent"])
    self.ci95 = dict(fit["ci95"], n_opt_exponent=out["n_opt_exponent_ci95"])
    self.stderr = dict(fit["stderr"], n_opt_exponent=None)
    self.no_interval = fit["no_interval"]
    self.ci95_method = fit["ci95_method"]


def _approach3():
  truth = {"E": 0.02, "A": 1.0, "alpha": 0.3, "B": 1.0, "beta": 0.3, "n_opt_exponent": 0.5}

  def draw(rng, n_bootstrap):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return _Alloc(chinchilla_allocation(_runs(rng, E=0.02), n_bootstrap=n_bootstrap,
                                          seed=int(rng.integers(1 << 30))))
  return draw, truth, "n_opt_exponent"


SETTINGS = {
    "L(N) pure a=0.2, 8 n": lambda: _power(0.2, 8),
    "L(N) pure a=0.5, 8 n": lambda: _power(0.5, 8),
    "L(N) pure a=0.5, 4 n": lambda: _power(0.5, 4),
    "L(N)+c a=0.5, 8 n": _irreducible,
    "Eq. 3, 6 n x 5 k": _eq3,
    "L(C) frontier, 6 runs": _frontier,
    "L(N,D) Approach 3, 6 runs": _approach3,
}


def coverage(name: str, replicates: int, n_bootstrap: int, seed: int = 0) -> dict:
  """Coverage of every reported interval of one setting, and the exponent's bias / RMSE.

  Returns {"setting", "method", "exponent", "n", "no_interval" (replicates without one),
  "coverage": {param: fraction}, "bias", "rmse", "se" (mean SE, or mean half-width of
  the interval where no SE is reported), "seconds"}.
  """
  draw, truth, exponent = SETTINGS[name]()
  rng = np.random.default_rng(seed)
  hits = {p: 0 for p in truth}
  counted = {p: 0 for p in truth}
  est, ses, no_interval, method = [], [], 0, ""
  t0 = time.time()
  for _ in range(replicates):
    fit = draw(rng, n_bootstrap)
    est.append(fit.params[exponent])
    method = method or fit.ci95_method
    if fit.no_interval:
      no_interval += 1
      continue
    for p, v in truth.items():
      ci = (fit.ci95 or {}).get(p)
      if ci is not None:
        counted[p] += 1
        hits[p] += ci[0] <= v <= ci[1]
    ci = fit.ci95.get(exponent)
    se = (fit.stderr or {}).get(exponent)
    ses.append(se if se is not None else (ci[1] - ci[0]) / 3.92 if ci else math.nan)
  est = np.array(est)
  return {"setting": name, "method": method, "exponent": exponent, "n": replicates,
          "no_interval": no_interval,
          "coverage": {p: hits[p] / counted[p] if counted[p] else None for p in truth},
          "bias": float(est.mean() - truth[exponent]),
          "rmse": float(np.sqrt(np.mean((est - truth[exponent]) ** 2))),
          "se": float(np.nanmean(ses)) if ses else math.nan, "seconds": time.time() - t0}


def format_row(row: dict) -> str:
  cov = ", ".join(f"{p} {c:.1%}" for p, c in row["coverage"].items() if c is not None) or "-"
  none = f" [no interval in {row['no_interval']}/{row['n']}]" if row["no_interval"] else ""
  return (f"{row['setting']:<27} {row['exponent']:<15} bias {row['bias']:+.4f}  rmse "
          f"{row['rmse']:.4f}  SE {row['se']:.4f}  |bias|/SE {abs(row['bias']) / row['se']:.2f}"
          f"  coverage: {cov}{none}  ({row['method'] or 'no interval'}; {row['n']} replicates, "
          f"{row['seconds']:.0f} s)")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--replicates", type=int, default=200)
  p.add_argument("--bootstrap", type=int, default=0,
                 help="bootstrap resamples for L(C)'s cluster-bootstrap interval, measured "
                      "for comparison only (not reported in fits.json); default 0: skip")
  p.add_argument("--only", action="append", default=None, help="run only these settings")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  print(f"planted-law coverage of nominal 95% intervals, {SIGMA:.0%} noise")
  for name in args.only or SETTINGS:
    print(format_row(coverage(name, args.replicates, args.bootstrap, args.seed)), flush=True)


if __name__ == "__main__":
  main()
