"""Properties of the TopK SAE that Gao et al. 2024 rely on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax.saes import topk


def _params(d_in=16, n_latents=64, seed=0):
  return topk.init(jax.random.PRNGKey(seed), d_in, n_latents)


def test_encode_keeps_exactly_k_nonzeros_at_the_top_k():
  params = _params()
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 16))
  k = 5
  pre = topk.pre_activations(params, x)
  z = topk.encode_topk(params, x, k)
  nnz = np.asarray(jnp.sum(z != 0, axis=-1))
  kth = np.sort(np.asarray(pre), axis=-1)[:, -k]
  positive = kth > 0  # ReLU can only remove a kept latent whose pre-activation is <= 0
  assert positive.sum() > 20
  assert np.all(nnz[positive] == k)
  assert np.all(nnz <= k)
  # the kept latents are the k largest pre-activations, with their values
  for b in np.flatnonzero(positive):
    kept = set(np.flatnonzero(np.asarray(z[b])))
    assert kept == set(np.argsort(np.asarray(pre[b]))[-k:])
    np.testing.assert_allclose(np.asarray(z[b])[list(kept)], np.asarray(pre[b])[list(kept)])


def test_k_larger_than_n_latents_is_an_error():
  with pytest.raises(ValueError, match="k=65 exceeds n_latents=64"):
    topk.encode_topk(_params(), jnp.zeros((1, 16)), 65)


def test_tied_init_unit_norm_decoder():
  params = _params()
  np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(params["W_enc"], params["W_dec"].T)
  assert not np.any(params["b_enc"])


def test_encoder_init_scale_shrinks_the_tied_encoder_only():
  hp = topk.Hyper(n_latents=64, k=4, encoder_init_scale=0.5)
  scaled = topk.init(jax.random.PRNGKey(0), 16, 64, None, hp)
  plain = _params()
  np.testing.assert_array_equal(scaled["W_dec"], plain["W_dec"])  # decoder rows stay unit norm
  np.testing.assert_allclose(scaled["W_enc"], 0.5 * plain["W_dec"].T, rtol=1e-6)
  # the same latents win the TopK (scaling is monotone); their activations scale with it
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 16))
  z_s, z_p = topk.encode_topk(scaled, x, 4), topk.encode_topk(plain, x, 4)
  np.testing.assert_array_equal(np.asarray(z_s) != 0, np.asarray(z_p) != 0)
  np.testing.assert_allclose(z_s, 0.5 * z_p, rtol=1e-5, atol=1e-7)


def test_auxk_zero_without_dead_latents_and_positive_with():
  params = _params()
  x = jax.random.normal(jax.random.PRNGKey(2), (64, 16))
  none_dead = jnp.zeros((64,), bool)
  out = topk.dense_loss(params, x, k=4, dead_N=none_dead, k_aux=8)
  assert float(out.aux_loss) == 0.0
  assert float(out.loss) == pytest.approx(float(out.normalized_mse))
  some_dead = jnp.arange(64) % 2 == 0
  out = topk.dense_loss(params, x, k=4, dead_N=some_dead, k_aux=8)
  assert float(out.aux_loss) > 0.0
  # it trains the decoder rows of dead latents only
  g = jax.grad(lambda p: topk.dense_loss(p, x, k=4, dead_N=some_dead, k_aux=8).aux_loss)(params)
  alive_rows = np.asarray(g["W_dec"])[~np.asarray(some_dead)]
  assert np.all(alive_rows == 0) and np.any(np.asarray(g["W_dec"]) != 0)


def test_auxk_reconstructs_residual_without_b_pre():
  """With all latents dead and k_aux = n_latents, e_hat = W_dec relu(pre): the AuxK loss
  equals sum ||e - e_hat||^2 / sum ||e - mean_b e||^2 (OpenAI's normalized_mse) computed by
  hand, with b_pre counted once (in e)."""
  params = _params(d_in=8, n_latents=16)
  params["b_pre"] = jnp.full((8,), 0.3)
  x = jax.random.normal(jax.random.PRNGKey(3), (10, 8))
  out = topk.dense_loss(params, x, k=2, dead_N=jnp.ones((16,), bool), k_aux=16)
  pre = np.asarray(topk.pre_activations(params, x))
  z = np.asarray(topk.encode_topk(params, x, 2))
  e = np.asarray(x) - (z @ np.asarray(params["W_dec"]) + 0.3)
  e_hat = np.maximum(pre, 0) @ np.asarray(params["W_dec"])
  expected = np.sum((e - e_hat) ** 2) / np.sum((e - e.mean(0)) ** 2)
  assert float(out.aux_loss) == pytest.approx(expected, rel=1e-5)


def test_normalized_mse_is_fraction_of_variance_unexplained():
  params = _params()
  params = {**params, "W_dec": jnp.zeros_like(params["W_dec"])}
  x = jax.random.normal(jax.random.PRNGKey(4), (256, 16)) + 2.0
  mean = jnp.mean(x, axis=0)
  params["b_pre"] = mean  # predicting the mean explains nothing: FVU = 1
  var = float(jnp.mean(jnp.sum((x - mean) ** 2, -1)))
  assert float(topk.dense_loss(params, x, k=4, variance=var).normalized_mse) == pytest.approx(1.0, rel=1e-5)
