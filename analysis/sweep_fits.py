"""Every scaling-law fit a results table supports: L(N) per group, L(C) on the frontier,
Gao et al.'s Eq. 3, the compute-optimal allocation and the optimal lr, each through the
engine of `analysis.fitting`; a fit the data cannot support holds its reason instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from analysis import convergence as convergence_lib
from analysis import optimal
from analysis._warn import warn_caller
from analysis.fitting import HUBER_DELTA, LOSS_KEY, compute_frontier, fit_law
from analysis.results import dedupe_records, get_field, is_usable, run_key
from sae_jax.errors import ConfigError
from sae_jax.files import json_safe


def group_key(record: Mapping[str, Any], multi_architecture: bool = False) -> str:
  """The key of a record's L(N) group: "k=32" (prefixed "topk, " if architectures mix)."""
  key = f"k={record.get('k')}"
  return f"{record.get('architecture')}, {key}" if multi_architecture else key


def _k_sort(key: str) -> tuple:
  value = key.rsplit("=", 1)[-1]
  try:
    return (key.rsplit("=", 1)[0], 0, float(value))
  except ValueError:
    return (key.rsplit("=", 1)[0], 1, 0.0)


def _try(fn, *args, **kwargs) -> dict[str, Any]:
  """fn(...).to_dict() (or fn(...) if a dict), or {"error": message} on a ConfigError."""
  try:
    out = fn(*args, **kwargs)
  except ConfigError as e:
    return {"error": str(e)}
  return out.to_dict() if hasattr(out, "to_dict") else out


def _groups(records, multi_arch):
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in records:
    groups.setdefault(group_key(r, multi_arch), []).append(r)
  return {k: groups[k] for k in sorted(groups, key=_k_sort)}


CONVERGENCE_POLICIES = ("include", "exclude")
MIN_RUNS_L_C = 3  # fewer runs: the "frontier" is one run's training curve


