"""When has a run converged? One stated rule, applied to each run's loss-vs-tokens curve.

**The rule.** A run has converged when the relative drop of its loss over the last
doubling of training tokens is below `rel_tol` (default 5%):

    drop = (L(T/2) - L(T)) / L(T/2) < rel_tol,

where T is the tokens of the run's last (final) evaluation point and L(T/2) is read off
the run's curve by linear interpolation in (log tokens, log loss) between evaluation
points, or extrapolated from its last two points when the curve starts after T/2. A run
with a single evaluation point cannot be judged and counts as not converged.

L(N) "at convergence" (Gao et al. 2024, Sec. 3.1) is fitted to the final records.
`analysis.sweep_fits.fit_scaling_laws` by default *includes* unconverged runs, lists them in
each fit's "unconverged" entry and warns; with ``convergence="exclude"`` it drops them
(and warns). Either way nothing is dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.results import group_runs

REL_TOL = 0.05
RULE = ("a run has converged when the relative drop of its loss over the last doubling of "
        "training tokens, (L(T/2) - L(T)) / L(T/2), is below {tol:g} (L(T/2) interpolated "
        "in log tokens - log loss)")


def last_doubling_drop(tokens: Sequence[float] | np.ndarray,
                       loss: Sequence[float] | np.ndarray) -> float:
  """(L(T/2) - L(T)) / L(T/2) of one run's curve, T = its largest token count.

  Args:
    tokens: (E,) training tokens of the evaluation points, > 0.
    loss: (E,) their loss (normalized MSE), > 0.

  Returns:
    The relative drop (negative if the loss rose); NaN for fewer than two distinct token
    counts.
  """
  t_E = np.asarray(tokens, dtype=np.float64)
  l_E = np.asarray(loss, dtype=np.float64)
  order = np.argsort(t_E, kind="stable")
  t_E, l_E = t_E[order], l_E[order]
  t_u, first = np.unique(t_E, return_index=True)  # first record per token count
  l_u = l_E[first]
  if len(t_u) < 2:
    return math.nan
  lt, ll = np.log(t_u), np.log(l_u)
  target = lt[-1] - math.log(2.0)
  if target >= lt[0]:
    log_half = float(np.interp(target, lt, ll))
  else:  # extrapolate from the last two points
    slope = (ll[-1] - ll[-2]) / (lt[-1] - lt[-2])
    log_half = float(ll[-1] + slope * (target - lt[-1]))
  half = math.exp(log_half)
  return (half - float(l_u[-1])) / half


def convergence_table(records: Sequence[Mapping[str, Any]], *, loss_key: str = "normalized_mse",
                      rel_tol: float = REL_TOL) -> list[dict[str, Any]]:
  """Judge every run by the module's rule (see the module docstring).

  Args:
    records: run records (`analysis.results.load_results`); runs are keyed by
      (sweep, run_id).
    loss_key: the loss field.
    rel_tol: the largest relative drop over the last doubling that counts as converged.

  Returns:
    One dict per run, ordered by (k, n_latents): "sweep", "run_id", "architecture",
    "n_latents", "k", "tokens" (of the last point), "loss" (at the last point), "drop",
    "converged" (bool), "reason" ("" if converged).
  """
  out = []
  for (sweep, rid), run in group_runs(records, "tokens", loss_key).items():
    tokens = [r["tokens"] for r in run]
    loss = [r[loss_key] for r in run]
    drop = last_doubling_drop(tokens, loss)
    last = run[-1]
    if math.isnan(drop):
      reason = "a single evaluation point: cannot judge convergence"
    elif drop >= rel_tol:
      reason = f"loss still fell {100 * drop:.1f}% over the last doubling of tokens"
    else:
      reason = ""
    out.append({"sweep": sweep, "run_id": rid, "architecture": last.get("architecture"),
                "n_latents": last.get("n_latents"), "k": last.get("k"),
                "tokens": last["tokens"], "loss": last[loss_key],
                "drop": None if math.isnan(drop) else drop, "converged": reason == "",
                "reason": reason})
  return out
