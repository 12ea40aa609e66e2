"""Compute-optimal allocation and the optimal learning rate, read off a sweep.

* `compute_optimal_allocation`: for a compute-frontier sweep (several n_latents, each
  trained long and evaluated at many token counts), the n_latents*(C) and token
  budget*(C) that minimise loss at each compute C, and their power laws
  n*(C) = A C^a, D*(C) = B C^b (Templeton et al. 2024, "Scaling Monosemanticity", scaling
  laws section: the optimal number of features grows faster than the optimal number of
  steps, a > b; with C proportional to n * D, a + b = 1). The optimum at each C is the
  vertex of a parabola in (log n, log L) through the best run and its two neighbours,
  the IsoFLOP-profile method of Hoffmann et al. 2022, Sec. 3.2.
* `optimal_learning_rates`: for an lr sweep (several lr per n_latents at a fixed token
  budget), the vertex of a parabola in (log lr, log L) around the best lr of each
  n_latents, and the law lr*(n) = a n^(-alpha) (Gao et al. 2024, Sec. 2.3 / Fig. 9 find
  lr proportional to 1/sqrt(n), alpha = 0.5).

An optimum at the edge of the values tried is only a bound: it is listed, flagged
`edge`, and left out of the power-law fit with a warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

from analysis.fitting import LOSS_KEY, fit_law
from analysis.results import get_field, group_runs, run_key
from analysis._warn import warn_caller
from sae_jax.errors import ConfigError


def parabola_vertex(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
                    ) -> float | None:
  """The x of the minimum of the least-squares parabola through (x, y), or None.

  Args:
    x: (M,) abscissae, M >= 3 distinct values (log n, log lr).
    y: (M,) ordinates (log loss).

  Returns:
    The vertex, clipped to [min x, max x]; None if the parabola opens downwards or is
    flat (no interior minimum).
  """
  x_M = np.asarray(x, dtype=np.float64)
  y_M = np.asarray(y, dtype=np.float64)
  if len(np.unique(x_M)) < 3:
    return None
  c2, c1, _ = np.polyfit(x_M, y_M, 2)
  if not c2 > 0:
    return None
  return float(np.clip(-c1 / (2 * c2), x_M.min(), x_M.max()))


def _interp_loglog(x_E: np.ndarray, y_E: np.ndarray, x: float) -> float:
  return float(np.exp(np.interp(np.log(x), np.log(x_E), np.log(y_E))))


def compute_optimal_allocation(records: Sequence[Mapping[str, Any]], *,
                               loss_key: str = LOSS_KEY, n_levels: int = 16,
                               n_bootstrap: int = 200, seed: int = 0,
                               huber_delta: float = 1e-3) -> dict[str, Any]:
  """n_latents*(C) and tokens*(C) of a compute-frontier sweep, and their power laws.

  Every run's loss-vs-compute curve is interpolated linearly in (log C, log L) on
  `n_levels` log-spaced compute levels spanning all runs. At each level covered by at
  least three runs (C within a run's evaluated range), the runs are ordered by
  n_latents; if the lowest loss is interior, n* is the vertex of the parabola in
  (log n, log L) through it and its two neighbours (Hoffmann et al. 2022, Sec. 3.2),
  else n* is the edge run's n_latents and the level is flagged "edge". The token budget
  is D*(C) = C / (FLOPs per token at n*), FLOPs per token (= flops / tokens of each run,
  12 d_in n in this project) interpolated log-log in n. Then n*(C) = A C^a and
  D*(C) = B C^b are fitted (`fit_law("growth_power_law")`) to the interior levels
  (Templeton et al. 2024: a > b).

  The levels share runs, so they are not independent points: the fits carry no interval
  (`no_interval` says why; `chinchilla_allocation`, Hoffmann et al.'s Approach 3, does),
  and only the exponent of n* is a measurement: b = 1 - a by construction.

  Args:
    records: one architecture and k (filter first): evaluation records with n_latents,
      tokens, flops and the loss, several runs of different n_latents.
    loss_key: the loss field.
    n_levels: compute levels on the log grid.
    n_bootstrap, seed, huber_delta: as in `analysis.fitting.fit_law`.

  Returns:
    {"levels": [{"flops", "n_latents", "tokens", "loss", "n_runs", "edge"}, ...],
     "n_latents_opt": LawFit dict (A, b) or {"error"}, "tokens_opt": the same,
     "a": exponent of n*, "b": exponent of D*, "a_plus_b", "features_grow_faster": a > b}.

  Raises:
    ConfigError: fewer than 3 runs with distinct n_latents, or records mixing k or
      architectures.
  """
  runs = list(group_runs(records, "flops", loss_key, "tokens", "n_latents").values())
  mixed = {(r[0].get("architecture"), r[0].get("k")) for r in runs}
  if len(mixed) > 1:
    raise ConfigError(f"compute_optimal_allocation: records mix {len(mixed)} (architecture, k) "
                      f"groups; filter to one, e.g. k={sorted(mixed, key=str)[0][1]}")
  ns = sorted({float(r[0]["n_latents"]) for r in runs})
  if len(ns) < 3:
    raise ConfigError(f"compute_optimal_allocation needs runs of at least 3 distinct n_latents, "
                      f"got {len(ns)}; use a compute-frontier sweep (sweeps/compute_frontier.py)")
  curves = []
  for run in runs:
    c_E = np.array([r["flops"] for r in run], dtype=np.float64)
    l_E = np.array([r[loss_key] for r in run], dtype=np.float64)
    t_E = np.array([r["tokens"] for r in run], dtype=np.float64)
    curves.append((float(run[0]["n_latents"]), c_E, l_E, float(np.median(c_E / t_E))))
  fpt_n = sorted({(n, fpt) for n, _, _, fpt in curves})
  fpt_x = np.array([n for n, _ in fpt_n])
  fpt_y = np.array([f for _, f in fpt_n])

  lo = min(c.min() for _, c, _, _ in curves)
  hi = max(c.max() for _, c, _, _ in curves)
  levels = []
  for C in np.geomspace(lo, hi, n_levels):
    pts: dict[float, list[float]] = {}
    for n, c_E, l_E, _ in curves:
      if c_E.min() * (1 - 1e-9) <= C <= c_E.max() * (1 + 1e-9) and len(c_E) >= 2:
        pts.setdefault(n, []).append(_interp_loglog(c_E, l_E, C))
    if len(pts) < 3:
      continue
    n_M = np.array(sorted(pts))
    l_M = np.array([math.exp(np.mean(np.log(pts[n]))) for n in n_M])  # seeds: geometric mean
    i = int(np.argmin(l_M))
    edge = i in (0, len(n_M) - 1)
    if edge:
      n_opt = float(n_M[i])
    else:
      v = parabola_vertex(np.log(n_M[i - 1:i + 2]), np.log(l_M[i - 1:i + 2]))
      n_opt = float(np.exp(v)) if v is not None else float(n_M[i])
    fpt = _interp_loglog(fpt_x, fpt_y, n_opt) if len(fpt_x) > 1 else fpt_y[0]
    levels.append({"flops": float(C), "n_latents": n_opt, "tokens": float(C / fpt),
                   "loss": float(l_M[i]), "n_runs": len(n_M), "edge": edge})

  out: dict[str, Any] = {"levels": levels}
  interior = [lv for lv in levels if not lv["edge"]]
  n_edge = len(levels) - len(interior)
  if n_edge:
    warn_caller(f"compute-optimal allocation: {n_edge} of {len(levels)} compute levels have "
                f"their best n_latents at the edge of the sweep; left out of the n*(C), D*(C) "
                  f"fits (widen the n_latents range)")
  for key, field in (("n_latents_opt", "n_latents"), ("tokens_opt", "tokens")):
    if len(interior) < 3:
      out[key] = {"error": f"only {len(interior)} of {len(levels)} compute levels have their "
                           f"best n_latents inside the sweep (need 3); add n_latents on the "
                           f"side of the edge optima, or train longer"}
      continue
    try:
      fit = fit_law("growth_power_law", [lv["flops"] for lv in interior],
                    [lv[field] for lv in interior], variables={"x": "flops"},
                    n_bootstrap=n_bootstrap, seed=seed, huber_delta=huber_delta, warn=False)
      # The levels interpolate the same few runs: not independent points, so no interval
      # from them is validated (benchmarks/fit_coverage.py); Approach 3 has one.
      out[key] = dataclasses.replace(
          fit, ci95={p: None for p in fit.params}, ci95_method="",
          no_interval="no interval: the compute levels interpolate the same runs, so they are "
                      "not independent points; see allocation (Approach 3) for an interval"
      ).to_dict()
    except ConfigError as e:
      out[key] = {"error": f"{e} (interior compute levels only: {len(interior)} of "
                           f"{len(levels)})"}
  if "params" in out["n_latents_opt"] and "params" in out["tokens_opt"]:
    a, b = out["n_latents_opt"]["params"]["b"], out["tokens_opt"]["params"]["b"]
    out.update(a=a, b=b, a_plus_b=a + b, features_grow_faster=bool(a > b))
  return out


def optimal_learning_rates(records: Sequence[Mapping[str, Any]], *, lr_key: str = "lr",
                           loss_key: str = LOSS_KEY, n_bootstrap: int = 200, seed: int = 0,
                           huber_delta: float = 1e-3, neighbours: int = 2) -> dict[str, Any]:
  """The best lr per n_latents of an lr sweep, and lr*(n) = a n^(-alpha).

  For each n_latents, the final losses are taken per distinct lr (geometric mean over
  repeats); if the lowest is interior, lr* is the vertex of the least-squares parabola in
  (log lr, log L) through the best lr and up to `neighbours` on each side, else the
  best lr itself, flagged "edge" (left out of the fit, with a warning). Then
  `fit_law("power_law")` gives lr*(n) = a n^(-alpha) (Gao et al. 2024, Sec. 2.3:
  alpha = 0.5).

  Args:
    records: one architecture and k: the final records (final=true) of an lr sweep;
      the lr is read from `lr_key` (default "lr", falling back to "config.train.lr").
    lr_key: the learning-rate field.
    loss_key: the loss field.
    n_bootstrap, seed, huber_delta: as in `analysis.fitting.fit_law`.
    neighbours: learning rates on each side of the best one in the vertex's parabola. The
      loss rises much faster above lr* (divergence) than below it, so a wide parabola
      leans towards the low side; 1 keeps the vertex local.

  Returns:
    {"per_n": [{"n_latents", "lr_opt", "loss", "lrs", "losses", "edge"}, ...],
     "lr_opt": LawFit dict (a, alpha) or {"error"}, "alpha": the exponent (if fitted)}.

  Raises:
    ConfigError: no n_latents has final records at 3 or more distinct learning rates.
  """
  by_n: dict[float, dict[float, list[float]]] = {}
  for r in records:
    lr = get_field(r, lr_key)
    if lr is None and lr_key == "lr":
      lr = get_field(r, "config.train.lr")
    loss, n = r.get(loss_key), r.get("n_latents")
    if r.get("final") is not True or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
        for v in (lr, loss, n)):
      continue
    by_n.setdefault(float(n), {}).setdefault(float(lr), []).append(float(loss))
  per_n = []
  for n in sorted(by_n):
    lrs = np.array(sorted(by_n[n]))
    if len(lrs) < 3:
      continue
    losses = np.array([math.exp(np.mean(np.log(by_n[n][lr]))) for lr in lrs])
    i = int(np.argmin(losses))
    edge = i in (0, len(lrs) - 1)
    lr_opt = float(lrs[i])
    if not edge:
      sl = slice(max(0, i - neighbours), min(len(lrs), i + neighbours + 1))
      v = parabola_vertex(np.log(lrs[sl]), np.log(losses[sl]))
      lr_opt = float(np.exp(v)) if v is not None else lr_opt
    per_n.append({"n_latents": n, "lr_opt": lr_opt, "loss": float(losses[i]),
                  "lrs": lrs.tolist(), "losses": losses.tolist(), "edge": edge})
  if not per_n:
    raise ConfigError(f"optimal_learning_rates needs final records of some n_latents at 3 or "
                      f"more distinct {lr_key} values; run an lr sweep (sweeps/lr_sweep.py)")
  interior = [p for p in per_n if not p["edge"]]
  if len(interior) < len(per_n):
    edges = ", ".join(f"{p['n_latents']:g}" for p in per_n if p["edge"])
    warn_caller(f"optimal lr: the best lr of n_latents {edges} is at the edge of the lrs "
                f"tried; left out of the lr*(n) fit (widen the lr range)")
  out: dict[str, Any] = {"per_n": per_n}
  try:
    out["lr_opt"] = fit_law("power_law", [p["n_latents"] for p in interior],
                            [p["lr_opt"] for p in interior], variables={"x": "n_latents"},
                            n_bootstrap=n_bootstrap, seed=seed,
                            huber_delta=huber_delta).to_dict()
    out["alpha"] = out["lr_opt"]["params"]["alpha"]
  except ConfigError as e:
    out["lr_opt"] = {"error": str(e)}
  return out


def allocation(params: Mapping[str, float], flops: Any, kappa: float) -> tuple[Any, Any]:
  """The compute-optimal (n_latents*, tokens*) of L(N, D) = E + A N^-alpha + B D^-beta at
  compute C = kappa * N * D (Hoffmann et al. 2022, Eq. 4):
  N* = G (C/kappa)^(beta/(alpha+beta)), D* = (C/kappa) / N*, G = (alpha A / (beta B))^(1/(alpha+beta)).

  Args:
    params: the fitted E, A, alpha, B, beta (`fit_law("chinchilla", ...)`).
    flops: compute C, FLOPs (scalar or array).
    kappa: FLOPs per token per latent (12 d_in in this project).
  """
  a, b = params["alpha"], params["beta"]
  G = (a * params["A"] / (b * params["B"])) ** (1.0 / (a + b))
  nd = np.asarray(flops, dtype=np.float64) / kappa
  n = G * nd ** (b / (a + b))
  return n, nd / n


def chinchilla_allocation(records: Sequence[Mapping[str, Any]], *, loss_key: str = LOSS_KEY,
                          n_bootstrap: int = 200, seed: int = 0,
                          huber_delta: float = 1e-3) -> dict[str, Any]:
  """Compute-optimal allocation as Hoffmann et al. 2022 do it (their Approach 3).

  Fits L(N, D) = E + A N^-alpha + B D^-beta (N = n_latents, D = training tokens) to every
  evaluation point of one (architecture, k) group, with a cluster bootstrap over runs
  (a run's evaluations share its noise): cluster-robust sandwich standard errors, t on
  G - 1 dof, and the exponent's interval by the delta method. At compute C = kappa N D the loss-minimising
  allocation is n*(C) ~ C^(beta/(alpha+beta)) and D*(C) ~ C^(alpha/(alpha+beta)): one
  measurement, the second exponent is the complement of the first (they sum to 1 by
  construction), so only `n_opt_exponent` is reported with its interval.

  Args:
    records: one architecture and k: evaluation records with n_latents, tokens, flops
      and the loss, several runs of different n_latents.
    loss_key, n_bootstrap, seed, huber_delta: as in `analysis.fitting.fit_law`.

  Returns:
    {"fit": the LawFit dict of "chinchilla", "kappa": FLOPs per token per latent (median
     of flops / (tokens n_latents)), "n_opt_exponent": beta/(alpha+beta),
     "n_opt_exponent_ci95": [lo, hi] or None, "tokens_opt_exponent": its complement,
     "runs": the runs fitted}.

  Raises:
    ConfigError: fewer than 3 distinct n_latents or tokens, or a fit error.
  """
  runs = group_runs(records, "tokens", loss_key, "flops", "n_latents")
  pts = [r for rs in runs.values() for r in rs]
  ns = {float(r["n_latents"]) for r in pts}
  if len(ns) < 3:
    raise ConfigError(f"L(N, D) needs runs of at least 3 distinct n_latents, got {len(ns)}")
  fit = fit_law("chinchilla", {"N": [r["n_latents"] for r in pts], "D": [r["tokens"] for r in pts]},
                [r[loss_key] for r in pts], variables={"N": "n_latents", "D": "tokens"},
                clusters=[run_key(r) for r in pts], n_bootstrap=n_bootstrap, seed=seed,
                huber_delta=huber_delta)
  kappa = float(np.median([r["flops"] / (r["tokens"] * r["n_latents"]) for r in pts]))
  x = fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"])
  ci = None
  if fit.ci95.get("alpha") is not None:  # delta method on the sandwich covariance
    a, b = fit.params["alpha"], fit.params["beta"]
    i_a, i_b = fit.spec.params.index("alpha"), fit.spec.params.index("beta")
    cov = np.array(fit.cov)[np.ix_([i_a, i_b], [i_a, i_b])]
    g = np.array([-b, a]) / (a + b) ** 2
    half = float(scipy.stats.t.ppf(0.975, fit.dof)) * math.sqrt(max(float(g @ cov @ g), 0.0))
    ci = [float(x - half), float(x + half)]
  return {"fit": fit.to_dict(), "kappa": kappa, "n_opt_exponent": float(x),
          "n_opt_exponent_ci95": ci, "tokens_opt_exponent": float(1 - x),
          "note": "n*(C) ~ C^x and D*(C) ~ C^(1-x): one exponent, the other its complement",
          "runs": sorted(f"{s}/{r}" for s, r in runs)}
