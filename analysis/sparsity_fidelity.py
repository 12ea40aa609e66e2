"""The sparsity–fidelity frontier: normalized MSE vs L0, one curve per architecture.

Architectures have different sparsity knobs (k for the TopK family, the penalty
coefficient lambda for the others), so they are compared on the one axis they share, the
L0 measured on held-out tokens (Gao et al. 2024, Fig. 2; Rajamanoharan et al. 2024b,
Fig. 2). Each point is the final evaluation record of one run.

    python -m analysis.sparsity_fidelity runs/architectures/results.jsonl [--out DIR]

writes DIR/plots/sparsity_fidelity.{png,pdf} (DIR defaults to the results' directory).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.plot_style import (LOSS_LABEL, PALETTE, STYLE, empty_axes, new_figure, log_axis, loss_tick_label,
                            save_figure)
from analysis.results import load_results, resolve_results_path, run_key
from sae_jax.errors import ConfigError

L0_LABEL = "L0 (active latents per token, held out)"
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def _finite_positive(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and value > 0)


def frontier_points(records: Sequence[Mapping[str, Any]], *, loss_key: str = "normalized_mse"
                    ) -> dict[str, list[Mapping[str, Any]]]:
  """The final record of every run, grouped into curves and sorted by L0.

  A curve is an architecture, or "architecture, n=<n_latents>" when the records mix
  dictionary sizes, followed by " (<recipe>)" or " (defaults)" when they mix runs with
  and without a training recipe (config sae.recipe; sweeps/architectures.py against
  sweeps/architectures_defaults.py). Records that are not final, or whose L0 or loss is not a finite number
  > 0, are left out; when a run has several final records (a resumed sweep), the last wins.

  Returns:
    {curve label: [record, ...] sorted by l0}, curves in name order.
  """
  finals: dict[tuple[str, str], Mapping[str, Any]] = {}
  for r in records:
    if r.get("final") is True and _finite_positive(r.get("l0")) and _finite_positive(r.get(loss_key)):
      finals[run_key(r)] = r
  sizes = {r.get("n_latents") for r in finals.values()}
  recipes = {_recipe(r) for r in finals.values()}
  curves: dict[str, list[Mapping[str, Any]]] = {}
  for r in finals.values():
    label = str(r.get("architecture"))
    if len(sizes) > 1:
      label += f", n={r.get('n_latents')}"
    if len(recipes) > 1:
      label += f" ({_recipe(r) or 'defaults'})"
    curves.setdefault(label, []).append(r)
  return {k: sorted(v, key=lambda r: r["l0"]) for k, v in sorted(curves.items())}


def _recipe(r: Mapping[str, Any]) -> str | None:
  """The record's training recipe (config sae.recipe), None without one."""
  return ((r.get("config") or {}).get("sae") or {}).get("recipe") or None


def _knob_label(r: Mapping[str, Any]) -> str:
  if r.get("sparsity_coefficient") is not None:
    return f"λ={r['sparsity_coefficient']:.2g}"
  return f"k={r.get('k')}" if r.get("k") is not None else ""


def plot_sparsity_fidelity(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                           loss_key: str = "normalized_mse", annotate: bool = True) -> list[str]:
  """Normalized MSE vs L0 on log-log axes, one curve per architecture (the sparsity–
  fidelity frontier; lower-left is better).

  Args:
    records: run records (`analysis.results.load_results`); the final record of each run
      is one point (`frontier_points`).
    path: output stem (".png"/".pdf" suffix optional); both formats are written.
    loss_key: the fidelity field plotted.
    annotate: label each point with its knob (k or λ).

  Returns:
    The two paths written.
  """
  curves = frontier_points(records, loss_key=loss_key)
  archs = sorted({str(pts[0].get("architecture")) for pts in curves.values()})
  mixed = len({_recipe(r) for pts in curves.values() for r in pts}) > 1
  with matplotlib.rc_context(STYLE):
    if mixed:  # recipes against defaults: one panel per architecture, shared axes
      ncols = min(4, len(archs))
      nrows = -(-len(archs) // ncols)
      fig = Figure(figsize=(2.3 * ncols, 2.1 * nrows + 0.4), layout="constrained")
      FigureCanvasAgg(fig)
      axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True)).ravel()
      panel = {a: axes[i] for i, a in enumerate(archs)}
      for ax in axes[len(archs):]:
        ax.set_axis_off()
    else:
      fig, ax = new_figure()
      panel = {a: ax for a in archs}
    # one colour and marker per architecture; runs without a recipe dashed beside those with
    for label, pts in curves.items():
      arch = str(pts[0].get("architecture"))
      i = archs.index(arch)
      l0 = np.array([r["l0"] for r in pts], dtype=float)
      y = np.array([r[loss_key] for r in pts], dtype=float)
      dashed = mixed and _recipe(pts[0]) is None
      panel[arch].plot(l0, y, marker=MARKERS[i % len(MARKERS)],
                       color="0.45" if dashed else PALETTE[i % len(PALETTE)], mec="white",
                       mew=0.5, ms=5, lw=1.3, zorder=3, ls="--" if dashed else "-",
                       label=label.replace(arch + " ", "") if mixed else label)
      if annotate:
        for r, a, b in zip(pts, l0, y):
          panel[arch].annotate(_knob_label(r), (a, b), xytext=(3, 3), textcoords="offset points",
                               fontsize=5.5, color=PALETTE[i % len(PALETTE)], alpha=0.9)
    for arch, ax in (panel.items() if curves else []):
      ax.set_xscale("log")
      ax.set_yscale("log")
      log_axis(ax.xaxis, loss_tick_label)
      log_axis(ax.yaxis, loss_tick_label)
      if mixed:
        ax.set_title(arch, loc="left", fontsize=8)
        ax.legend(loc="upper right", fontsize=6)
      else:
        ax.legend(loc="best")
    if mixed:
      fig.supxlabel(L0_LABEL)
      fig.supylabel(LOSS_LABEL)
      fig.suptitle("sparsity–fidelity frontier: paper recipes (solid) vs defaults (dashed)")
    else:
      if not curves:
        empty_axes(ax, "no final records with L0 and loss")
      ax.set_xlabel(L0_LABEL)
      ax.set_ylabel(LOSS_LABEL)
      ax.set_title("sparsity–fidelity frontier", loc="left")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.sparsity_fidelity",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("results", nargs="+", help="results.jsonl files or sweep directories")
  parser.add_argument("--out", help="output directory (default: the first results' directory)")
  args = parser.parse_args(argv)
  try:
    records = load_results(args.results)
    out = args.out or os.path.dirname(resolve_results_path(args.results[0]))
    written = plot_sparsity_fidelity(records, os.path.join(out, "plots", "sparsity_fidelity"))
  except ConfigError as e:
    print(f"sparsity_fidelity: error: {e}", file=sys.stderr)
    return 2
  for label, pts in frontier_points(records).items():
    print(f"{label:24s} " + "  ".join(f"L0 {r['l0']:.1f}: {r['normalized_mse']:.4f}" for r in pts))
  print("\n".join(written))
  return 0


if __name__ == "__main__":
  sys.exit(main())
