"""One style for every figure of the analysis (and of `sae-jax eval`'s plot): sizes,
colours, tick labels, and the atomic PNG + PDF writer. Figures are built with
`matplotlib.figure.Figure` on the Agg canvas, never through pyplot, so importing this
module changes no global backend (a notebook keeps its own) and nothing is left open.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sae_jax import files

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
FIGSIZE = (4.6, 3.3)  # inches, one column
FIGSIZE_WIDE = (9.2, 3.4)  # two panels, double column
# Okabe & Ito (2008) colour-blind-safe palette, for discrete groups (one colour per k).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINESTYLES = ("-", "--", ":", "-.")
N_CMAP = "viridis"  # continuous colour for n_latents
LOSS_LABEL = "normalized MSE (FVU)"


def new_figure(ncols: int = 1) -> tuple[Figure, Any]:
  """A figure on the Agg canvas: one axes (single column) or `ncols` side by side."""
  fig = Figure(figsize=FIGSIZE if ncols == 1 else (FIGSIZE_WIDE[0], FIGSIZE_WIDE[1]),
               layout="constrained" if ncols > 1 else None)
  FigureCanvasAgg(fig)
  if ncols == 1:
    return fig, fig.add_subplot()
  return fig, list(fig.subplots(1, ncols))


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

    def write(tmp: str, ext: str = ext) -> None:
      with matplotlib.rc_context(STYLE):
        fig.savefig(tmp, format=ext)
    files.atomic_write(target, write)
    written.append(target)
  return written


def sci_tick_label(value: float, _pos: Any = None) -> str:
  """Tick label m x 10^e in mathtext ("10^5" when m = 1)."""
  if value <= 0:
    return ""
  e = int(np.floor(np.log10(value) + 1e-9))
  m = value / 10.0**e
  m_str = f"{m:.2g}"
  return f"$10^{{{e}}}$" if m_str == "1" else f"${m_str}\\times10^{{{e}}}$"


def log_axis(axis: Any, formatter: Any, dense: bool = True) -> None:
  """Log ticks that stay labelled over a narrow range (1-2-5, or denser, under 2 decades).

  Call after everything is drawn: the density follows the axis' autoscaled view.
  `dense=False` stops at 1-2-5 (for wide labels such as 3x10^11 on an x axis).
  """
  axis.axes.autoscale_view()
  lo, hi = sorted(axis.get_view_interval())
  decades = np.log10(hi / lo) if lo > 0 else 10.0
  if not dense and decades < 2.0:
    decades = 1.5
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


def loss_tick_label(value: float, _pos: Any = None) -> str:
  return f"{value:g}"


def empty_axes(ax: Any, message: str) -> None:
  """An axes that says why it is empty (no ticks, the message wrapped)."""
  ax.text(0.5, 0.5, textwrap.fill(message, 48), ha="center", va="center",
          transform=ax.transAxes, color="0.4")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.grid(False)
