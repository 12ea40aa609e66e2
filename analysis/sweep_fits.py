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
from analysis.fitting import HUBER_DELTA, LOSS_KEY, fit_frontier_law, fit_law
from analysis.results import dedupe_records, get_field, is_usable, run_key
from sae_jax.errors import ConfigError
from sae_jax.files import json_safe


DATA_SETTINGS = ("model", "layer", "d_in")
"""The record fields that say which activations an SAE was trained on: a law holds for one."""


def mixes_data_settings(records: Sequence[Mapping[str, Any]]) -> bool:
  """True if the records differ in a `DATA_SETTINGS` field that every one of them has (a
  field some records lack, e.g. written by an older version, does not split groups)."""
  fields = [f for f in DATA_SETTINGS if all(r.get(f) is not None for r in records)]
  return len({tuple(r.get(f) for f in fields) for r in records}) > 1


def group_key(record: Mapping[str, Any], multi_architecture: bool = False,
              multi_data: bool = False) -> str:
  """The key of a record's group: "k=32", prefixed "topk, " if architectures mix and
  suffixed ", model=smollm2, layer=15, d_in=576" if data settings mix. Every law is fitted
  per group: compute does not depend on k, so pooling k would fit the largest k's envelope."""
  key = f"k={record.get('k')}"
  if multi_architecture:
    key = f"{record.get('architecture')}, {key}"
  if multi_data:
    key += "".join(f", {f}={record[f]}" for f in DATA_SETTINGS if record.get(f) is not None)
  return key


def _data_key(record: Mapping[str, Any], multi_architecture: bool, multi_data: bool) -> str:
  """The key of (architecture, data settings) without k: the envelope over k and Eq. 3."""
  parts = ([str(record.get("architecture"))] if multi_architecture else []) + (
      [f"{f}={record[f]}" for f in DATA_SETTINGS if record.get(f) is not None]
      if multi_data else [])
  return ", ".join(parts) or "all"


def _run_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """The runs a fit used, as "sweep/run_id" (fits.json says which records each fit used)."""
  return sorted({f"{s}/{r}" for s, r in (run_key(rec) for rec in records)})


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


