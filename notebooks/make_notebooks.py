"""Write the three notebooks of this folder from the cell sources below, clean.

    python notebooks/make_notebooks.py          # rewrites notebooks/*.ipynb

The committed .ipynb files are exactly what this script writes: no outputs, no execution
counts, no absolute paths (tests/notebooks_test.py checks both). Edit the cells here, not
in Jupyter, or clear the outputs before committing.

Every notebook reads its inputs from environment variables, so CI runs it on a tiny
sweep and a user on the quickstart (or the paper sweeps) without editing it:

    SAE_JAX_NOTEBOOK_SWEEP      sweep file of 01 (default sweeps/quickstart.py)
    SAE_JAX_NOTEBOOK_OUT        out_dir of the runs (default runs)
    SAE_JAX_NOTEBOOK_RESULTS    results.jsonl path(s) for 02 and 03, separated by
                                os.pathsep (default <out>/<sweep name>/results.jsonl)
    SAE_JAX_NOTEBOOK_NK, _FRONTIER, _LR
                                03's results of sweeps/nk_grid.py, compute_frontier.py,
                                lr_sweep.py (default runs/<name>/results.jsonl if it
                                exists, else SAE_JAX_NOTEBOOK_RESULTS)
    SAE_JAX_NOTEBOOK_BOOTSTRAP  bootstrap resamples per fit (default 200)
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''\
import os, pathlib, sys
# Run from the repository root (Jupyter usually starts in notebooks/).
ROOT = pathlib.Path.cwd()
if not (ROOT / "sweeps").is_dir() and (ROOT.parent / "sweeps").is_dir():
  ROOT = ROOT.parent
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))

from IPython.display import Image, display

SWEEP = os.environ.get("SAE_JAX_NOTEBOOK_SWEEP", "sweeps/quickstart.py")
OUT = os.environ.get("SAE_JAX_NOTEBOOK_OUT", "runs")
N_BOOTSTRAP = int(os.environ.get("SAE_JAX_NOTEBOOK_BOOTSTRAP", "200"))

from sweeps import launch
SWEEP_NAME = launch.load_sweep(SWEEP)[0].name
RESULTS = os.environ.get("SAE_JAX_NOTEBOOK_RESULTS",
                         os.path.join(OUT, SWEEP_NAME, "results.jsonl")).split(os.pathsep)
print(f"sweep {SWEEP} -> {OUT}/{SWEEP_NAME}; results: {RESULTS}; bootstrap {N_BOOTSTRAP}")'''


def _nb(cells: list) -> nbformat.NotebookNode:
  nb = new_notebook(cells=cells)
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"},
  }
  for i, cell in enumerate(nb.cells):
    cell["id"] = f"cell-{i:02d}"
  return nb


def quickstart() -> nbformat.NotebookNode:
  """01: run a tiny sweep (or the quickstart) and look at it."""
  return _nb([
      new_markdown_cell("""\
# 01 — Quickstart: run a sweep and look at it

This notebook runs a sweep end to end — harvest SmolLM2-135M's residual stream over real
text, train a grid of TopK SAEs (Gao et al. 2024), fit the scaling laws — and shows the
results. By default it runs `sweeps/quickstart.py` (about 11 minutes on a 2-core CPU);
set `SAE_JAX_NOTEBOOK_SWEEP=sweeps/tiny.py` for a two-minute version (CI does).
Finished runs are reused, so re-running is cheap."""),
      new_code_cell(SETUP),
      new_markdown_cell("""\
## Run the sweep
`launch.run_sweep` reads the sweep file (`get_config()` + `get_sweep()`), harvests (or
reuses) the activation cache, trains every point, writes `results.jsonl` — one record per
(run, evaluation point) — and fits the laws into `fits.json` and `plots/`."""),
      new_code_cell("""\
results_path = launch.run_sweep(SWEEP, {"out_dir": OUT}, progress=False)
results_path"""),
      new_markdown_cell("## The results table: the final record of each run"),
      new_code_cell("""\
from analysis import load_results

records = load_results(results_path)
print(f"{len(records)} records of {len({r['run_id'] for r in records})} runs")
print(f"{'run_id':<28} {'n_latents':>9} {'k':>4} {'tokens':>9} {'FLOPs':>9} {'norm. MSE':>9} {'L0':>6}")
for r in sorted((r for r in records if r["final"]), key=lambda r: (r["k"], r["n_latents"])):
  print(f"{r['run_id'][:28]:<28} {r['n_latents']:>9} {r['k']:>4} {r['tokens']:>9} "
        f"{r['flops']:>9.2e} {r['normalized_mse']:>9.4f} {r['l0']:>6.1f}")"""),
      new_markdown_cell("""\
