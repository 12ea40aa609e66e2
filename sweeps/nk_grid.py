"""n x k grid at convergence: L(N) per k and the joint L(n, k) of Gao et al. 2024, Eq. 3.

Reproduces, at SmolLM2-135M scale: Gao et al. 2024, Sec. 3.1 / Fig. 1 right (L(N) at
convergence per k, with and without an irreducible term) and Eq. 3 / Fig. 3 (the joint
fit L(n, k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n)
+ exp(zeta + eta log k)). Residual stream of SmolLM2-135M-Instruct at its middle layer,
the same 409,600-token activation cache as the quickstart (reused if present); TopK SAEs
with n_latents in {256, ..., 4096} x k in {8, 16, 32, 64} (20 runs), each trained for
4 epochs of the cache (1,638,400 tokens) so the smaller SAEs converge. Convergence is
judged per run by the rule of `analysis.convergence` (loss drop < 5% over the last
doubling of tokens); runs that have not converged are listed in fits.json.

Run time on a 2-core CPU, measured with the quickstart's cache present: 22 min 14 s (three
data passes of 8, 8 and 4 SAEs with the sparse step of `sae_jax.saes.sparse`). Add ~5 min of
harvest without the cache. What it found: normalized MSE from 0.357 (n 256, k 8) to 0.125
(n 4096, k 64); L(N) = a N^(-alpha) with alpha = 0.14, 0.17, 0.19, 0.14 for k = 8, 16, 32,
64 (95% intervals about +/- 0.03). Four runs have not converged by the rule (n 4096 at
k 32; n >= 1024 at k 64) and are flagged in fits.json. The Eq. 3 fit's residuals (in log
loss) stay below 0.023 except at k = 64 for n <= 1024 (up to 0.12), and its six
coefficients are not pinned down by 20 points: gamma = -0.09, 95% interval [-0.20, 0.14].

    sae-jax sweep sweeps/nk_grid.py
    sae-jax fit runs/nk_grid                 # or notebooks/03_reproduce_paper_plots.ipynb
"""

from sweeps import quickstart

N_LATENTS = (256, 512, 1024, 2048, 4096)
KS = (8, 16, 32, 64)


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "nk_grid"
  c.train.token_budget = 4 * 409_600  # 4 epochs of the cache
  c.train.dead_tokens = 400_000
  c.train.n_eval_points = 12
  c.train.first_eval_fraction = 1 / 128
  c.train.checkpoint_every_steps = 400
  return c


def get_sweep():
  return [{"sae.n_latents": n, "sae.k": k} for k in KS for n in N_LATENTS]
