"""Quickstart: a small, real TopK scaling study (Gao et al. 2024) on SmolLM2-135M.

Residual stream of SmolLM2-135M-Instruct at its middle layer (15 of 30) over 409,600
training tokens of Shakespeare and the King James Bible (64-token contexts, first
position dropped); TopK SAEs with n_latents in {256, 512, 1024, 2048} x k in {8, 32},
each trained on the whole cache once, evaluated at 8 log-spaced token counts on held-out
documents. Reproduces, in miniature: L(N) per k (Gao et al. 2024, Fig. 1 right / Sec. 3.1)
and the L(C) compute frontier (Fig. 1 left).

Run time on a 2-core CPU, measured from a fresh clone with an empty cache: 9 min 0 s for
the README's whole main command (5 min 4 s harvesting, 1 min 55 s training the 8 SAEs in
one data pass with the sparse step; README, "Run time").

    sae-jax sweep sweeps/quickstart.py
"""

from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "quickstart"
  c.data.n_train_tokens = 409_600
  c.data.n_eval_tokens = 16_384
  c.train.batch_size = 512
  c.train.token_budget = 409_600
  # 10M tokens (the paper's default) is longer than this whole budget: a latent silent
  # for a quarter of the budget counts as dead here, so AuxK is active.
  c.train.dead_tokens = 100_000
  c.train.checkpoint_every_steps = 200
  return c


def get_sweep():
  return [{"sae.n_latents": n, "sae.k": k}
          for k in (8, 32)
          for n in (256, 512, 1024, 2048)]