## Fit and plot
`fit_sweep` fits every law the table supports (each exponent with a bootstrap 95%
interval) and writes the plots. A tiny sweep is far from convergence: read these numbers
as a smoke test, not as scaling laws."""),
      new_code_cell("""\
import warnings
from analysis import fit_sweep
from analysis.report import summary

with warnings.catch_warnings():
  warnings.simplefilter("ignore")  # unconverged runs, edge optima: all listed in fits.json
  fits = fit_sweep(results_path, n_bootstrap=N_BOOTSTRAP)
print(summary(fits))"""),
      new_code_cell("""\
plot_dir = os.path.join(os.path.dirname(results_path), "plots")
for stem in ("fig1", "loss_vs_tokens"):
  display(Image(os.path.join(plot_dir, f"{stem}.png"), width=720 if stem == "fig1" else 420))"""),
  ])


def fit_scaling_laws() -> nbformat.NotebookNode:
  """02: fit the laws one by one from a results table, and plot them."""
  return _nb([
      new_markdown_cell("""\
# 02 — Fit scaling laws from a results table

Every fit of `analysis` is one call of `fit_law(law, x, y)`: the law in log space, a Huber
loss (Hoffmann et al. 2022), L-BFGS-B from a grid of starts, standard errors and
bootstrap 95% intervals. This notebook fits each law of the papers by hand from a
results table (`SAE_JAX_NOTEBOOK_RESULTS`, default the quickstart's), then all at once."""),
      new_code_cell(SETUP),
      new_code_cell("""\
import warnings
import numpy as np
from analysis import load_results
from analysis.fitting import fit_frontier_law, fit_law
from analysis.sweep_fits import fit_scaling_laws
from analysis.convergence import RULE, convergence_table

missing = [p for p in RESULTS if not os.path.exists(p)]
assert not missing, f"no results at {missing}: run notebook 01 or `sae-jax sweep {SWEEP}` first"
records = load_results(RESULTS)  # filters: load_results(RESULTS, architecture="topk", layer=15)
print(f"{len(records)} records from {RESULTS}")"""),
      new_markdown_cell("""\
## Convergence
L(N) is a law *at convergence*. The rule (`analysis.convergence`): a run has converged
when its loss fell less than 5% over the last doubling of training tokens. Unconverged
runs are kept in the fits and flagged (or dropped with `convergence="exclude"`)."""),
      new_code_cell("""\
table = convergence_table(records)
for row in table:
  drop = "n/a" if row["drop"] is None else f"{100 * row['drop']:.1f}%"
  print(f"n_latents={row['n_latents']:>6} k={row['k']:>3}  last-doubling drop {drop:>6}  "
        f"{'converged' if row['converged'] else 'NOT converged'}")"""),
      new_markdown_cell("""\
## L(N) at convergence, per k (Gao et al. 2024, Sec. 3.1)
`power_law_irreducible`: L = a N^(-alpha) + c. With few n_latents the bootstrap may not
resolve c; the fit then says so in `note`."""),
      new_code_cell("""\
finals = [r for r in records if r["final"]]
L_N = {}
for k in sorted({r["k"] for r in finals}):
  group = [r for r in finals if r["k"] == k]
  n = [r["n_latents"] for r in group]
  y = [r["normalized_mse"] for r in group]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      fit = fit_law("power_law", n, y, variables={"x": "n_latents"}, n_bootstrap=N_BOOTSTRAP)
    except Exception as e:  # too few n_latents: a one-line ConfigError
      print(f"k={k}: {e}")
      continue
  L_N[k] = fit
  print(f"k={k}: alpha = {fit.params['alpha']:.3f}, 95% CI {fit.ci95['alpha']}, "
        f"stderr {fit.stderr['alpha']}, {fit.n_points} points, note: {fit.note or '-'}")"""),
      new_markdown_cell("""\
## L(C) on the compute-efficient frontier (Gao et al. 2024, Fig. 1 left)
The frontier is the lower envelope of every evaluation point of every run of one k against
training compute (compute does not depend on k: pooling k would give the largest k's
envelope). Its points are consecutive evaluations of a few runs that share each run's
noise, so `fit_frontier_law` fits L(C) through one point per run, where the run's curve
touches the envelope (Kaplan et al. 2020, Sec. 6), and its interval is a t interval on
those independent points (`fits.json` says what it was fitted on)."""),
      new_code_cell("""\
k0 = sorted({r["k"] for r in records})[-1]
evals = [r for r in records if r["normalized_mse"] > 0 and r["k"] == k0]
L_C, idx, _ = fit_frontier_law([r["flops"] for r in evals], [r["normalized_mse"] for r in evals],
                               [r["run_id"] for r in evals], n_bootstrap=N_BOOTSTRAP)
frontier = [evals[i] for i in idx]
print(f"k={k0}: {len(frontier)} frontier points of {len(evals)}: "
      f"L(C) ~ C^-{L_C.params['alpha']:.4f}, 95% CI {L_C.ci95['alpha']} {L_C.no_interval}")"""),
      new_markdown_cell("""\
## The joint law L(n, k), Gao et al. 2024, Eq. 3
L(n, k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n) + exp(zeta + eta log k).
Needs at least 4 values of n and 2 of k, 7 points in all."""),
      new_code_cell("""\
try:
  eq3 = fit_law("joint_nk", {"n": [r["n_latents"] for r in finals], "k": [r["k"] for r in finals]},
                [r["normalized_mse"] for r in finals], variables={"n": "n_latents", "k": "k"},
                n_bootstrap=N_BOOTSTRAP, warn=False)
  for p, v in eq3.params.items():
    print(f"{p:>7} = {v:+.4f}  95% CI {eq3.ci95[p]}")
  print(eq3.note or "")
except Exception as e:
  print(e)"""),
      new_markdown_cell("""\
## Everything at once, to JSON, and the plots
`fit_scaling_laws` does all of the above plus the compute-optimal allocation and the
optimal learning rate where the table supports them; each law that cannot be fitted
holds a one-line reason."""),
      new_code_cell("""\
import json
from analysis import plots
from analysis.report import summary
from sae_jax.files import write_json_atomic

with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  fits = fit_scaling_laws(records, n_bootstrap=N_BOOTSTRAP)
print(summary(fits))
out_dir = os.path.join(OUT, "notebook_02")
write_json_atomic(os.path.join(out_dir, "fits.json"), fits)
paths = plots.plot_loss_vs_n(records, fits, os.path.join(out_dir, "loss_vs_n_latents"))
paths += plots.plot_extrapolation(L_C, os.path.join(out_dir, "extrapolation_L_C"), factor=100,
                                  xlabel="training compute (FLOPs)")
for p in paths:
  if p.endswith(".png"):
    display(Image(p, width=420))"""),
  ])


