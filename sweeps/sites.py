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

Run time, measured 2026-12-02 on the 2-core CPU while two other jobs (the test suite and a
harvest) shared it: 27 min 50 s in all -- the one harvest of the nine caches (102,400 +
8,192 tokens, SmolLM2 stopped after block 25) 14 min 21 s plus its eval split, the 18 SAEs
in 9 passes (one per cache) ~11 min, fits and plots. Expect roughly half on a quiet CPU.
Final held-out normalized MSE at k = 16 (dead-latent fraction in brackets):

    layer  site        n_latents 512   n_latents 2048
    5      resid_pre   0.304 (0.6%)    0.246 (10.5%)
    5      attn_out    0.300 (12.1%)   0.289 (37.6%)
    5      mlp_out     0.475 (0.0%)    0.411 (3.0%)
    15     resid_pre   0.305 (1.6%)    0.269 (16.6%)
    15     attn_out    0.319 (20.1%)   0.316 (44.4%)
    15     mlp_out     0.459 (0.6%)    0.433 (17.0%)
    25     resid_pre   0.343 (2.1%)    0.308 (22.3%)
    25     attn_out    0.316 (11.1%)   0.301 (37.9%)
    25     mlp_out     0.428 (0.4%)    0.384 (9.3%)

At this short budget (102,400 tokens) the MLP outputs are the hardest to reconstruct and
the attention outputs gain least from a 4x larger dictionary (many of its latents die).

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
