"""Compute frontier: L(C) and the compute-optimal n_latents*(C), tokens*(C).

Reproduces, at SmolLM2-135M scale: Gao et al. 2024, Fig. 1 left (normalized MSE vs
training compute with the compute-efficient frontier and its power law L(C)) and the
compute-optimal allocation of Templeton et al. 2024 (the optimal number of features grows
faster with compute than the optimal number of steps: n* ~ C^a, D* ~ C^b, a > b, and
a + b = 1 since C = 12 d_in n D). Residual stream of SmolLM2-135M-Instruct at its middle
layer, the quickstart's 409,600-token activation cache (reused if present); TopK SAEs at
k = 32 with n_latents in {128, ..., 4096} (6 runs), each trained long -- 8 epochs,
3,276,800 tokens -- and evaluated at 24 log-spaced token counts from 1/512 of the budget,
so every run's loss-vs-compute curve spans the compute range where the others are best.

Run time on a 2-core CPU, measured with the quickstart's cache present: 14 min 11 s (one
data pass for all 6 SAEs, 6,400 steps, with the sparse step of `sae_jax.saes.sparse`). Add
~5 min of harvest without the cache. What it found: L(C) = 7.4 C^(-0.124) over 45
frontier points (fitted on the whole frontier, a method the coverage benchmark later
found biased steep by ~0.7 SE; `sae-jax fit` now fits each run's tangent point); n_latents*(C) ~ C^0.49 from 8 interior compute levels (tokens*(C) ~
C^0.51 is its complement, C = 12 d_in n D). So at this scale the optimal number of
features grows as fast as the optimal number of tokens, not faster as Templeton et al.
2024 found; the two extreme levels have their best n_latents at the edge of the sweep and
are left out. (The intervals quoted here before came from a point bootstrap that the
coverage benchmark showed far too narrow; `sae-jax fit` now gives validated ones -- not
rerun here.)

    sae-jax sweep sweeps/compute_frontier.py
    sae-jax fit runs/compute_frontier
"""

from sweeps import quickstart

N_LATENTS = (128, 256, 512, 1024, 2048, 4096)


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "compute_frontier"
  c.sae.k = 32
  c.train.token_budget = 8 * 409_600  # 8 epochs of the cache
  c.train.dead_tokens = 400_000
  c.train.n_eval_points = 24
  c.train.first_eval_fraction = 1 / 512
  c.train.checkpoint_every_steps = 400
  return c


def get_sweep():
  return [{"sae.n_latents": n} for n in N_LATENTS]
