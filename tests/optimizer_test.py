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


# --- learning-rate schedules and the sparsity warm-up (issue 14) ---

def _lrs(name, steps, **kw):
  schedule = optimizer.lr_schedule(name, 1.0, 100, **kw)
  return [float(schedule(s)) for s in steps]


def test_each_schedule_has_the_value_its_formula_gives():
  """lr = 1, 100 steps, warm-up 10: by hand at chosen steps."""
  np.testing.assert_allclose(_lrs("constant", [0, 50, 99]), [1, 1, 1])
  np.testing.assert_allclose(_lrs("warmup_constant", [0, 5, 10, 99], warmup_steps=10),
                             [0, 0.5, 1, 1], atol=1e-7)
  # Conerly et al. 2024: stable until step 80, then linear to 0 at step 100
  np.testing.assert_allclose(
      _lrs("warmup_linear_decay", [5, 10, 80, 90, 100], warmup_steps=10, decay_fraction=0.2),
      [0.5, 1, 1, 0.5, 0], atol=1e-6)
  # cosine over the 90 steps after the warm-up, to final_fraction 0.1
  cos = lambda t: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t))
  np.testing.assert_allclose(
      _lrs("warmup_cosine", [5, 10, 55, 100], warmup_steps=10, final_fraction=0.1),
      [0.5, 1, cos(0.5), 0.1], atol=1e-6)
  # 1 - sqrt decay over the last 20 steps
  np.testing.assert_allclose(
      _lrs("wsd", [10, 80, 85, 100], warmup_steps=10, decay_fraction=0.2),
      [1, 1, 1 - 0.5, 0], atol=1e-6)
  # no warm-up: the first step already has the peak lr
  assert _lrs("warmup_cosine", [0])[0] == 1.0


def test_a_warmup_longer_than_the_run_is_a_one_line_error():
  import pytest
  from sae_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="exceeds the run") as e:
    optimizer.lr_schedule("warmup_linear_decay", 1.0, 100, warmup_steps=90, decay_fraction=0.2)
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="is not one of"):
    optimizer.lr_schedule("cosine_restarts", 1.0, 100)


def test_sparsity_warmup_ramps_lambda_linearly_from_zero():
  ramp = [float(optimizer.sparsity_warmup(jnp.int32(s), 8)) for s in (0, 2, 8, 100)]
  assert ramp == [0.0, 0.25, 1.0, 1.0]
  assert float(optimizer.sparsity_warmup(jnp.int32(0), 0)) == 1.0  # off


def test_the_train_step_scales_only_the_sparsity_term_by_the_ramp():
  """relu_l1 at step 2 of a 8-step lambda warm-up: the objective is nmse + lambda/4 ·
  penalty, and its gradient that of a loss with lambda / 4."""
  from sae_jax import config, saes
  from sae_jax.saes import relu_l1
  from sae_jax.training import step as step_lib
  c = config.default_config()
  c.sae.architecture, c.sae.n_latents, c.sae.k = "relu_l1", 16, None
  c.sae.sparsity_coefficient, c.sae.input_norm = 0.4, "none"
  c.train.sparsity_warmup_steps, c.train.token_budget, c.train.batch_size = 8, 64 * 16, 64
  c = config.resolve(c, d_in=8)
  x = jax.random.normal(jax.random.PRNGKey(2), (64, 8))
  opt = optax.sgd(1.0)  # the update is minus the gradient
  sc = step_lib.StepConfig.from_config(c)
  state = step_lib.init_state(jax.random.PRNGKey(0), np.asarray(x), c, 1.0, opt)
  state = state.replace(step=jnp.int32(2))
  new, m = step_lib.train_step(state, x, sc=sc, opt=opt)
  hp = saes.get("relu_l1").make_hyper({"sparsity_coefficient": 0.1}, n_latents=16)
  f = lambda p: relu_l1.loss(p, x, {}, hp, variance=state.variance).loss
  np.testing.assert_allclose(float(m["loss"]), float(f(state.params)), rtol=1e-6)
  g = jax.grad(f)(state.params)
  for key in g:
    np.testing.assert_allclose(state.params[key] - new.params[key], g[key], rtol=1e-4, atol=1e-7)
