"""Learning-rate sweep: the optimal lr against n_latents.

Reproduces, at SmolLM2-135M scale: Gao et al. 2024, Sec. 2.3 / Fig. 9 (the best
learning rate falls as 1/sqrt(n_latents), the rule behind the default
lr = 2e-4 / sqrt(n_latents / 2^14)). TopK SAEs at k = 32 with n_latents in
{256, 1024, 4096}, each at 7 learning rates from 1/8 to 8 times that default (factor 2
apart, 21 runs), all at the same token budget (the quickstart's 409,600 tokens, one epoch
of its activation cache, reused if present). `analysis.optimal.optimal_learning_rates`
takes the vertex of a parabola in log lr around each n_latents' best lr and fits
lr*(n) = a n^(-alpha); Gao et al. find alpha = 0.5.

Run time on a 2-core CPU, measured with the quickstart's cache present: 21 min 12 s
(three data passes of 8, 8 and 5 SAEs; trained with train.topk_step="dense", before the
sparse step existed, while other jobs shared the CPU part of the time -- the sparse step
is faster). Add ~5 min of harvest without the cache. What it found at this budget:
lr*(256) = 2.8e-3, lr*(1024) = 2.1e-3, lr*(4096) = 1.6e-3, every optimum inside the
grid, so lr*(n) = 0.0088 n^(-0.21), standard error 0.006 (three points: no bootstrap
interval). That falls more slowly than Gao et al.'s n^(-0.5), measured on much longer runs.

    sae-jax sweep sweeps/lr_sweep.py
    sae-jax fit runs/lr_sweep
"""

from sae_jax.config import default_lr
from sweeps import quickstart

N_LATENTS = (256, 1024, 4096)
LR_MULTIPLIERS = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "lr_sweep"
  c.sae.k = 32
  return c


def get_sweep():
  return [{"sae.n_latents": n, "train.lr": default_lr(n) * m}
          for n in N_LATENTS for m in LR_MULTIPLIERS]
