"""Dead-latent resampling (Bricken et al. 2023), checked against its recipe by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax import config, saes
from sae_jax.training import optimizer, resample

D, N, B = 8, 4000, 6


def _setup():
  arch = saes.get("relu_l1_unit_norm")
  hp = arch.make_hyper({"sparsity_coefficient": 0.1}, n_latents=N)
  params = arch.init(jax.random.PRNGKey(0), D, N, jnp.full((D,), 0.1), hp)
  params["b_enc"] = jnp.full((N,), 0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
  opt = optimizer.make(1e-3)
  g = jax.tree.map(jnp.ones_like, params)
  _, opt_state = opt.update(g, opt.init(params), params)  # non-zero Adam moments
  dead = jnp.arange(N) % 4 != 0  # 3000 dead, 1000 alive
  return arch, hp, params, x, opt_state, dead


def test_resampled_latents_follow_bricken_et_al():
  arch, hp, params, x, opt_state, dead = _setup()
  new, new_opt = resample.resample(jax.random.PRNGKey(7), arch, hp, params, opt_state, {}, x, dead)
  P = {k: np.asarray(v, np.float64) for k, v in params.items()}
  X = np.asarray(x, np.float64)
  z = np.maximum((X - P["b_pre"]) @ P["W_enc"] + P["b_enc"], 0)
  err = np.sum((X - (z @ P["W_dec"] + P["b_pre"])) ** 2, axis=-1)
  u = (X - P["b_pre"]) / np.linalg.norm(X - P["b_pre"], axis=-1, keepdims=True)
  d, alive = np.asarray(dead), ~np.asarray(dead)
  W_dec, W_enc = np.asarray(new["W_dec"]), np.asarray(new["W_enc"])
  # each dead decoder row is one of the normalised inputs; which one, drawn with p ∝ err^2
  match = np.argmin(np.linalg.norm(W_dec[d][:, None, :] - u[None], axis=-1), axis=1)
  np.testing.assert_allclose(W_dec[d], u[match], atol=1e-5)
  freq = np.bincount(match, minlength=B) / d.sum()
  np.testing.assert_allclose(freq, err**2 / np.sum(err**2), atol=0.03)
  # encoder: 0.2 x the mean encoder norm of the alive latents, along the same direction
  scale = 0.2 * np.mean(np.linalg.norm(P["W_enc"][:, alive], axis=0))
  np.testing.assert_allclose(W_enc[:, d], scale * u[match].T, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(new["b_enc"])[d], 0.0)
  # the alive latents are untouched
  for k in ("W_dec", "b_enc"):
    np.testing.assert_array_equal(np.asarray(new[k])[alive], P[k][alive].astype(np.float32))
  np.testing.assert_array_equal(W_enc[:, alive], np.asarray(params["W_enc"])[:, alive])
  # Adam's moments zeroed for the dead latents only
  adam = [s for s in jax.tree.leaves(new_opt, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")][0]
  for moment in (adam.mu, adam.nu):
    assert np.all(np.asarray(moment["W_dec"])[d] == 0) and np.all(np.asarray(moment["W_dec"])[alive] != 0)
    assert np.all(np.asarray(moment["W_enc"])[:, d] == 0)
    assert np.all(np.asarray(moment["b_enc"])[d] == 0) and np.all(np.asarray(moment["b_pre"]) != 0)


def test_the_dead_window_is_the_gap_between_resamplings():
  assert resample.window_tokens((100, 200, 300), 512, 10_000_000) == 100 * 512
  assert resample.window_tokens((100, 150), 512, 10_000) == 10_000


def test_resampling_steps_come_from_fractions_and_must_fit():
  c = config.default_config()
  c.sae.architecture, c.sae.recipe, c.sae.k = "relu_l1_unit_norm", "bricken2023", None
  c.train.token_budget, c.train.batch_size = 1000 * 64, 64
  assert config.resolve(c).train.resample_steps == (100, 200, 300, 400)
  c.train.resample_fractions = (1.0,)
  with pytest.raises(config.ConfigError, match="must lie inside the run"):
    config.resolve(c)
  c = config.default_config()
  c.train.resample_fractions = (0.5,)
  with pytest.raises(config.ConfigError, match="resampling is for the penalty architectures"):
    config.resolve(c)
