"""`sae-jax fit`: results.jsonl -> fits.json + plots, the last step of the data flow.

    sae-jax fit runs/quickstart/results.jsonl [more.jsonl ...] [--out DIR]
        [--filter layer=15 --filter architecture=topk] [--bootstrap 200] [--seed 0]
        [--convergence include|exclude]

writes `DIR/fits.json` (see `analysis.sweep_fits.fit_scaling_laws`: every law with standard
errors and bootstrap 95% intervals) and `DIR/plots/<stem>.{png,pdf}` for each of
`PLOT_STEMS` (the extrapolation plots only where the law was fitted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from analysis import plots, sparsity_fidelity
from analysis.sweep_fits import fit_scaling_laws
from analysis.results import load_results, matches, resolve_results_path
from sae_jax import files
from sae_jax.errors import ConfigError

FITS_FILENAME = "fits.json"
PLOT_STEMS = ("loss_vs_n_latents", "loss_vs_compute", "loss_vs_tokens", "fig1", "loss_vs_k",
              "compute_optimal", "lr_sweep")
EXTRAPOLATION_STEMS = ("extrapolation_L_N", "extrapolation_L_C")




ResultsArg = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping[str, Any]]


def fit_sweep(results: ResultsArg, out_dir: str | os.PathLike | None = None, *,
              n_bootstrap: int = 200, bootstrap_seed: int = 0, convergence: str = "include",
              loss_key: str = "normalized_mse", **filters: Any) -> dict[str, Any]:
  """Load a sweep's records (or several sweeps'), fit every scaling law, write fits.json
  and the plots.

  Args:
    results: a results.jsonl path, a sweep directory, a list of either, or the records
      themselves (a list of dicts).
    out_dir: where to write; default: the directory holding the (first) results.jsonl.
    n_bootstrap: bootstrap resamples per fit (0: no intervals or bands; faster).
    bootstrap_seed: the bootstrap seed.
    convergence: "include" unconverged runs in L(N) and Eq. 3 (flagged, with a warning)
      or "exclude" them; see `analysis.convergence`.
    loss_key: the record field the laws are fitted to: "normalized_mse", or a measure of
      the evaluation suite such as "delta_ce" (records without it are left out, with a
      warning). Other keys write fits_<key>.json and plots/<key>/.
    **filters: field=value record filters, as in `analysis.results.load_results`
      (architecture="topk", layer=15, model="smollm2", k=32, ...).

  Returns:
    The fits dict (as written to `out_dir/fits.json`), with "plots": the files written,
    relative to out_dir.

  Writes:
    `out_dir/fits.json` and `out_dir/plots/<stem>.{png,pdf}` for every stem of
    `PLOT_STEMS`, plus `extrapolation_L_N` (the first k with an L(N) fit) and
    `extrapolation_L_C` when fitted: together or not at all (`sae_jax.files.staged_outputs`),
    so a failure leaves an earlier fits.json and its plots intact.

  Raises:
    ConfigError: missing/empty results, no record left after filtering, or records
      given without `out_dir`.
  """
  if isinstance(results, (str, os.PathLike)) or (
      isinstance(results, Sequence) and results and isinstance(results[0], (str, os.PathLike))):
    paths = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    records = load_results(paths, **filters)
    if out_dir is None:
      out_dir = os.path.dirname(resolve_results_path(paths[0])) or "."
  else:
    records = [dict(r) for r in results]
    if filters:
      records = [r for r in records if matches(r, filters)]
    if not records:
      raise ConfigError("no records to fit" + (f" match {filters}" if filters else "") +
                        "; check the results and the filters")
    if out_dir is None:
      raise ConfigError("fit_sweep was given records, not a results.jsonl path: pass out_dir")
  out_dir = os.fspath(out_dir)
  fits = fit_scaling_laws(records, n_bootstrap=n_bootstrap, seed=bootstrap_seed,
                          convergence=convergence, loss_key=loss_key)
  if filters:
    fits["filters"] = json.loads(json.dumps(filters, default=str))
  default = loss_key == "normalized_mse"
  plot_rel = "plots" if default else os.path.join("plots", loss_key)
  name = FITS_FILENAME if default else f"fits_{loss_key}.json"
  # fits.json and its plots appear together or not at all: all are drawn into a staging
  # directory and moved into place only once every one has been written; plots of an
  # earlier fit that this one does not draw (a law no longer fitted) are removed.
  with files.staged_outputs(out_dir, remove=_stale_plots(out_dir, plot_rel)) as staging:
    written = write_plots(records, fits, os.path.join(staging, plot_rel), loss_key)
    fits["plots"] = [os.path.relpath(p, staging) for p in written]
    files.write_json_atomic(os.path.join(staging, name), fits)
  return fits


def _stale_plots(out_dir: str, plot_rel: str) -> list[str]:
  """The figures of `PLOT_STEMS` / `EXTRAPOLATION_STEMS` already in out_dir/plot_rel."""
  stems = PLOT_STEMS + EXTRAPOLATION_STEMS + ("sparsity_fidelity",)
  return [os.path.join(plot_rel, f"{stem}.{ext}") for stem in stems for ext in ("png", "pdf")
          if os.path.isfile(os.path.join(out_dir, plot_rel, f"{stem}.{ext}"))]


def write_plots(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any],
                plot_dir: str | os.PathLike, loss_key: str = "normalized_mse") -> list[str]:
  """Every plot of a fitted table into plot_dir (see `fit_sweep`); returns the paths."""
  stem = lambda name: os.path.join(plot_dir, name)  # noqa: E731
  written = []
  written += plots.plot_loss_vs_n(records, fits, stem("loss_vs_n_latents"), loss_key=loss_key)
  written += plots.plot_loss_vs_compute(records, fits, stem("loss_vs_compute"), loss_key=loss_key)
  written += plots.plot_loss_vs_tokens(records, stem("loss_vs_tokens"), loss_key=loss_key)
  written += plots.plot_fig1(records, fits, stem("fig1"), loss_key=loss_key)
  written += plots.plot_loss_vs_k(records, fits, stem("loss_vs_k"), loss_key=loss_key)
  written += plots.plot_compute_optimal(fits, stem("compute_optimal"))
  written += plots.plot_lr_sweep(fits, stem("lr_sweep"))
  for key, entry in fits.get("L_N", {}).items():
    fit = next((f for f in (entry.get("irreducible", {}), entry.get("power_law", {}))
                if "params" in f and not f.get("degenerate")), None)
    if fit is not None:
      written += plots.plot_extrapolation(fit, stem("extrapolation_L_N"), xlabel="n_latents",
                                          title=f"L(N) extrapolated, {key}")
      break
  for key, L_C in fits.get("L_C", {}).items():
    if "params" in L_C:
      written += plots.plot_extrapolation(L_C, stem("extrapolation_L_C"), factor=100.0,
                                          xlabel="training compute (FLOPs)",
                                          title=f"L(C) on the frontier, extrapolated, {key}")
      break
  if len({r.get("architecture") for r in records}) > 1:  # the zoo: compare on one axis
    written += sparsity_fidelity.plot_sparsity_fidelity(records, stem("sparsity_fidelity"))
  return written


def parse_filters(items: Sequence[str] | None) -> dict[str, Any]:
  """["layer=15", "k=32"] -> {"layer": "15", "k": "32"}; a key given twice matches either value.

  Raises:
    ConfigError: an item has no "=" or an empty key.
  """
  filters: dict[str, Any] = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(f"--filter {item!r} is not key=value; e.g. --filter layer=15")
    key = key.strip()
    if key in filters:
      prev = filters[key]
      filters[key] = (prev if isinstance(prev, list) else [prev]) + [value]
    else:
      filters[key] = value
  return filters


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The arguments of `sae-jax fit`."""
  parser.add_argument("results", nargs="+", metavar="RESULTS",
                      help="runs/<sweep>/results.jsonl, or the sweep directory (several allowed)")
  parser.add_argument("--out", default=None, metavar="DIR",
                      help="output directory (default: the directory of the first results.jsonl)")
  parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                      help="keep records whose field KEY equals VALUE (repeatable; e.g. "
                           "--filter layer=15 --filter architecture=topk)")
  parser.add_argument("--bootstrap", type=int, default=200, metavar="B",
                      help="bootstrap resamples per fit for the 95%% intervals (0: none; "
                           "default 200)")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
  parser.add_argument("--loss", default="normalized_mse", metavar="KEY",
                      help="record field to fit (default normalized_mse; e.g. delta_ce, kl, "
                           "probe_loss from train.eval_measures); other keys write "
                           "fits_KEY.json and plots/KEY/")
  parser.add_argument("--convergence", choices=("include", "exclude"), default="include",
                      help="unconverged runs in L(N) and Eq. 3: include them, flagged "
                           "(default), or exclude them")


