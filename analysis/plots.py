"""The sweep's figures, in one style: loss vs n_latents, vs compute, vs tokens.

Each function draws from the run records (and the fits of `analysis.fits`) and writes
`<stem>.png` and `<stem>.pdf`. Figures are built with `matplotlib.figure.Figure` on the
Agg canvas, never through pyplot, so importing this module changes no global backend
(a notebook keeps its own) and nothing is left open.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib import ticker

from analysis.fits import LOSS_KEY, fit_scaling_laws, group_key, is_usable
from analysis.results import new_file_mode

# One style for every figure: single-column size, no top/right spines, faint grid,
# TrueType fonts embedded in the PDF (editable text in a paper).
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.labelsize": 9,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.color": "0.85",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 4.5,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}
FIGSIZE = (4.6, 3.3)  # inches
# Okabe & Ito (2008) colour-blind-safe palette, for discrete groups (one colour per k).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINESTYLES = ("-", "--", ":", "-.")
N_CMAP = "viridis"  # continuous colour for n_latents
LOSS_LABEL = "normalized MSE (FVU)"


def _figure() -> tuple[Figure, Any]:
  fig = Figure(figsize=FIGSIZE)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def _stem(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  root, ext = os.path.splitext(path)
  return root if ext.lower() in (".png", ".pdf") else path


def save_figure(fig: Figure, path: str | os.PathLike) -> list[str]:
  """Write `fig` as `<stem>.png` and `<stem>.pdf`, each atomically (temp file + os.replace).

  `path` may end in .png, .pdf or nothing; the parent directory is created.
  Returns the two paths written.
  """
  stem = _stem(path)
  parent = os.path.dirname(stem) or "."
  os.makedirs(parent, exist_ok=True)
  written = []
  for ext in ("png", "pdf"):
    target = f"{stem}.{ext}"
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(stem)}.", suffix=f".{ext}")
    os.close(fd)
    os.chmod(tmp, new_file_mode())
    try:
      with matplotlib.rc_context(STYLE):
        fig.savefig(tmp, format=ext)
      os.replace(tmp, target)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    written.append(target)
  return written


def _runs(records: Sequence[Mapping[str, Any]], x_key: str, loss_key: str) -> list[list[Mapping]]:
  """Records grouped per run ((sweep, run_id)), each sorted by `x_key`; unusable ones dropped."""
  runs: dict[tuple, list[Mapping]] = {}
  for r in records:
    if is_usable(r, x_key, loss_key):
      runs.setdefault((r.get("sweep"), r.get("run_id")), []).append(r)
  return [sorted(v, key=lambda r: r[x_key]) for _, v in sorted(runs.items(), key=lambda kv: (
      kv[1][0].get("k") or 0, kv[1][0].get("n_latents") or 0, str(kv[0])))]


def _n_norm(runs: list[list[Mapping]]) -> LogNorm:
  ns = [run[0]["n_latents"] for run in runs if is_usable(run[0], "n_latents")] or [1.0]
  lo, hi = min(ns), max(ns)
  return LogNorm(vmin=lo / 1.5, vmax=hi * 1.5) if lo == hi else LogNorm(vmin=lo, vmax=hi)


def _n_colorbar(fig: Figure, ax: Any, norm: LogNorm, runs: list[list[Mapping]]) -> None:
  cb = fig.colorbar(ScalarMappable(norm=norm, cmap=N_CMAP), ax=ax, pad=0.02, fraction=0.05)
  cb.set_label("n_latents")
  ns = sorted({int(run[0]["n_latents"]) for run in runs if is_usable(run[0], "n_latents")})
  if 0 < len(ns) <= 8:
    cb.set_ticks(ns, labels=[str(n) for n in ns])
    cb.ax.minorticks_off()
  cb.ax.tick_params(labelsize=7)
  cb.outline.set_visible(False)


def _k_styles(runs: list[list[Mapping]]) -> dict[Any, str]:
  ks = sorted({run[0].get("k") for run in runs}, key=lambda k: (k is None, k or 0))
  return {k: LINESTYLES[i % len(LINESTYLES)] for i, k in enumerate(ks)}


def _sci(value: float, _pos: Any = None) -> str:
  """Tick label m x 10^e in mathtext ("10^5" when m = 1)."""
  if value <= 0:
    return ""
  e = int(np.floor(np.log10(value) + 1e-9))
  m = value / 10.0**e
  m_str = f"{m:.2g}"
  return f"$10^{{{e}}}$" if m_str == "1" else f"${m_str}\\times10^{{{e}}}$"


def _log_axis(axis: Any, formatter: Any) -> None:
  """Log ticks that stay labelled over a narrow range (1-2-5, or denser, under 2 decades).

  Call after everything is drawn: the density follows the axis' autoscaled view.
  """
  axis.axes.autoscale_view()
  lo, hi = sorted(axis.get_view_interval())
  decades = np.log10(hi / lo) if lo > 0 else 10.0
  if decades < 0.6:
    subs = tuple(np.arange(1.0, 10.0, 0.5))
  elif decades < 1.2:
    subs = tuple(np.arange(1.0, 10.0))
  elif decades < 2.0:
    subs = (1.0, 2.0, 5.0)
  else:
    subs = (1.0,)
  axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
  axis.set_major_formatter(ticker.FuncFormatter(formatter))
  axis.set_minor_formatter(ticker.NullFormatter())


def _loss_label(value: float, _pos: Any = None) -> str:
  return f"{value:g}"


def _empty(ax: Any, message: str) -> None:
  ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def plot_loss_vs_n(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
                   path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """L(N) at convergence: final normalized MSE vs n_latents, log-log, one colour per k.

  Points are the `final` records; solid lines the pure power law, dashed lines the law
  with an irreducible term (when fitted and not degenerate), alpha in the legend
  (Gao et al. 2024, Fig. 1 right / Sec. 3.1).

  Args:
    records: run records (`analysis.results.load_results`).
    fits: the dict of `analysis.fits.fit_scaling_laws`, or None to fit here.
    path: output stem (".png"/".pdf" suffix optional); both formats are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = fit_scaling_laws(records, loss_key=loss_key) if fits is None else fits
  multi_arch = len({r.get("architecture") for r in records}) > 1
  groups: dict[str, list[Mapping]] = {}
  for r in records:
    if r.get("final") is True and is_usable(r, "n_latents", loss_key):
      groups.setdefault(group_key(r, multi_arch), []).append(r)
  order = [k for k in fits.get("L_N", {}) if k in groups] + sorted(
      k for k in groups if k not in fits.get("L_N", {}))
  with matplotlib.rc_context(STYLE):
    fig, ax = _figure()
    for i, key in enumerate(order):
      color = PALETTE[i % len(PALETTE)]
      pts = sorted(groups[key], key=lambda r: r["n_latents"])
      n = np.array([r["n_latents"] for r in pts], dtype=float)
      y = np.array([r[loss_key] for r in pts], dtype=float)
      entry = fits.get("L_N", {}).get(key, {})
      pure, irr = entry.get("power_law", {}), entry.get("irreducible", {})
      label = key
      n_grid = np.geomspace(n.min() / 1.25, n.max() * 1.25, 200)
      if "params" in pure:
        p, se = pure["params"], pure["stderr"]
        err = f" ± {se['alpha']:.2f}" if se.get("alpha") is not None else ""
        label = f"{key}: α = {p['alpha']:.2f}{err}"
        ax.plot(n_grid, p["a"] * n_grid ** -p["alpha"], color=color, lw=1.3, zorder=2)
      ax.plot(n, y, "o", color=color, mec="white", mew=0.6, ms=5.5, label=label, zorder=3)
      if "params" in irr and not irr.get("degenerate"):
        p = irr["params"]
        ax.plot(n_grid, p["a"] * n_grid ** -p["alpha"] + p["c"], color=color, lw=1.0, ls="--",
                label=f"{key} + c: α = {p['alpha']:.2f}, c = {p['c']:.2g}", zorder=2)
    if order:
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      _log_axis(ax.yaxis, _loss_label)
      ax.legend(loc="best")
    else:
      _empty(ax, "no final records (final=true)")
    ax.set_xlabel("n_latents")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("L(N): loss at convergence vs n_latents", loc="left")
    return save_figure(fig, path)


