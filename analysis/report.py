"""`sae-jax fit`: results.jsonl -> fits.json + plots, the last step of the data flow.

    sae-jax fit runs/quickstart/results.jsonl [--out DIR] [--filter layer=15 --filter k=32]

writes `DIR/fits.json` (see `analysis.fits.fit_scaling_laws`) and
`DIR/plots/{loss_vs_n_latents,loss_vs_compute,loss_vs_tokens}.{png,pdf}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from analysis import plots
from analysis.fits import fit_scaling_laws
from analysis.results import load_results, matches, new_file_mode, resolve_results_path
from sae_jax.config import ConfigError

FITS_FILENAME = "fits.json"
PLOT_STEMS = ("loss_vs_n_latents", "loss_vs_compute", "loss_vs_tokens")


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
  """Write `obj` as JSON to `path` via a temp file + os.replace: an old file survives any failure.

  Raises:
    TypeError / ValueError: `obj` is not JSON-serialisable (nothing is written).
  """
  path = os.fspath(path)
  parent = os.path.dirname(path) or "."
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    os.chmod(tmp, new_file_mode())
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, allow_nan=False)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


ResultsArg = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping[str, Any]]


def fit_sweep(results: ResultsArg, out_dir: str | os.PathLike | None = None,
              **filters: Any) -> dict[str, Any]:
  """Load a sweep's records, fit its scaling laws, write fits.json and the plots.

  Args:
    results: a results.jsonl path, a sweep directory, a list of either, or the records
      themselves (a list of dicts).
    out_dir: where to write; default: the directory holding the (first) results.jsonl.
    **filters: field=value record filters, as in `analysis.results.load_results`.

  Returns:
    The fits dict (as written to `out_dir/fits.json`).

  Writes:
    `out_dir/fits.json` (atomically: a failure leaves an old one intact) and
    `out_dir/plots/{loss_vs_n_latents,loss_vs_compute,loss_vs_tokens}.{png,pdf}`.

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
  fits = fit_scaling_laws(records)
  if filters:
    fits["filters"] = json.loads(json.dumps(filters, default=str))
  write_json_atomic(fits, os.path.join(out_dir, FITS_FILENAME))
  plot_dir = os.path.join(out_dir, "plots")
  plots.plot_loss_vs_n(records, fits, os.path.join(plot_dir, PLOT_STEMS[0]))
  plots.plot_loss_vs_compute(records, fits, os.path.join(plot_dir, PLOT_STEMS[1]))
  plots.plot_loss_vs_tokens(records, os.path.join(plot_dir, PLOT_STEMS[2]))
  return fits


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


def _summary(fits: Mapping[str, Any]) -> str:
  lines = [f"{fits['n_records']} records, {fits['n_runs']} runs, "
           f"sweeps: {', '.join(fits['sweeps'])}"]
  for key, entry in fits["L_N"].items():
    for name in ("power_law", "irreducible"):
      fit = entry.get(name, entry)
      if "params" in fit:
        p, se = fit["params"], fit["stderr"]
        extra = f", c = {p['c']:.3g}" if "c" in p else ""
        flag = "  [degenerate]" if fit.get("degenerate") else ""
        err = f" ± {se['alpha']:.3f}" if se.get("alpha") is not None else ""
        lines.append(f"  L(N) {key:>8} {name:<11}: alpha = {p['alpha']:.3f}{err}, "
                     f"a = {p['a']:.3g}{extra}{flag}")
      elif name == "power_law":
        lines.append(f"  L(N) {key:>8}: {fit.get('error')}")
  L_C = fits["L_C"]
  if "params" in L_C:
    lines.append(f"  L(C) frontier ({len(L_C['frontier'])} points): "
                 f"alpha = {L_C['params']['alpha']:.4f}, a = {L_C['params']['a']:.3g}")
  else:
    lines.append(f"  L(C): {L_C.get('error')}")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Run `sae-jax fit` from parsed arguments; prints a summary and where files went."""
  fits = fit_sweep(args.results, args.out, **parse_filters(args.filter))
  out = args.out or os.path.dirname(resolve_results_path(args.results[0])) or "."
  print(_summary(fits))
  print(f"wrote {os.path.join(out, FITS_FILENAME)} and {os.path.join(out, 'plots')}/"
        f"{{{','.join(PLOT_STEMS)}}}.{{png,pdf}}")
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
