"""Scaling-law analysis of a sweep: run records -> fits -> plots (the end of the data flow).

    from analysis import fit_sweep
    fits = fit_sweep("runs/quickstart/results.jsonl")   # fits.json + plots/ beside it

Modules: `results` (read results.jsonl), `fits` (L(N), L(C), frontier), `plots`
(figures), `report` (`fit_sweep` and the `sae-jax fit` subcommand).
"""

from analysis.fits import PowerLawFit, compute_frontier, fit_power_law, fit_scaling_laws
from analysis.plots import plot_loss_vs_compute, plot_loss_vs_n, plot_loss_vs_tokens
from analysis.report import fit_sweep
from analysis.results import load_results

__all__ = [
    "PowerLawFit",
    "compute_frontier",
    "fit_power_law",
    "fit_scaling_laws",
    "fit_sweep",
    "load_results",
    "plot_loss_vs_compute",
    "plot_loss_vs_n",
    "plot_loss_vs_tokens",
]
