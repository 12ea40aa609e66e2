"""The figures of `sae-jax eval` (the evaluation suite's sweep-level records, eval.jsonl)."""

from __future__ import annotations

import matplotlib
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plot_style import FIGSIZE, LOSS_LABEL, N_CMAP, STYLE, save_figure


def plot_delta_ce_vs_nmse(records: list[dict], path: str) -> list[str]:
  """ΔCE vs normalized MSE, one point per SAE, coloured by n_latents, one marker per k
  (`analysis.plot_style`). Returns the files written (png, pdf)."""
  recs = [r for r in records if r.get("delta_ce") is not None and r.get("normalized_mse") is not None]
  with matplotlib.rc_context(STYLE):
    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ns = [r["n_latents"] for r in recs] or [1]
    norm = LogNorm(min(ns), max(ns) if max(ns) > min(ns) else min(ns) * 2)
    markers = "osD^v<>"
    ks = sorted({str(r.get("k")) for r in recs})
    for i, k in enumerate(ks):
      rs = [r for r in recs if str(r.get("k")) == k]
      sc = ax.scatter([r["normalized_mse"] for r in rs], [r["delta_ce"] for r in rs],
                      c=[r["n_latents"] for r in rs], cmap=N_CMAP, norm=norm,
                      marker=markers[i % len(markers)], label=f"k={k}", edgecolors="none")
    if recs:
      fig.colorbar(sc, ax=ax, label="n_latents")
      ax.legend(handles=[Line2D([], [], marker=markers[i % len(markers)], color="0.35", ls="",
                                label=f"k={k}") for i, k in enumerate(ks)])
    for axis, set_scale, key in ((ax.xaxis, ax.set_xscale, "normalized_mse"),
                                 (ax.yaxis, ax.set_yscale, "delta_ce")):
      vals = [r[key] for r in recs]
      if vals and min(vals) > 0 and max(vals) / min(vals) > 10:  # log only over a decade+
        set_scale("log")
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(LOSS_LABEL)
    ax.set_ylabel("ΔCE (nats/token), SAE spliced in")
    ax.set_title("Downstream loss vs reconstruction")
  return save_figure(fig, path)
