"""The optimal learning rate against n_latents and token budget, lr*(n, D) = a n^(-alpha) D^(-beta).

With a constant learning rate (the TopK recipe has no schedule) a run's evaluation after
D tokens is exactly the result of a run whose budget is D: same batches, same updates. So
one lr sweep of long runs evaluated at log-spaced token counts (`sweeps/lr_sweep.py`)
gives lr*(n) at every budget on its evaluation grid. For each budget D the records at D
tokens go through `analysis.optimal.optimal_learning_rates` (vertex of a parabola in
(log lr, log L) around the best lr; optima at the edge of the grid are left out), and the
interior optima are fitted with `analysis.fitting.fit_law("power_law_2")`. Gao et al.
2024 (Sec. 2.3) give lr* ~ n^(-1/2) for runs of billions of tokens; `sae_jax.config.default_lr`
holds the constants this fit gives on SmolLM2.

    python -m analysis.lr_rule runs/lr_sweep/results.jsonl [--min-tokens 50000]
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.fitting import fit_law
from analysis.optimal import optimal_learning_rates
from sae_jax.errors import ConfigError


def optimal_lr_by_budget(records: Sequence[Mapping[str, Any]], *, min_tokens: int = 0,
                         loss_key: str = "normalized_mse", n_bootstrap: int = 200,
                         neighbours: int = 1) -> dict[str, Any]:
  """lr*(n) at each evaluated token count, and the joint fit lr*(n, D).

  Args:
    records: every evaluation record of a constant-lr sweep (several lr per n_latents,
      one architecture and k), at several token counts.
    min_tokens: token counts below this are ignored.
    loss_key: the loss field.
    n_bootstrap: bootstrap resamples of the joint fit.
    neighbours: learning rates each side of the best in the vertex's parabola (1: the
      three-point vertex; the loss is asymmetric about lr*, see optimal_learning_rates).

  Returns:
    {"per_budget": {D: optimal_learning_rates(...)["per_n"]}, "points": [(n, D, lr*)]
     of interior optima, "fit": the LawFit dict of power_law_2 (a, alpha, beta) or
     {"error": ...}}.

  Raises:
    ConfigError: no token count has 3 or more learning rates for some n_latents.
  """
  budgets = sorted({int(r["tokens"]) for r in records if r.get("tokens", 0) >= min_tokens})
  per_budget, points = {}, []
  for D in budgets:
    at_D = [{**r, "final": True} for r in records if int(r.get("tokens", -1)) == D]
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_n = optimal_learning_rates(at_D, loss_key=loss_key, n_bootstrap=0,
                                       neighbours=neighbours)["per_n"]
    except ConfigError:
      continue
    per_budget[D] = per_n
    points += [(p["n_latents"], float(D), p["lr_opt"]) for p in per_n if not p["edge"]]
  if not per_budget:
    raise ConfigError("optimal_lr_by_budget needs, at some token count, 3 or more learning "
                      "rates per n_latents; run sweeps/lr_sweep.py")
  out: dict[str, Any] = {"per_budget": per_budget, "points": points}
  try:
    out["fit"] = fit_law("power_law_2", {"n": [p[0] for p in points], "D": [p[1] for p in points]},
                         [p[2] for p in points], variables={"n": "n_latents", "D": "tokens"},
                         n_bootstrap=n_bootstrap).to_dict()
  except ConfigError as e:
    out["fit"] = {"error": str(e)}
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("results")
  p.add_argument("--min-tokens", type=int, default=0)
  a = p.parse_args(argv)
  with open(a.results) as f:
    records = [json.loads(line) for line in f if line.strip()]
  out = optimal_lr_by_budget(records, min_tokens=a.min_tokens)
  for D, per_n in out["per_budget"].items():
    cells = ", ".join(f"n={p['n_latents']:g}: {p['lr_opt']:.2e}{' (edge)' if p['edge'] else ''}"
                      for p in per_n)
    print(f"D={D:>9,}: {cells}")
  fit = out["fit"]
  if "error" in fit:
    print("fit:", fit["error"])
  else:
    pr, se = fit["params"], fit.get("stderr", {})
    print(f"lr*(n, D) = {pr['a']:.4g} * n^-{pr['alpha']:.3f} * D^-{pr['beta']:.3f}  "
          f"(se: alpha {se.get('alpha', float('nan')):.3f}, beta {se.get('beta', float('nan')):.3f}; "
          f"{len(out['points'])} interior optima)")


if __name__ == "__main__":
  main()
