"""Sweeps: experiment files (big_vision's configs/ are the model: a sweep is code, not
YAML) and the launcher that runs them.

    quickstart, tiny, nk_grid, compute_frontier, lr_sweep, architectures
                the sweep files: get_config() and get_sweep()
    points      load a sweep file, apply overrides, validate every point, name each run
    plan        FLOPs, memory and wall time per point; the memory check (--dry-run)
    launch      run the points in this process: harvest once, train many SAEs per data
                pass, export, write results.jsonl, fit the laws (`analysis.report`)
    cluster     the same points as submitit jobs (local processes or SLURM)

What it may import: the sae_jax library below the CLI, and `analysis` (the launcher ends
with the fits); only `sae_jax.cli` imports it (import-linter checks this, see
.importlinter).
"""