def plot_loss_vs_compute(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
                         path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """L(C): every evaluation point vs training compute, with the frontier and its fit.

  Each run is a faint line through its evaluation points, coloured by n_latents (line
  style by k when several); the compute-efficient frontier points are highlighted and
  the fitted L(C) = a * C^(-alpha) drawn through them (Gao et al. 2024, Fig. 1 left).

  Args:
    records: run records.
    fits: the dict of `analysis.fits.fit_scaling_laws`, or None to fit here.
    path: output stem; .png and .pdf are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = fit_scaling_laws(records, loss_key=loss_key) if fits is None else fits
  runs = _runs(records, "flops", loss_key)
  with matplotlib.rc_context(STYLE):
    fig, ax = _figure()
    norm, cmap = _n_norm(runs), matplotlib.colormaps[N_CMAP]
    styles = _k_styles(runs)
    for run in runs:
      color = cmap(norm(run[0]["n_latents"])) if is_usable(run[0], "n_latents") else "0.5"
      ax.plot([r["flops"] for r in run], [r[loss_key] for r in run], ls=styles[run[0].get("k")],
              marker="o", ms=2.5, lw=1.0, color=color, alpha=0.45, zorder=1)
    L_C = fits.get("L_C", {})
    frontier = [p for p in L_C.get("frontier", []) if is_usable(p, "flops", loss_key)]
    handles = []
    if frontier:
      fc = np.array([p["flops"] for p in frontier], dtype=float)
      fl = np.array([p[loss_key] for p in frontier], dtype=float)
      handles.append(ax.plot(fc, fl, "D", ms=4.5, mfc="none", mec="black", mew=1.0, zorder=4,
                             label="compute-efficient frontier")[0])
      if "params" in L_C:
        p = L_C["params"]
        c_grid = np.geomspace(fc.min() / 1.5, fc.max() * 1.5, 200)
        handles.append(ax.plot(c_grid, p["a"] * c_grid ** -p["alpha"], color="black", lw=1.3,
                               ls="--", zorder=3,
                               label=f"fit: $L(C) = a\\,C^{{-{p['alpha']:.3f}}}$")[0])
    if len(styles) > 1:
      handles += [Line2D([], [], color="0.4", ls=ls, label=f"k={k}") for k, ls in styles.items()]
    if runs:
      ax.set_xscale("log")
      ax.set_yscale("log")
      _log_axis(ax.xaxis, _sci)
      _log_axis(ax.yaxis, _loss_label)
      _n_colorbar(fig, ax, norm, runs)
      ax.legend(handles=handles, loc="best")
    else:
      _empty(ax, "no evaluation records with flops")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("L(C): loss vs training compute", loc="left")
    return save_figure(fig, path)


def plot_loss_vs_tokens(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                        loss_key: str = LOSS_KEY) -> list[str]:
  """Training curves: normalized MSE vs training tokens, one line per run, log-log.

  Coloured by n_latents, line style by k when several k are present.

  Args:
    records: run records.
    path: output stem; .png and .pdf are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  runs = _runs(records, "tokens", loss_key)
  with matplotlib.rc_context(STYLE):
    fig, ax = _figure()
    norm, cmap = _n_norm(runs), matplotlib.colormaps[N_CMAP]
    styles = _k_styles(runs)
    for run in runs:
      color = cmap(norm(run[0]["n_latents"])) if is_usable(run[0], "n_latents") else "0.5"
      ax.plot([r["tokens"] for r in run], [r[loss_key] for r in run], ls=styles[run[0].get("k")],
              marker="o", ms=2.5, lw=1.2, color=color, alpha=0.85)
    if runs:
      ax.set_xscale("log")
      ax.set_yscale("log")
      _log_axis(ax.xaxis, _sci)
      _log_axis(ax.yaxis, _loss_label)
      _n_colorbar(fig, ax, norm, runs)
      if len(styles) > 1:
        ax.legend(handles=[Line2D([], [], color="0.4", ls=ls, label=f"k={k}")
                           for k, ls in styles.items()], loc="upper right")
    else:
      _empty(ax, "no evaluation records with tokens")
    ax.set_xlabel("training tokens")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("training curves", loc="left")
    return save_figure(fig, path)