def _groups(records, multi_arch, multi_data=False):
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in records:
    groups.setdefault(group_key(r, multi_arch, multi_data), []).append(r)
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
  Every law is fitted per group: (architecture, k, data settings) -- `group_key`, "k=32"
  while one architecture and one (model, layer, d_in) -- and each fit lists the runs it
  used ("runs"). A table mixing groups says so (a warning).

  * ``L_N[group]``: L(N) at convergence from the `final` records: "power_law" and
    "irreducible" (Gao et al. 2024, Sec. 3.1), with the unconverged runs listed in
    "unconverged". `convergence="include"` (default) fits them too and warns;
    "exclude" leaves them out and warns.
  * ``L_C[group]``: L(C) = a * C^(-alpha) of the group's compute-efficient frontier
    (Gao et al. 2024, Fig. 1 left), fitted through each run's compute-efficient point
    (where its curve touches the frontier's envelope; the whole frontier where fewer than
    3 runs reach theirs): "fitted_on" says which, "frontier" and "fitted_points" list the
    points (`fit_frontier_law`).
  * ``L_C_envelope[architecture/data]``: the frontier over all k, only where several k
    are present, labelled as the extra it is (compute does not depend on k).
  * ``L_NK``: Gao et al. 2024, Eq. 3 over the final records of all n_latents and k (one
    architecture and data setting), same convergence policy as L_N.
  * ``allocation[group]``: Hoffmann et al. 2022's Approach 3, L(N, D) = E + A N^-alpha +
    B D^-beta over every evaluation point, and n*(C) ~ C^(beta/(alpha+beta)) (D*(C) the
    complement) (`analysis.optimal.chinchilla_allocation`).
  * ``compute_optimal[group]``: the IsoFLOP-profile allocation (Approach 2):
    n_latents*(C) and tokens*(C) (`analysis.optimal.compute_optimal_allocation`).
  * ``lr_opt[group]``: lr*(n) = a n^(-alpha) where the table holds several lr per
    n_latents (`analysis.optimal.optimal_learning_rates`); {"skipped": why} otherwise.
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
    A JSON-serialisable dict: {"loss", "settings", "convergence", "L_N", "groups", "L_C",
    "L_C_envelope", "L_NK", "allocation", "compute_optimal", "lr_opt", "run_warnings", "n_records",
    "n_runs", "n_excluded", "sweeps"}.

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
  run_warnings = collect_run_warnings(records)
  for rid, msgs in run_warnings.items():
    for msg in msgs:
      warn_caller(f"run {rid}: {msg}")
  multi_data = mixes_data_settings(records)
  archs = {r.get("architecture") for r in records}
  multi_arch = len(archs) > 1
  groups_all = _groups(usable, multi_arch, multi_data)
  if len(groups_all) > 1:
    warn_caller(f"records mix {len(groups_all)} (architecture, k, data settings) groups: "
                f"every law is fitted to each group separately ({', '.join(groups_all)})")
  fit_kw = {"n_bootstrap": n_bootstrap, "seed": seed, "huber_delta": huber_delta}

  table = convergence_lib.convergence_table(usable, loss_key=loss_key, rel_tol=rel_tol)
  unconverged = {(t["sweep"], t["run_id"]): t for t in table if not t["converged"]}
  finals = [r for r in usable if r.get("final") is True and is_usable(r, "n_latents")]
  if convergence == "exclude":
    finals = [r for r in finals if run_key(r) not in unconverged]

  L_N = {}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for key, group in _groups(finals, multi_arch, multi_data).items():
      group = sorted(group, key=lambda r: r["n_latents"])
      x = [float(r["n_latents"]) for r in group]
      y = [float(r[loss_key]) for r in group]
      bad = sorted({run_key(r)[1] for r in group if run_key(r) in unconverged})
      L_N[key] = {"k": group[0].get("k"), "architecture": group[0].get("architecture"),
                  "n_runs": len(group), "runs": _run_names(group), "unconverged": bad,
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
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    L_C = {key: _frontier_fit(group, loss_key, **fit_kw)
           for key, group in _groups(evals, multi_arch, multi_data).items()}
    by_data: dict[str, list[Mapping[str, Any]]] = {}
    for r in evals:
      by_data.setdefault(_data_key(r, multi_arch, multi_data), []).append(r)
    envelope = {}
    for key, group in by_data.items():
      if len({r.get("k") for r in group}) > 1:
        envelope[key] = {"label": "best-over-k envelope: an extra, not a law at fixed k "
                                  "(compute does not depend on k)",
                         **_frontier_fit(group, loss_key, **fit_kw)}
  _rewarn(caught)
  if not L_C:
    L_C["all"] = {"error": "no evaluation records with flops and a usable loss"}

  nk = [r for r in finals if is_usable(r, "k")]
  if multi_arch or multi_data:
    L_NK = {"error": f"records mix architectures or data settings; filter with "
                     f"architecture=..., layer=... to fit Eq. 3 to one"}
  else:
    L_NK = _try(fit_law, "joint_nk", {"n": [r["n_latents"] for r in nk],
                                      "k": [r["k"] for r in nk]},
                [r[loss_key] for r in nk], variables={"n": "n_latents", "k": "k"}, **fit_kw)

  if "params" in L_NK:
    L_NK["runs"] = _run_names(nk)
  compute_opt, lr_opt, allocation = {}, {}, {}
  for key, group in groups_all.items():
    compute_opt[key] = _try(optimal.compute_optimal_allocation, group, loss_key=loss_key,
                            **fit_kw)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      allocation[key] = _try(optimal.chinchilla_allocation,
                             [r for r in group if is_usable(r, "flops", "tokens", "n_latents")],
                             loss_key=loss_key, **fit_kw)
    _rewarn(caught)
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
      "groups": list(groups_all),
      "L_C": L_C,
      "L_C_envelope": envelope,
      "L_NK": L_NK,
      "allocation": allocation,
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


def _frontier_fit(evals: Sequence[Mapping[str, Any]], loss_key: str, *, n_bootstrap: int,
                  seed: int, huber_delta: float) -> dict[str, Any]:
  """L(C) of one group's evaluation records (`fit_frontier_law`: through each run's
  compute-efficient point, or the whole frontier where too few runs reach theirs;
  `fitted_on` says which), with the frontier points, the points fitted and the runs used;
  {"error": why} when it cannot be fitted."""
  runs = [run_key(r) for r in evals]
  n_runs = len(set(runs))
  fields = ("sweep", "run_id", "n_latents", "k", "tokens", "step", "flops", loss_key)
  if n_runs < MIN_RUNS_L_C:
    return {"error": f"L(C) needs evaluation points of at least {MIN_RUNS_L_C} distinct runs, "
                     f"got {n_runs}: a frontier of fewer runs is their training curves, not "
                     f"a compute-efficient frontier; add runs of other n_latents",
            "runs": _run_names(evals)}
  try:
    fit, idx, _ = fit_frontier_law([r["flops"] for r in evals],
                                         [r[loss_key] for r in evals], runs,
                                         n_bootstrap=n_bootstrap, seed=seed,
                                         huber_delta=huber_delta)
  except ConfigError as e:
    return {"error": str(e), "runs": _run_names(evals)}
  fitted = set(zip(fit.x["x"], fit.y))
  return {**fit.to_dict(),
          "frontier": [{f: evals[i].get(f) for f in fields} for i in idx],
          "fitted_points": [{f: r.get(f) for f in fields} for r in evals
                            if (float(r["flops"]), float(r[loss_key])) in fitted],
          "n_eval_points": len(evals), "runs": _run_names(evals)}


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