def summary(fits: Mapping[str, Any]) -> str:
  """The fits in a few lines: each exponent with its 95% bootstrap interval."""
  lines = [f"{fits['n_records']} records, {fits['n_runs']} runs, "
           f"sweeps: {', '.join(fits['sweeps'])}"]
  for rid, msgs in fits.get("run_warnings", {}).items():
    lines.extend(f"  warning, run {rid}: {msg}" for msg in msgs)
  conv = fits.get("convergence", {})
  if conv.get("n_unconverged"):
    lines.append(f"  {conv['n_unconverged']} of {len(conv['runs'])} runs not converged "
                 f"({fits.get('settings', {}).get('convergence', 'include')}d; rule: "
                 f"{conv['rule']})")
  for key, entry in fits["L_N"].items():
    for name in ("power_law", "irreducible"):
      fit = entry.get(name, entry)
      if "params" in fit:
        p = fit["params"]
        extra = f", c = {p['c']:.3g}" if "c" in p else ""
        flag = "  [degenerate]" if fit.get("degenerate") else ""
        lines.append(f"  L(N) {key:>8} {name:<11}: alpha = {plots.format_param(fit, 'alpha')}, "
                     f"a = {p['a']:.3g}{extra}{flag}")
        if fit.get("no_interval"):
          lines.append(f"    {fit['no_interval']}")
      elif name == "power_law":
        lines.append(f"  L(N) {key:>8}: {fit.get('error')}")
  if len(fits.get("groups", [])) > 1:
    lines.append(f"  {len(fits['groups'])} groups, each fitted separately: "
                 f"{'; '.join(fits['groups'])}")
  for key, L_C in fits.get("L_C", {}).items():
    if "params" in L_C:
      lines.append(f"  L(C) frontier {key:>8} ({len(L_C['frontier'])} points of "
                   f"{len(L_C['runs'])} runs): alpha = {plots.format_param(L_C, 'alpha', 4)}, "
                   f"a = {L_C['params']['a']:.3g}")
      if L_C.get("fitted_on"):
        lines.append(f"    fitted on {L_C['fitted_on']}")
      if L_C.get("no_interval"):
        lines.append(f"    {L_C['no_interval']}")
    else:
      lines.append(f"  L(C) {key:>8}: {L_C.get('error')}")
  for key, L_C in fits.get("L_C_envelope", {}).items():
    if "params" in L_C:
      lines.append(f"  L(C) best over k ({key}; an extra, not a law at fixed k): alpha = "
                   f"{plots.format_param(L_C, 'alpha', 4)}")
  for key, entry in fits.get("allocation", {}).items():
    if "n_opt_exponent" in entry:
      ci = entry["n_opt_exponent_ci95"]
      shown = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"({entry['fit']['no_interval']})"
      lines.append(f"  allocation {key:>8} (L(N, D), Approach 3): n* ~ C^{entry['n_opt_exponent']:.3f} "
                   f"{shown}; D* ~ C^(1 - that), its complement")
    else:
      lines.append(f"  allocation {key:>8}: {entry.get('error')}")
  L_NK = fits.get("L_NK", {})
  if "params" in L_NK:
    lines.append("  L(n, k) Eq. 3: " + ", ".join(f"{p} = {v:.3f}"
                                                  for p, v in L_NK["params"].items()))
  elif L_NK:
    lines.append(f"  L(n, k) Eq. 3: {L_NK.get('error')}")
  for key, entry in fits.get("compute_optimal", {}).items():
    if "a" in entry:
      lines.append(f"  compute-optimal {key:>8} (IsoFLOP, Approach 2): n* ~ "
                   f"C^{plots.format_param(entry['n_latents_opt'], 'b')}; D* ~ C^(1 - that), "
                   f"its complement")
    else:
      err = entry.get("error") or entry.get("n_latents_opt", {}).get("error")
      lines.append(f"  compute-optimal {key:>8}: {err}")
  for key, entry in fits.get("lr_opt", {}).items():
    if "alpha" in entry:
      lines.append(f"  optimal lr {key:>8}: lr* ~ n^-{plots.format_param(entry['lr_opt'], 'alpha')}")
    elif "error" in entry or "lr_opt" in entry:
      lines.append(f"  optimal lr {key:>8}: {entry.get('error') or entry['lr_opt'].get('error')}")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Run `sae-jax fit` from parsed arguments; prints a summary and where files went."""
  if args.bootstrap < 0:
    raise ConfigError(f"--bootstrap {args.bootstrap} must be >= 0")
  fits = fit_sweep(args.results, args.out, n_bootstrap=args.bootstrap, bootstrap_seed=args.seed,
                   convergence=args.convergence, loss_key=args.loss, **parse_filters(args.filter))
  out = args.out or os.path.dirname(resolve_results_path(args.results[0])) or "."
  print(summary(fits))
  stems = sorted({os.path.splitext(os.path.basename(p))[0] for p in fits["plots"]})
  name = FITS_FILENAME if args.loss == "normalized_mse" else f"fits_{args.loss}.json"
  plot_dir = os.path.join(out, "plots") if args.loss == "normalized_mse" else os.path.join(
      out, "plots", args.loss)
  print(f"wrote {os.path.join(out, name)} and {plot_dir}/"
        f"{{{','.join(stems)}}}.{{png,pdf}}")
  return fits


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m analysis.report RESULTS ...`: exit status 0, or 2 with a one-line error."""
  parser = argparse.ArgumentParser(prog="sae-jax fit", description=__doc__.splitlines()[0])
  add_arguments(parser)
  args = parser.parse_args(argv)
  try:
    run(args)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
