"""Tiny: the smallest real sweep, for CI and a first look (the notebooks run it).

Residual stream of SmolLM2-135M-Instruct at its middle layer over 8,192 training and
2,048 held-out tokens; TopK SAEs with n_latents in {64, 128, 256, 512} x k in {4, 16},
each trained on 8,192 tokens (32 steps of 256), evaluated at 4 token counts. Too small
for any law to be trusted: it exists so that every fit, plot and notebook runs end to end
on real activations in about two minutes (2-core CPU: ~10 s harvest after the model
loads, a few seconds of JIT and training per run; an estimate until measured in CI).

    sae-jax sweep sweeps/tiny.py --set out_dir=/tmp/runs
"""

from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "tiny"
  c.data.n_train_tokens = 8_192
  c.data.n_eval_tokens = 2_048
  c.data.shard_tokens = 4_096
  c.sae.geometric_median_samples = 2_048
  c.train.batch_size = 256
  c.train.token_budget = 8_192
  c.train.n_eval_points = 4
  c.train.first_eval_fraction = 1 / 8
  c.train.dead_tokens = 4_096
  c.train.checkpoint_every_steps = 1_000
  return c


def get_sweep():
  return [{"sae.n_latents": n, "sae.k": k}
          for k in (4, 16)
          for n in (64, 128, 256, 512)]
