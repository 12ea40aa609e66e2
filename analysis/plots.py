"""The sweep's figures, in one style: Gao et al. 2024 Fig. 1 (loss vs compute with the
frontier; L(N) at convergence), loss vs k with the Eq. 3 surface, training curves,
compute-optimal allocation, the optimal learning rate, and extrapolation with bands.

Each function draws from the run records (and the fits of `analysis.fitting`) and writes
`<stem>.png` and `<stem>.pdf`. Figures are built with `matplotlib.figure.Figure` on the
Agg canvas, never through pyplot, so importing this module changes no global backend
(a notebook keeps its own) and nothing is left open.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.fitting import LOSS_KEY, LawFit
from analysis.results import is_usable
from analysis.sweep_fits import mixes_data_settings, fit_scaling_laws, group_key
from analysis.laws import LAWS
from analysis.plot_style import (LINESTYLES, LOSS_LABEL, N_CMAP, PALETTE,
                                 STYLE, empty_axes, log_axis, loss_tick_label, new_figure,
                                 save_figure, sci_tick_label)
from sae_jax.errors import ConfigError



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










def _fit_or_none(entry: Any) -> LawFit | None:
  """The LawFit of a fits.json entry, or None for an {"error"} / {"skipped"} / old-style one."""
  if isinstance(entry, LawFit):
    return entry
  if not isinstance(entry, Mapping) or entry.get("law") not in LAWS or "params" not in entry:
    return None
  return LawFit.from_dict(entry)


def _band(ax: Any, fit: LawFit | None, x: np.ndarray, color: Any, alpha: float = 0.15) -> None:
  """Shade the bootstrap 95% band of `fit` over x (nothing without usable bootstrap samples)."""
  if fit is not None and fit.bootstrap:
    try:
      lo, hi = fit.predict_band(x)
    except ConfigError:  # every refit degenerate: no band to draw, the fit itself stands
      return
    ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0, zorder=1)


def format_param(fit: Mapping[str, Any], name: str, digits: int = 2) -> str:
  """ "0.53 [0.48, 0.58]" (the reported 95% interval, `ci95`) or "0.53 (no interval)".

  Never "±": a standard error is printed only as the interval it validates
  (benchmarks/fit_coverage.py); where the data cannot support one, it says so."""
  v = fit["params"][name]
  ci = (fit.get("ci95") or {}).get(name)
  if ci:
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
  return f"{v:.{digits}f} (no interval)"


def _final_groups(records, loss_key):
  multi_arch = len({r.get("architecture") for r in records}) > 1
  multi_data = mixes_data_settings(records)
  groups: dict[str, list[Mapping]] = {}
  for r in records:
    if r.get("final") is True and is_usable(r, "n_latents", loss_key):
      groups.setdefault(group_key(r, multi_arch, multi_data), []).append(r)
  return groups


def _draw_loss_vs_n(ax: Any, records, fits, loss_key: str) -> None:
  groups = _final_groups(records, loss_key)
  order = [k for k in fits.get("L_N", {}) if k in groups] + sorted(
      k for k in groups if k not in fits.get("L_N", {}))
  unconverged = {t["run_id"] for t in fits.get("convergence", {}).get("runs", [])
                 if not t.get("converged")}
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
      label = f"{key}: α = {format_param(pure, 'alpha')}"
      ax.plot(n_grid, pure["params"]["a"] * n_grid ** -pure["params"]["alpha"], color=color,
              lw=1.3, zorder=2)
      _band(ax, _fit_or_none(pure), n_grid, color)
    done = np.array([r.get("run_id") not in unconverged for r in pts])
    if done.any():
      ax.plot(n[done], y[done], "o", color=color, mec="white", mew=0.6, ms=5.5, zorder=3,
              label=label)
    if (~done).any():
      ax.plot(n[~done], y[~done], "o", mfc="white", mec=color, mew=1.0, ms=5.5, zorder=3,
              label=None if done.any() else label)
    if "params" in irr and not irr.get("degenerate"):
      p = irr["params"]
      ax.plot(n_grid, p["a"] * n_grid ** -p["alpha"] + p["c"], color=color, lw=1.0, ls="--",
              label=f"{key} + c: α = {p['alpha']:.2f}, c = {p['c']:.2g}", zorder=2)
  if order:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    log_axis(ax.yaxis, loss_tick_label)
    handles, labels = ax.get_legend_handles_labels()
    if unconverged & {r.get("run_id") for g in groups.values() for r in g}:
      handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="0.3"))
      labels.append("not converged")
    ax.legend(handles, labels, loc="best")
  else:
    empty_axes(ax, "no final records (final=true)")
  ax.set_xlabel("n_latents")
  ax.set_ylabel(LOSS_LABEL)


def plot_loss_vs_n(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
                   path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """L(N) at convergence: final normalized MSE vs n_latents, log-log, one colour per k.

  Points are the `final` records (hollow: the run has not converged, by the rule of
  `analysis.convergence`); solid lines the pure power law with its bootstrap 95% band,
  dashed lines the law with an irreducible term (when fitted and not degenerate), alpha
  and its interval in the legend (Gao et al. 2024, Fig. 1 right / Sec. 3.1).

  Args:
    records: run records (`analysis.results.load_results`).
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`, or None to fit here.
    path: output stem (".png"/".pdf" suffix optional); both formats are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = _fits(records, fits, loss_key)
  with matplotlib.rc_context(STYLE):
    fig, ax = new_figure()
    _draw_loss_vs_n(ax, records, fits, loss_key)
    ax.set_title("L(N): loss at convergence vs n_latents", loc="left")
    return save_figure(fig, path)


def _fits(records, fits, loss_key):
  if fits is not None:
    return fits
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return fit_scaling_laws(records, loss_key=loss_key, n_bootstrap=100)


def _draw_loss_vs_compute(fig: Figure, ax: Any, records, fits, loss_key: str) -> None:
  runs = _runs(records, "flops", loss_key)
  norm, cmap = _n_norm(runs), matplotlib.colormaps[N_CMAP]
  styles = _k_styles(runs)
  for run in runs:
    color = cmap(norm(run[0]["n_latents"])) if is_usable(run[0], "n_latents") else "0.5"
    ax.plot([r["flops"] for r in run], [r[loss_key] for r in run], ls=styles[run[0].get("k")],
            marker="o", ms=2.5, lw=1.0, color=color, alpha=0.45, zorder=1)
  handles = []
  groups = [(key, e) for key, e in fits.get("L_C", {}).items() if isinstance(e, Mapping)]
  for i, (key, L_C) in enumerate(groups):
    frontier = [p for p in L_C.get("frontier", []) if is_usable(p, "flops", loss_key)]
    if not frontier:
      continue
    color = "black" if len(groups) == 1 else PALETTE[i % len(PALETTE)]
    tag = "" if len(groups) == 1 else f"{key}: "
    fc = np.array([p["flops"] for p in frontier], dtype=float)
    fl = np.array([p[loss_key] for p in frontier], dtype=float)
    handles.append(ax.plot(fc, fl, "D", ms=4.5, mfc="none", mec=color, mew=1.0, zorder=4,
                           label=f"{tag}compute-efficient frontier")[0])
    if "params" in L_C:
      p = L_C["params"]
      c_grid = np.geomspace(fc.min() / 1.5, fc.max() * 1.5, 200)
      _band(ax, _fit_or_none(L_C), c_grid, color, alpha=0.1)
      handles.append(ax.plot(c_grid, p["a"] * c_grid ** -p["alpha"], color=color, lw=1.3,
                             ls="--", zorder=3,
                             label=f"{tag}$L(C) \\propto C^{{-\\alpha}}$, α = "
                                   f"{format_param(L_C, 'alpha', 3)}")[0])
  if len(styles) > 1:
    handles += [Line2D([], [], color="0.4", ls=ls, label=f"k={k}") for k, ls in styles.items()]
  if runs:
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis, sci_tick_label, dense=False)
    log_axis(ax.yaxis, loss_tick_label)
    _n_colorbar(fig, ax, norm, runs)
    ax.legend(handles=handles, loc="best")
  else:
    empty_axes(ax, "no evaluation records with flops")
  ax.set_xlabel("training compute (FLOPs)")
  ax.set_ylabel(LOSS_LABEL)


def plot_loss_vs_compute(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
                         path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """L(C): every evaluation point vs training compute, with the frontier and its fit.

  Each run is a faint line through its evaluation points, coloured by n_latents (line
  style by k when several); the compute-efficient frontier points are highlighted and
  the fitted L(C) = a * C^(-alpha) drawn through them with its bootstrap 95% band
  (Gao et al. 2024, Fig. 1 left).

  Args:
    records: run records.
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`, or None to fit here.
    path: output stem; .png and .pdf are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = _fits(records, fits, loss_key)
  with matplotlib.rc_context(STYLE):
    fig, ax = new_figure()
    _draw_loss_vs_compute(fig, ax, records, fits, loss_key)
    ax.set_title("L(C): loss vs training compute", loc="left")
    return save_figure(fig, path)