def fit_scaling_laws(records: Sequence[Mapping[str, Any]], *, loss_key: str = LOSS_KEY,
                     convergence: str = "include", rel_tol: float = 0.05,
                     n_bootstrap: int = 200, seed: int = 0,
                     huber_delta: float = HUBER_DELTA) -> dict[str, Any]:
  """Every scaling-law fit a results table supports (one sweep or several, pooled).

  * ``convergence``: each run judged by the rule of `analysis.convergence` (relative
    drop of loss over the last doubling of tokens < `rel_tol`).
  * ``L_N``: per k (and architecture, if several), L(N) at convergence from the `final`
    records: "power_law" and "irreducible" (Gao et al. 2024, Sec. 3.1), with the
    unconverged runs listed in "unconverged". `convergence="include"` (default) fits them
    too and warns; "exclude" leaves them out and warns.
  * ``L_C``: L(C) = a * C^(-alpha) on the compute-efficient frontier of ALL evaluation
    records (Gao et al. 2024, Fig. 1 left), the frontier points listed.
  * ``L_NK``: Gao et al. 2024, Eq. 3 over the final records of all n_latents and k (one
    architecture), same convergence policy as L_N.
  * ``compute_optimal``: per k, n_latents*(C) = A C^a and tokens*(C) = B C^b
    (`analysis.optimal.compute_optimal_allocation`; Templeton et al. 2024).
  * ``lr_opt``: per k, lr*(n) = a n^(-alpha) where the table holds several lr per n_latents
    (`analysis.optimal.optimal_learning_rates`); {"skipped": why} otherwise.
  * ``run_warnings``: {run_id: [warning, ...]} of the runs whose records carry warnings of
    the trainer (e.g. a silent sparsity knob, `sae_jax.training.diagnostics`); each is
    repeated here as a Python warning, since a point trained with a knob that did nothing
    sits wrongly on every curve.

  Each fit is `fit_law` (Huber in log space, L-BFGS-B from a grid, bootstrap 95%
  intervals) as a dict; a fit the data cannot support holds {"error": "..."} instead, so
  one missing law never hides the others (L(C) needs evaluation points of at least
  `MIN_RUNS_L_C` runs). Records whose loss is missing, NaN, inf or <= 0 are left out
  (counted in "n_excluded", with a warning); exact copies of a record (same sweep,
  run_id, tokens and values) are fitted once, with a warning
  (`analysis.results.dedupe_records`).

  Args:
    records: run records (see `analysis.results.load_results`).
    loss_key: the loss field to fit (default "normalized_mse").
    convergence: "include" or "exclude" unconverged runs from L_N and L_NK.
    rel_tol: the convergence threshold of `analysis.convergence`.
    n_bootstrap: bootstrap resamples per fit (0: no intervals).
    seed: bootstrap seed.
    huber_delta: Huber threshold in log-loss units (Hoffmann et al. 2022: 1e-3).

  Returns:
    A JSON-serialisable dict: {"loss", "settings", "convergence", "L_N", "L_C", "L_NK",
    "compute_optimal", "lr_opt", "run_warnings", "n_records", "n_runs", "n_excluded",
    "sweeps"}.

  Raises:
    ConfigError: `records` is empty, `convergence` is not "include" / "exclude", or two
      records of one (sweep, run_id, tokens) disagree (the message names both).
  """
  if not records:
    raise ConfigError("no records to fit; check the results file and the filters")
  if convergence not in CONVERGENCE_POLICIES:
    raise ConfigError(f"convergence={convergence!r} is not one of "
                      f"{', '.join(CONVERGENCE_POLICIES)}")
  records = dedupe_records(records, loss_key=loss_key)
  usable = [r for r in records if is_usable(r, loss_key)]
  n_excluded = len(records) - len(usable)
  if not usable:
    raise ConfigError(f"none of the {len(records)} records has a usable {loss_key} (missing, "
                      f"non-finite or non-positive); check the results file or --loss")
  if n_excluded:
    warn_caller(f"leaving out {n_excluded} of {len(records)} records with a missing, "
                f"non-finite or non-positive {loss_key}")
  mixed = {(r.get("model"), r.get("layer"), r.get("d_in")) for r in records}
  if len(mixed) > 1:
    warn_caller(f"records mix {len(mixed)} (model, layer, d_in) combinations; fits pool "
                f"them -- filter with model=..., layer=... for one law each")
  run_warnings = collect_run_warnings(records)
  for rid, msgs in run_warnings.items():
    for msg in msgs:
      warn_caller(f"run {rid}: {msg}")
  archs = {r.get("architecture") for r in records}
  multi_arch = len(archs) > 1
  fit_kw = {"n_bootstrap": n_bootstrap, "seed": seed, "huber_delta": huber_delta}

  table = convergence_lib.convergence_table(usable, loss_key=loss_key, rel_tol=rel_tol)
  unconverged = {(t["sweep"], t["run_id"]): t for t in table if not t["converged"]}
  finals = [r for r in usable if r.get("final") is True and is_usable(r, "n_latents")]
  if convergence == "exclude":
    finals = [r for r in finals if run_key(r) not in unconverged]

  L_N = {}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for key, group in _groups(finals, multi_arch).items():
      group = sorted(group, key=lambda r: r["n_latents"])
      x = [float(r["n_latents"]) for r in group]
      y = [float(r[loss_key]) for r in group]
      bad = sorted({run_key(r)[1] for r in group if run_key(r) in unconverged})
      L_N[key] = {"k": group[0].get("k"), "architecture": group[0].get("architecture"),
                  "n_runs": len(group), "unconverged": bad,
                  "power_law": _try(fit_law, "power_law", x, y, variables={"x": "n_latents"},
                                    **fit_kw),
                  "irreducible": _try(fit_law, "power_law_irreducible", x, y,
                                      variables={"x": "n_latents"}, **fit_kw)}
  _rewarn(caught)
  if not L_N and convergence == "exclude" and unconverged:
    L_N["all"] = {"error": "no final records among converged runs: every run is unconverged "
                           "(see fits['convergence']); train longer or use --convergence include"}
  elif not L_N:
    L_N["all"] = {"error": "no final records (final=true) with a usable loss; "
                           "has any run finished its token budget?"}
  if unconverged:
    names = sorted(rid for _, rid in unconverged)
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    action = "left out of" if convergence == "exclude" else "included in (flagged)"
    warn_caller(f"{len(names)} of {len(table)} runs have not converged ({shown}); "
                f"{action} L(N) and L(n, k) -- see fits['convergence']")

  evals = [r for r in usable if is_usable(r, "flops")]
  idx = compute_frontier([r["flops"] for r in evals], [r[loss_key] for r in evals])
  frontier = [evals[i] for i in idx]
  n_runs_c = len({run_key(r) for r in evals})
  if n_runs_c < MIN_RUNS_L_C:
    L_C = {"error": f"L(C) needs evaluation points of at least {MIN_RUNS_L_C} distinct runs, "
                    f"got {n_runs_c}: a frontier of fewer runs is their training curves, not "
                    f"a compute-efficient frontier; add runs of other n_latents"}
  else:
    L_C = _try(fit_law, "power_law", [r["flops"] for r in frontier],
               [r[loss_key] for r in frontier], variables={"x": "flops"}, **fit_kw)
  fields = ("sweep", "run_id", "n_latents", "k", "tokens", "step", "flops", loss_key)
  L_C["frontier"] = [{f: r.get(f) for f in fields} for r in frontier]
  L_C["n_eval_points"] = len(evals)

  nk = [r for r in finals if is_usable(r, "k")]
  if multi_arch:
    L_NK = {"error": f"records mix architectures {sorted(map(str, archs))}; filter with "
                     f"architecture=... to fit Eq. 3 to one"}
  else:
    L_NK = _try(fit_law, "joint_nk", {"n": [r["n_latents"] for r in nk],
                                      "k": [r["k"] for r in nk]},
                [r[loss_key] for r in nk], variables={"n": "n_latents", "k": "k"}, **fit_kw)

  compute_opt, lr_opt = {}, {}
  for key, group in _groups(usable, multi_arch).items():
    compute_opt[key] = _try(optimal.compute_optimal_allocation, group, loss_key=loss_key,
                            **fit_kw)
    n_lrs = _lrs_per_n(group)
    if n_lrs < 3:
      lr_opt[key] = {"skipped": f"at most {n_lrs} learning rate(s) per n_latents; an lr "
                                f"sweep (sweeps/lr_sweep.py) gives lr*(n)"}
    else:
      lr_opt[key] = _try(optimal.optimal_learning_rates, group, loss_key=loss_key, **fit_kw)

  return json_safe({
      "loss": loss_key,
      "settings": {"convergence": convergence, "rel_tol": rel_tol, **fit_kw},
      "convergence": {"rule": convergence_lib.RULE.format(tol=rel_tol), "runs": table,
                      "n_unconverged": len(unconverged)},
      "L_N": L_N,
      "L_C": L_C,
      "L_NK": L_NK,
      "compute_optimal": compute_opt,
      "lr_opt": lr_opt,
      "run_warnings": run_warnings,
      "n_records": len(records),
      "n_runs": len({run_key(r) for r in records}),
      "n_excluded": n_excluded,
      "sweeps": sorted({str(r.get("sweep")) for r in records}),
  })


def collect_run_warnings(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
  """{run_id: distinct warnings} over the records' "run_warnings" lists (the trainer's),
  runs without any left out; run ids are prefixed by the sweep when records pool several."""
  sweeps = {r.get("sweep") for r in records}
  out: dict[str, list[str]] = {}
  for r in records:
    for msg in r.get("run_warnings") or ():
      sweep, rid = run_key(r)
      key = f"{sweep}/{rid}" if len(sweeps) > 1 else rid
      if msg not in out.setdefault(key, []):
        out[key].append(msg)
  return out


def _rewarn(caught) -> None:
  """Re-issue the distinct warnings of a block once each (bootstrap refits repeat them)."""
  for msg in dict.fromkeys(str(w.message) for w in caught):
    warn_caller(msg)


def _lrs_per_n(records: Sequence[Mapping[str, Any]]) -> int:
  """The most distinct learning rates any n_latents has among the final records."""
  lrs: dict[Any, set] = {}
  for r in records:
    if r.get("final") is True:
      lr = r.get("lr", get_field(r, "config.train.lr"))
      lrs.setdefault(r.get("n_latents"), set()).add(lr)
  return max((len(v) for v in lrs.values()), default=0)
