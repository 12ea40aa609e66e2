"""Sites: TopK SAEs on the residual stream, the attention output and the MLP output of
SmolLM2-135M at three depths (Gao et al. 2024 trained on attention and MLP outputs as
well as the residual stream; Gemma Scope on every layer and sub-layer).

Hook sites are named as TransformerLens / SAELens name them (blocks.L.hook_resid_pre,
hook_attn_out, hook_mlp_out; README, "Hook sites"). The nine (layer, site) caches differ
only in data.layer / data.site, so the launcher harvests them together: ONE forward of
SmolLM2 per batch of contexts, stopped after block 25, fills all nine
(`sweeps.launch.share_lm_passes`). Each cache holds 102,400 training and 8,192 held-out
tokens; per (layer, site) two SAEs, n_latents in {512, 2048} at k = 16, share one pass
over its cache (18 SAEs in all).

Run time: not yet measured. `sae-jax sweep sweeps/sites.py --dry-run` estimates 1.63e13
training FLOPs (2.7 min at 0.1 TFLOP/s); a first attempt on the shared 2-core CPU (load
average 12) harvested at ~30 tokens/s and was stopped.

    sae-jax sweep sweeps/sites.py
"""

from sae_jax.config import default_config

LAYERS = (5, 15, 25)
SITES = ("resid_pre", "attn_out", "mlp_out")


def get_config():
  c = default_config()
  c.name = "sites"
  c.data.n_train_tokens = 102_400
  c.data.n_eval_tokens = 8_192
  c.data.shard_tokens = 51_200
  c.train.batch_size = 512
  c.train.token_budget = 102_400
  c.train.dead_tokens = 25_600
  c.train.checkpoint_every_steps = 100
  c.sae.k = 16
  return c


def get_sweep():
  return [{"data.layer": layer, "data.site": site, "sae.n_latents": n}
          for layer in LAYERS
          for site in SITES
          for n in (512, 2048)]