def plot_fig1(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
              path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """Gao et al. 2024, Fig. 1: (left) normalized MSE vs compute with the frontier and L(C);
  (right) L(N) at convergence per k. Two panels, double-column width.

  Args:
    records: run records.
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`, or None to fit here.
    path: output stem; .png and .pdf are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = _fits(records, fits, loss_key)
  with matplotlib.rc_context(STYLE):
    fig, (left, right) = new_figure(2)
    _draw_loss_vs_compute(fig, left, records, fits, loss_key)
    _draw_loss_vs_n(right, records, fits, loss_key)
    left.set_title("(a) loss vs compute", loc="left")
    right.set_title("(b) loss at convergence vs n_latents", loc="left")
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
    fig, ax = new_figure()
    norm, cmap = _n_norm(runs), matplotlib.colormaps[N_CMAP]
    styles = _k_styles(runs)
    for run in runs:
      color = cmap(norm(run[0]["n_latents"])) if is_usable(run[0], "n_latents") else "0.5"
      ax.plot([r["tokens"] for r in run], [r[loss_key] for r in run], ls=styles[run[0].get("k")],
              marker="o", ms=2.5, lw=1.2, color=color, alpha=0.85)
    if runs:
      ax.set_xscale("log")
      ax.set_yscale("log")
      log_axis(ax.xaxis, sci_tick_label, dense=False)
      log_axis(ax.yaxis, loss_tick_label)
      _n_colorbar(fig, ax, norm, runs)
      if len(styles) > 1:
        ax.legend(handles=[Line2D([], [], color="0.4", ls=ls, label=f"k={k}")
                           for k, ls in styles.items()], loc="upper right")
    else:
      empty_axes(ax, "no evaluation records with tokens")
    ax.set_xlabel("training tokens")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("training curves", loc="left")
    return save_figure(fig, path)


def plot_loss_vs_k(records: Sequence[Mapping[str, Any]], fits: Mapping[str, Any] | None,
                   path: str | os.PathLike, *, loss_key: str = LOSS_KEY) -> list[str]:
  """Final normalized MSE vs k, one colour per n_latents, with the fitted Eq. 3 surface.

  Points are the final records; lines are L(n, k) of Gao et al. 2024, Eq. 3 at each
  n_latents (from fits["L_NK"]), cf. their Fig. 3.

  Args:
    records: run records (one architecture).
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`, or None to fit here.
    path: output stem; .png and .pdf are written.
    loss_key: the loss field plotted.

  Returns:
    The two paths written.
  """
  fits = _fits(records, fits, loss_key)
  finals = [r for r in records if r.get("final") is True and is_usable(r, "n_latents", "k",
                                                                       loss_key)]
  eq3 = _fit_or_none(fits.get("L_NK"))
  with matplotlib.rc_context(STYLE):
    fig, ax = new_figure()
    ns = sorted({float(r["n_latents"]) for r in finals})
    if finals:
      norm = LogNorm(vmin=min(ns) / 1.5, vmax=max(ns) * 1.5) if len(ns) == 1 else LogNorm(
          vmin=min(ns), vmax=max(ns))
      cmap = matplotlib.colormaps[N_CMAP]
      ks = np.array([r["k"] for r in finals], dtype=float)
      k_grid = np.geomspace(ks.min() / 1.2, ks.max() * 1.2, 100)
      for n in ns:
        pts = sorted((r for r in finals if float(r["n_latents"]) == n), key=lambda r: r["k"])
        color = cmap(norm(n))
        ax.plot([r["k"] for r in pts], [r[loss_key] for r in pts], "o", color=color,
                mec="white", mew=0.5, ms=5, zorder=3)
        if eq3 is not None:
          ax.plot(k_grid, eq3.predict({"n": np.full_like(k_grid, n), "k": k_grid}), color=color,
                  lw=1.1, zorder=2)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      log_axis(ax.yaxis, loss_tick_label)
      cb = fig.colorbar(ScalarMappable(norm=norm, cmap=N_CMAP), ax=ax, pad=0.02, fraction=0.05)
      cb.set_label("n_latents")
      if len(ns) <= 8:
        cb.set_ticks(ns, labels=[f"{int(n)}" for n in ns])
        cb.ax.minorticks_off()
      cb.ax.tick_params(labelsize=7)
      cb.outline.set_visible(False)
      if eq3 is not None:
        ax.legend(handles=[Line2D([], [], color="0.3", label="Eq. 3 fit, "
                                  f"γ = {eq3.params['gamma']:.3f}")], loc="upper right")
      else:
        err = (fits.get("L_NK") or {}).get("error", "")
        ax.text(0.02, 0.02, f"no Eq. 3 fit: {err[:70]}", transform=ax.transAxes, fontsize=6,
                color="0.4")
    else:
      empty_axes(ax, "no final records with k")
    ax.set_xlabel("k (active latents)")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("L(n, k): loss vs k per n_latents (Gao et al. Eq. 3)", loc="left")
    return save_figure(fig, path)


def _first_entry(section: Mapping[str, Any] | None, key: str | None) -> tuple[str, Any]:
  section = section or {}
  if key is not None:
    return key, section.get(key, {"error": f"no group {key!r}; groups: {', '.join(section)}"})
  for k, v in section.items():  # the first group with a result, else the first one
    if isinstance(v, Mapping) and ("levels" in v or "per_n" in v):
      return k, v
  return next(iter(section.items()), ("", {"error": "not fitted"}))


def plot_compute_optimal(fits: Mapping[str, Any], path: str | os.PathLike, *,
                         key: str | None = None) -> list[str]:
  """Compute-optimal allocation: n_latents*(C) and tokens*(C) with their power laws.

  Points are the optimum at each compute level (filled: interior, a parabola vertex;
  hollow: at the edge of the sweep, not fitted); lines the fitted A C^a and B C^b with
  bootstrap 95% bands (Templeton et al. 2024: a > b; Hoffmann et al. 2022, Fig. 3).

  Args:
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`.
    path: output stem; .png and .pdf are written.
    key: the group of fits["compute_optimal"] ("k=32"); default: the first with levels.

  Returns:
    The two paths written.
  """
  key, entry = _first_entry(fits.get("compute_optimal"), key)
  levels = entry.get("levels", []) if isinstance(entry, Mapping) else []
  with matplotlib.rc_context(STYLE):
    fig, axes = new_figure(2)
    for ax, field, fit_key, sym, ylabel, color in (
        (axes[0], "n_latents", "n_latents_opt", "a", "optimal n_latents", PALETTE[0]),
        (axes[1], "tokens", "tokens_opt", "b", "optimal training tokens", PALETTE[1])):
      if not levels:
        empty_axes(ax, "no compute levels" + (f":\n{entry.get('error', '')[:60]}"
                                          if isinstance(entry, Mapping) else ""))
        continue
      c = np.array([lv["flops"] for lv in levels])
      v = np.array([lv[field] for lv in levels])
      edge = np.array([lv["edge"] for lv in levels])
      ax.plot(c[~edge], v[~edge], "o", color=color, mec="white", mew=0.5, ms=5, zorder=3,
              label="optimum (parabola vertex)")
      ax.plot(c[edge], v[edge], "o", mfc="white", mec=color, ms=5, zorder=3,
              label="at the edge of the sweep")
      fit = _fit_or_none(entry.get(fit_key))
      if fit is not None:
        grid = np.geomspace(c.min() / 1.5, c.max() * 1.5, 200)
        _band(ax, fit, grid, color)
        ax.plot(grid, fit.predict(grid), color=color, lw=1.3, zorder=2,
                label=f"$\\propto C^{{{sym}}}$, {sym} = {format_param(entry[fit_key], 'b')}")
      ax.set_xscale("log")
      ax.set_yscale("log")
      log_axis(ax.xaxis, sci_tick_label, dense=False)
      ax.set_xlabel("training compute (FLOPs)")
      ax.set_ylabel(ylabel)
      ax.legend(loc="upper left")
    axes[0].set_title(f"(a) n_latents*(C) {key}", loc="left")
    axes[1].set_title("(b) token budget*(C)", loc="left")
    return save_figure(fig, path)


def plot_lr_sweep(fits: Mapping[str, Any], path: str | os.PathLike, *,
                  key: str | None = None) -> list[str]:
  """The optimal learning rate: (left) final loss vs lr per n_latents with the parabola
  vertices; (right) lr*(n) with the fitted a n^(-alpha) and its bootstrap band, and the
  1/sqrt(n) of Gao et al. 2024, Sec. 2.3 for reference.

  Args:
    fits: the dict of `analysis.sweep_fits.fit_scaling_laws`.
    path: output stem; .png and .pdf are written.
    key: the group of fits["lr_opt"] ("k=32"); default: the first with an lr sweep.

  Returns:
    The two paths written.
  """
  key, entry = _first_entry(fits.get("lr_opt"), key)
  per_n = entry.get("per_n", []) if isinstance(entry, Mapping) else []
  with matplotlib.rc_context(STYLE):
    fig, (left, right) = new_figure(2)
    if not per_n:
      why = entry.get("skipped") or entry.get("error") or "" if isinstance(entry, Mapping) else ""
      empty_axes(left, "no lr sweep in these records")
      empty_axes(right, why[:50] + ("\n" + why[50:100] if len(why) > 50 else ""))
    else:
      ns = [p["n_latents"] for p in per_n]
      norm = LogNorm(vmin=min(ns) / 1.5, vmax=max(ns) * 1.5) if len(set(ns)) == 1 else LogNorm(
          vmin=min(ns), vmax=max(ns))
      cmap = matplotlib.colormaps[N_CMAP]
      for p in per_n:
        color = cmap(norm(p["n_latents"]))
        left.plot(p["lrs"], p["losses"], "o-", color=color, ms=3.5, lw=1.0,
                  label=f"n={int(p['n_latents'])}")
        left.axvline(p["lr_opt"], color=color, lw=0.8, ls=":")
      left.set_xscale("log")
      left.set_yscale("log")
      log_axis(left.yaxis, loss_tick_label)
      left.set_xlabel("learning rate")
      left.set_ylabel(LOSS_LABEL)
      left.legend(loc="best", ncol=2 if len(per_n) > 4 else 1)
      n = np.array(ns, dtype=float)
      lr = np.array([p["lr_opt"] for p in per_n])
      edge = np.array([p["edge"] for p in per_n])
      right.plot(n[~edge], lr[~edge], "o", color=PALETTE[0], ms=5, zorder=3, label="lr* (vertex)")
      right.plot(n[edge], lr[edge], "o", mfc="white", mec=PALETTE[0], ms=5, zorder=3,
                 label="best lr at the edge")
      grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
      fit = _fit_or_none(entry.get("lr_opt"))
      if fit is not None:
        _band(right, fit, grid, PALETTE[0])
        right.plot(grid, fit.predict(grid), color=PALETTE[0], lw=1.3,
                   label=f"$\\propto n^{{-\\alpha}}$, α = {format_param(entry['lr_opt'], 'alpha')}")
      ref = lr[~edge][0] if (~edge).any() else lr[0]
      n0 = n[~edge][0] if (~edge).any() else n[0]
      right.plot(grid, ref * (grid / n0) ** -0.5, color="0.5", lw=1.0, ls="--",
                 label="$\\propto n^{-1/2}$ (Gao et al.)")
      right.set_xscale("log", base=2)
      right.set_yscale("log")
      right.set_xlabel("n_latents")
      right.set_ylabel("optimal learning rate")
      right.legend(loc="best")
    left.set_title(f"(a) final loss vs lr {key}", loc="left")
    right.set_title("(b) lr*(n_latents)", loc="left")
    return save_figure(fig, path)


def plot_extrapolation(fit: LawFit | Mapping[str, Any], path: str | os.PathLike, *,
                       x_max: float | None = None, factor: float = 16.0,
                       xlabel: str | None = None, ylabel: str = LOSS_LABEL,
                       title: str | None = None) -> list[str]:
  """A fitted one-input law extrapolated beyond its data with the bootstrap 95% band.

  The points fitted, the law over them (solid) and beyond them (dashed) up to `x_max`
  (default `factor` x the largest x), and the pointwise 95% band of the bootstrap refits
  (`LawFit.predict_band`), which widens away from the data.

  Args:
    fit: a `LawFit`, or its dict (an entry of fits.json).
    path: output stem; .png and .pdf are written.
    x_max: extrapolate up to this x.
    factor: else up to factor * max(x).
    xlabel: default: the fitted variable ("n_latents", "flops").
    ylabel: the y label.
    title: default: the law.

  Returns:
    The two paths written.

  Raises:
    ConfigError: `fit` is not a fitted one-input law.
  """
  law_fit = _fit_or_none(fit)
  if law_fit is None or len(law_fit.x) != 1:
    raise ConfigError(f"plot_extrapolation needs a fitted one-input law, got "
                      f"{str(fit.get('error', fit) if isinstance(fit, Mapping) else fit)[:120]}")
  (name, xs), = law_fit.x.items()
  x = np.asarray(xs)
  y = np.asarray(law_fit.y)
  x_max = float(x_max or factor * x.max())
  inside = np.geomspace(x.min(), x.max(), 100)
  beyond = np.geomspace(x.max(), x_max, 100)
  with matplotlib.rc_context(STYLE):
    fig, ax = new_figure()
    color = PALETTE[0]
    _band(ax, law_fit, np.concatenate([inside, beyond[1:]]), color, alpha=0.18)
    ax.plot(x, y, "o", color=color, mec="white", mew=0.6, ms=5, zorder=3, label="data")
    ax.plot(inside, law_fit.predict(inside), color=color, lw=1.4, zorder=2,
            label=law_fit.formula)
    ax.plot(beyond, law_fit.predict(beyond), color=color, lw=1.4, ls="--", zorder=2,
            label="extrapolation" + (" (95% bootstrap band)" if law_fit.bootstrap else ""))
    ax.axvline(x.max(), color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis, sci_tick_label, dense=False)
    if ylabel == LOSS_LABEL:
      log_axis(ax.yaxis, loss_tick_label)
    ax.set_xlabel(xlabel or law_fit.variables.get(name, name))
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    ax.set_title(title or f"extrapolation of {law_fit.law}", loc="left")
    return save_figure(fig, path)