def reproduce_paper_plots() -> nbformat.NotebookNode:
  """03: the papers' figures from the project's own sweeps."""
  return _nb([
      new_markdown_cell("""\
# 03 — Reproduce the paper plots

The figures of Gao et al. 2024 and Templeton et al. 2024, from this project's sweeps:

| figure | sweep | env var |
| --- | --- | --- |
| Fig. 1: loss vs compute with the frontier; L(N) at convergence | `sweeps/nk_grid.py` | `SAE_JAX_NOTEBOOK_NK` |
| loss vs k per n_latents with the Eq. 3 surface | `sweeps/nk_grid.py` | `SAE_JAX_NOTEBOOK_NK` |
| compute-optimal n_latents*(C), tokens*(C) | `sweeps/compute_frontier.py` | `SAE_JAX_NOTEBOOK_FRONTIER` |
| loss-vs-tokens curves per run | `sweeps/compute_frontier.py` | `SAE_JAX_NOTEBOOK_FRONTIER` |
| optimal lr vs n_latents | `sweeps/lr_sweep.py` | `SAE_JAX_NOTEBOOK_LR` |
| extrapolation with confidence bands | nk_grid (L(N)), compute_frontier (L(C)) | |

Each source defaults to `runs/<sweep>/results.jsonl` when that exists, else to
`SAE_JAX_NOTEBOOK_RESULTS` (the quickstart's, or the tiny sweep's in CI): the figures are
then drawn from whatever that table supports, and a law it cannot support says why."""),
      new_code_cell(SETUP),
      new_code_cell("""\
import warnings
from analysis import load_results, plots
from analysis.sweep_fits import fit_scaling_laws
from analysis.report import summary

def source(env, sweep_name):
  default = os.path.join(OUT, sweep_name, "results.jsonl")
  paths = os.environ.get(env, default if os.path.exists(default) else os.pathsep.join(RESULTS))
  return paths.split(os.pathsep)

SOURCES = {"nk": source("SAE_JAX_NOTEBOOK_NK", "nk_grid"),
           "frontier": source("SAE_JAX_NOTEBOOK_FRONTIER", "compute_frontier"),
           "lr": source("SAE_JAX_NOTEBOOK_LR", "lr_sweep")}
FIG_DIR = os.path.join(OUT, "paper_figures")
records, fits = {}, {}
for name, paths in SOURCES.items():
  records[name] = load_results(paths)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fits[name] = fit_scaling_laws(records[name], n_bootstrap=N_BOOTSTRAP)
  print(f"== {name}: {paths}\\n{summary(fits[name])}\\n")

def show(paths, width=720):
  for p in paths:
    if p.endswith(".png"):
      display(Image(p, width=width))"""),
      new_markdown_cell("""\
## Gao et al. 2024, Fig. 1
(a) normalized MSE of every evaluation point of every run against training compute, the
compute-efficient frontier and L(C) fitted to it; (b) the loss at convergence against
n_latents per k, with L(N) and its bootstrap band (hollow points: not converged)."""),
      new_code_cell("""\
show(plots.plot_fig1(records["nk"], fits["nk"], os.path.join(FIG_DIR, "fig1")))"""),
      new_markdown_cell("## Loss vs k per n_latents, with the Eq. 3 surface (Gao et al. 2024, Eq. 3)"),
      new_code_cell("""\
show(plots.plot_loss_vs_k(records["nk"], fits["nk"], os.path.join(FIG_DIR, "loss_vs_k")), 420)"""),
      new_markdown_cell("""\
## Compute-optimal allocation (Templeton et al. 2024)
At each compute level, the n_latents and token budget that minimise the loss (parabola
vertex in log n_latents); power laws n* ~ C^a and D* ~ C^b. Templeton et al. find that
the optimal number of features grows faster than the optimal number of steps (a > b)."""),
      new_code_cell("""\
show(plots.plot_compute_optimal(fits["frontier"], os.path.join(FIG_DIR, "compute_optimal")))
for key, entry in fits["frontier"]["compute_optimal"].items():
  if "a" in entry:
    print(f"{key}: a = {entry['a']:.3f}, b = {entry['b']:.3f}, a + b = {entry['a_plus_b']:.3f}, "
          f"features grow faster: {entry['features_grow_faster']}")
  else:
    print(f"{key}: {entry.get('error') or entry['n_latents_opt'].get('error')}")"""),
      new_markdown_cell("## Training curves: loss vs tokens per run"),
      new_code_cell("""\
show(plots.plot_loss_vs_tokens(records["frontier"], os.path.join(FIG_DIR, "loss_vs_tokens")), 420)"""),
      new_markdown_cell("""\
## The optimal learning rate against n_latents (Gao et al. 2024, Sec. 2.3)
Gao et al. find lr* proportional to 1/sqrt(n_latents)."""),
      new_code_cell("""\
show(plots.plot_lr_sweep(fits["lr"], os.path.join(FIG_DIR, "lr_sweep")))"""),
      new_markdown_cell("""\
## Extrapolation with confidence bands
The fitted laws beyond the data, with the pointwise 95% band of the bootstrap refits."""),
      new_code_cell("""\
from analysis.fitting import LawFit

def first_fit(entries):
  for entry in entries:
    if "params" in entry and not entry.get("degenerate"):
      return entry
  return None

L_N = first_fit(e for group in fits["nk"]["L_N"].values()
                for e in (group.get("irreducible", {}), group.get("power_law", {})))
if L_N is not None:
  show(plots.plot_extrapolation(L_N, os.path.join(FIG_DIR, "extrapolation_L_N"),
                                xlabel="n_latents", title="L(N) extrapolated"), 420)
L_C = first_fit(fits["frontier"]["L_C"].values())
if L_C is not None:
  show(plots.plot_extrapolation(L_C, os.path.join(FIG_DIR, "extrapolation_L_C"),
                                factor=100, xlabel="training compute (FLOPs)",
                                title="L(C) extrapolated"), 420)
print(sorted(os.listdir(FIG_DIR)))"""),
  ])


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_fit_scaling_laws.ipynb": fit_scaling_laws,
    "03_reproduce_paper_plots.ipynb": reproduce_paper_plots,
}


def build() -> dict[str, str]:
  """File name -> the notebook JSON this script writes."""
  return {name: nbformat.writes(make(), version=4) + "\n" for name, make in NOTEBOOKS.items()}


def main() -> int:
  for name, text in build().items():
    nbformat.validate(nbformat.reads(text, as_version=4))
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
      f.write(text)
    print(f"wrote notebooks/{name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
