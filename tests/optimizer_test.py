"""The decoder constraint of Gao et al. 2024, Sec. A.1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sae_jax.saes import geometric_median as gm, topk
from sae_jax.training import optimizer


def test_parallel_component_removed():
  W = topk.unit_norm_rows(jax.random.normal(jax.random.PRNGKey(0), (32, 8)))
  g = jax.random.normal(jax.random.PRNGKey(1), (32, 8))
  g_perp = optimizer.remove_parallel_component(W, g)
  np.testing.assert_allclose(jnp.sum(g_perp * W, axis=-1), 0.0, atol=1e-6)
  # what is left is exactly g minus its projection on each row
  np.testing.assert_allclose(g_perp + jnp.sum(g * W, -1, keepdims=True) * W, g, atol=1e-6)


def test_optimizer_projects_only_the_decoder_gradient():
  params = topk.init(jax.random.PRNGKey(0), 8, 32)
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optimizer.project_decoder_gradient()
  out, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(jnp.sum(out["W_dec"] * params["W_dec"], -1), 0.0, atol=1e-6)
  np.testing.assert_array_equal(out["W_enc"], grads["W_enc"])


def test_decoder_rows_unit_norm_after_a_step():
  params = topk.init(jax.random.PRNGKey(0), 8, 32)
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 8))
  opt = optimizer.make(1e-2)
  state = opt.init(params)
  g = jax.grad(lambda p: topk.dense_loss(p, x, k=4).loss)(params)
  updates, _ = opt.update(g, state, params)
  stepped = optax.apply_updates(params, updates)
  assert np.abs(np.linalg.norm(stepped["W_dec"], axis=1) - 1).max() > 1e-6  # moved off the sphere
  new = optimizer.renormalize_decoder(stepped)
  np.testing.assert_allclose(np.linalg.norm(new["W_dec"], axis=1), 1.0, rtol=1e-6)


def test_geometric_median_matches_reference():
  """Against scipy minimising the sum of Euclidean distances directly."""
  from scipy.optimize import minimize
  rng = np.random.default_rng(0)
  x = rng.standard_t(df=1.5, size=(300, 5)) + np.array([1.0, -2.0, 0.5, 3.0, 0.0])  # heavy tails
  ref = minimize(lambda m: np.linalg.norm(x - m, axis=1).sum(), x.mean(0), method="Nelder-Mead",
                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000}).x
  m = np.asarray(gm.geometric_median(jnp.asarray(x, jnp.float32), n_iter=1000))
  obj = lambda m: np.linalg.norm(x - m, axis=1).sum()
  np.testing.assert_allclose(m, ref, atol=2e-3)
  assert obj(m) <= obj(ref) * (1 + 1e-6)
  assert obj(m) < obj(x.mean(0))  # not the mean
