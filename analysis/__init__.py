"""Scaling-law analysis of one sweep or many: run records -> fits -> plots (the end of the
data flow).

    from analysis import fit_sweep
    fits = fit_sweep("runs/quickstart/results.jsonl")   # fits.json + plots/ beside it

    from analysis import fit_law
    fit = fit_law("power_law_irreducible", n_latents, loss)   # params, stderr, ci95, ...

Modules, in the order data flows through them: `results` (read results.jsonl, filter,
group runs), `laws` (the laws, as data), `fitting` (the engine `fit_law`: Huber in log
space, L-BFGS-B from a grid, bootstrap intervals; the compute frontier), `convergence`
(the rule that says when a run has converged), `optimal` (compute-optimal allocation,
optimal lr), `sweep_fits` (`fit_scaling_laws`: every law a table supports), `plot_style`
and `plots` (the figures, PNG + PDF), `report` (`fit_sweep` and `sae-jax fit`),
`sparsity_fidelity` (the zoo's frontier plot).

What it may import: numpy, scipy, matplotlib and, of sae_jax, only its leaves
(`sae_jax.errors`, `sae_jax.files`): the analysis reads records, never the library that
wrote them (import-linter checks this, see .importlinter).
"""

from analysis.convergence import convergence_table
from analysis.fitting import LawFit, PowerLawFit, compute_frontier, fit_law, fit_power_law
from analysis.laws import LAWS
from analysis.optimal import compute_optimal_allocation, optimal_learning_rates
from analysis.plots import (plot_compute_optimal, plot_extrapolation, plot_fig1,
                            plot_loss_vs_compute, plot_loss_vs_k, plot_loss_vs_n,
                            plot_loss_vs_tokens, plot_lr_sweep)
from analysis.report import fit_sweep
from analysis.results import load_results
from analysis.sweep_fits import fit_scaling_laws

__all__ = [
    "LAWS",
    "LawFit",
    "PowerLawFit",
    "compute_frontier",
    "compute_optimal_allocation",
    "convergence_table",
    "fit_law",
    "fit_power_law",
    "fit_scaling_laws",
    "fit_sweep",
    "load_results",
    "optimal_learning_rates",
    "plot_compute_optimal",
    "plot_extrapolation",
    "plot_fig1",
    "plot_loss_vs_compute",
    "plot_loss_vs_k",
    "plot_loss_vs_n",
    "plot_loss_vs_tokens",
    "plot_lr_sweep",
]
