"""The SAE zoo: each architecture's defining math, and the interface every one of them
implements (shapes, a finite loss, training under the real trainer, the sparsity knob)."""

import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_test import _source

from sae_jax import config, overrides, saes
from sae_jax.saes import (base, batchtopk, gated, jumprelu, kl, matryoshka, relu_l1,
                          relu_l1_unit_norm)
from sae_jax.training import trainer

ALL = ["topk", "batchtopk", "matryoshka_batchtopk", "relu_l1", "relu_l1_unit_norm", "kl",
       "jumprelu", "gated"]
D, N, B = 16, 64, 32


def _hp(arch: saes.Architecture, **kw) -> saes.Hyper:
  knob = {"k": 4} if arch.knob == "k" else {"sparsity_coefficient": 0.05}
  return arch.hyper(n_latents=N, **{**knob, "k_aux": 8, **kw})


def _x(seed=1, batch=B):
  return jax.random.normal(jax.random.PRNGKey(seed), (batch, D)) + 0.5


# ---------------------------------------------------------------- the common interface


def test_registry_holds_every_architecture_and_unknown_names_list_them():
  assert sorted(ALL) == saes.names()
  with pytest.raises(config.ConfigError, match="unknown architecture 'vanilla'; known: batchtopk, "
                     "gated, jumprelu, kl, matryoshka_batchtopk, relu_l1, relu_l1_unit_norm, topk"):
    saes.get("vanilla")
  for name in ALL:
    arch = saes.get(name)
    assert arch.name == name and arch.paper and arch.knob in ("k", "sparsity_coefficient")
    assert arch.input_norm in ("unit_norm", "mean_norm", "none")


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_a_finite_loss(name):
  arch = saes.get(name)
  hp = _hp(arch)
  b_pre = jnp.full((D,), 0.5)
  params = arch.init(jax.random.PRNGKey(0), D, N, b_pre, hp)
  assert params["W_enc"].shape == (D, N) and params["W_dec"].shape == (N, D)
  np.testing.assert_allclose(params["b_pre"], b_pre)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
  extras = arch.init_extras(N, hp)
  x = _x()
  z = arch.encode(params, x, extras, hp)
  assert z.shape == (B, N) and arch.decode(params, z).shape == (B, D)
  dead = jnp.arange(N) % 3 == 0
  out = jax.jit(lambda p, x, e: arch.loss(p, x, e, hp, variance=2.0, dead_N=dead))(params, x, extras)
  assert np.isfinite(float(out.loss)) and np.isfinite(float(out.normalized_mse))
  assert out.fired_N.shape == (N,) and out.fired_N.dtype == jnp.bool_
  assert out.l0.shape == () and 0 < float(out.l0) <= N
  # extras keep their structure, so the train state can be jitted, donated and saved
  assert jax.tree.structure(out.extras) == jax.tree.structure(extras)
  # the trainer's objective: normalized MSE + weighted sparsity + (weighted) aux terms
  assert float(out.loss) >= float(out.normalized_mse) + float(out.sparsity_loss) - 1e-6




@pytest.mark.parametrize("name", ALL)
def test_trainer_steps_lower_the_loss(name, tmp_path):
  arch = saes.get(name)
  c = config.default_config()
  c.sae.architecture = name
  c.sae.n_latents = 128
  c.sae.input_norm = arch.input_norm
  c.sae.geometric_median_samples = 1024
  if arch.knob == "k":
    c.sae.k = 4
  c.train.batch_size = 256
  c.train.token_budget = 8192
  c.train.lr = 1e-3
  c.train.dead_tokens = 1024
  c.train.n_eval_points = 2
  c.train.first_eval_fraction = 1 / 32
  c.train.n_devices = 1
  records = trainer.train(c, _source(), str(tmp_path), progress=False)
  first, last = records[0], records[-1]
  assert last["final"] and last["architecture"] == name
  assert last["normalized_mse"] < first["normalized_mse"]
  assert np.isfinite(last["l0"]) and 0 < last["l0"] <= 128
  assert last[arch.knob] == (4 if arch.knob == "k" else arch.default_knob)


@pytest.mark.parametrize("name", ALL)
def test_the_knob_that_does_not_apply_is_an_error(name):
  arch = saes.get(name)
  wrong = {"sae.sparsity_coefficient": 0.1} if arch.knob == "k" else {"sae.k": 8}
  c = overrides.apply(config.default_config(), {"sae.architecture": name, **wrong})
  with pytest.raises(config.ConfigError, match=f"does not apply to {name} .*its sparsity knob is "
                     f"sae.{arch.knob}"):
    config.resolve(c, d_in=64)
  c = config.resolve(overrides.apply(config.default_config(), {"sae.architecture": name}), 64)
  assert c.sae[arch.knob] == arch.default_knob


# ---------------------------------------------------------------- BatchTopK


def test_kth_largest_is_exact():
  rng = np.random.default_rng(0)
  v = np.maximum(rng.normal(size=(37, 53)), 0).astype(np.float32)
  desc = np.sort(v.reshape(-1))[::-1]
  for m in (1, 2, 17, 500, int((v > 0).sum()), v.size):
    assert float(batchtopk.kth_largest(jnp.asarray(v), m)) == desc[m - 1]
  with pytest.raises(ValueError, match="m=0 must be in"):
    batchtopk.kth_largest(jnp.asarray(v), 0)


def test_batchtopk_keeps_exactly_k_times_B_over_the_batch():
  params = batchtopk.init(jax.random.PRNGKey(0), D, N)
  x, k = _x(), 4
  pre = np.asarray(batchtopk.pre_activations(params, x))
  assert (pre > 0).sum() > k * B
  z = np.asarray(batchtopk.batch_topk(jnp.asarray(pre), k))
  assert (z != 0).sum() == k * B
  per_token = (z != 0).sum(-1)
  assert per_token.min() != per_token.max()  # a batch budget, not a per-token one
  kept = np.sort(pre.reshape(-1))[::-1][:k * B]  # the k·B largest, with their values
  np.testing.assert_array_equal(np.sort(z[z != 0])[::-1], kept)
  out = batchtopk.loss(params, x, batchtopk.init_extras(N, None), _hp(batchtopk.ARCH, k=k))
  assert float(out.l0) == k


def test_batchtopk_inference_uses_the_threshold_not_the_batch():
  params = batchtopk.init(jax.random.PRNGKey(0), D, N)
  x = _x()
  extras = {"threshold": jnp.asarray(0.7, jnp.float32)}
  z = np.asarray(batchtopk.encode(params, x, extras, None))
  pre = np.asarray(batchtopk.pre_activations(params, x))
  np.testing.assert_array_equal(z, np.where(pre > 0.7, pre, 0.0))
  one = np.asarray(batchtopk.encode(params, x[3:4], extras, None))
  np.testing.assert_allclose(one[0], z[3], rtol=1e-6)  # a token's code ignores the batch


def test_batchtopk_threshold_is_an_ema_of_the_smallest_kept_activation():
  hp = _hp(batchtopk.ARCH, k=4, threshold_momentum=0.9)
  params = batchtopk.init(jax.random.PRNGKey(0), D, N)
  x1, x2 = _x(1), _x(2)
  mins = []
  for x in (x1, x2):
    z = np.asarray(batchtopk.batch_topk(batchtopk.pre_activations(params, x), 4))
    mins.append(z[z > 0].min())
  e = batchtopk.init_extras(N, hp)
  assert float(e["threshold"]) < 0  # unset
  e = batchtopk.loss(params, x1, e, hp).extras
  assert float(e["threshold"]) == pytest.approx(mins[0])  # the first batch sets it
  e = batchtopk.loss(params, x2, e, hp).extras
  assert float(e["threshold"]) == pytest.approx(0.9 * mins[0] + 0.1 * mins[1])


def test_batchtopk_auxk_matches_topk():
  """The TopK family shares Gao et al.'s AuxK: zero without dead latents, positive with."""
  params = batchtopk.init(jax.random.PRNGKey(0), D, N)
  hp, x, e = _hp(batchtopk.ARCH, k=4), _x(), batchtopk.init_extras(N, None)
  none_dead = batchtopk.loss(params, x, e, hp, dead_N=jnp.zeros((N,), bool))
  assert float(none_dead.aux_loss) == 0.0
  some = batchtopk.loss(params, x, e, hp, dead_N=jnp.arange(N) % 2 == 0)
  assert float(some.aux_loss) > 0
  assert float(some.loss) == pytest.approx(float(some.normalized_mse) + hp.aux_coef *
                                           float(some.aux_loss), rel=1e-6)


# ---------------------------------------------------------------- Matryoshka


def test_each_matryoshka_prefix_loss_is_that_prefix_alone():
  hp = _hp(matryoshka.ARCH, k=6, prefixes=(4, 16, N))
  params = matryoshka.init(jax.random.PRNGKey(0), D, N, jnp.full((D,), 0.2))
  x, var = _x(), 3.0
  out = matryoshka.loss(params, x, matryoshka.init_extras(N, hp), hp, variance=var)
  z = batchtopk.batch_topk(batchtopk.pre_activations(params, x), 6)
  by_hand = []
  for m in (4, 16, N):
    small = {"W_dec": params["W_dec"][:m], "b_pre": params["b_pre"]}  # a dictionary of m latents
    x_hat = base.decode(small, z[:, :m])
    by_hand.append(float(jnp.sum((x - x_hat) ** 2) / (B * var)))
  got = np.asarray(matryoshka.prefix_losses(params, x, z, (4, 16, N), var))
  np.testing.assert_allclose(got, by_hand, rtol=1e-5)
  assert len(set(by_hand)) == 3
  # a prefix's loss ignores the latents after it: change them and only later losses move
  moved = {**params, "W_dec": params["W_dec"].at[16:].multiply(-1.0)}
  got2 = np.asarray(matryoshka.prefix_losses(moved, x, z, (4, 16, N), var))
  np.testing.assert_allclose(got2[:2], got[:2], rtol=1e-6)
  assert got2[2] != pytest.approx(got[2])
  # the reference's mean over {b_pre alone, each prefix} (bartbussmann/matryoshka_sae)
  b_pre_only = float(jnp.sum((x - params["b_pre"]) ** 2) / (B * var))
  assert float(out.loss) == pytest.approx((b_pre_only + sum(by_hand)) / 4, rel=1e-5)
  assert float(out.normalized_mse) == pytest.approx(by_hand[-1], rel=1e-5)


def test_matryoshka_prefixes_default_and_validation():
  assert matryoshka.prefixes(1024, matryoshka.Hyper(n_latents=1024)) == (16, 64, 256, 1024)
  assert matryoshka.prefixes(8, matryoshka.Hyper(n_latents=8)) == (1, 2, 8)
  for bad in ((16, 8, 64), (8, 32), (0, 64)):
    with pytest.raises(config.ConfigError, match="sae.prefixes=.* must be strictly ascending"):
      matryoshka.prefixes(64, matryoshka.Hyper(n_latents=64, prefixes=bad))


# ---------------------------------------------------------------- JumpReLU


def test_jumprelu_pseudo_derivatives_are_the_papers():
  """d/dtheta JumpReLU = -(theta/eps) K((z - theta)/eps), d/dtheta H = -(1/eps) K(...),
  K the rectangle 1[|u| < 1/2] (Rajamanoharan et al. 2024b, Eqs. 11-12); d/dz JumpReLU =
  H(z - theta) and d/dz H = 0."""
  eps = 1e-3
  theta = jnp.asarray([0.5, 0.5, 0.5, 0.5, 0.5, 2.0])
  # inside the window (|z - theta| < eps/2) and outside, above and below
  z = jnp.asarray([[0.5 + 0.4 * eps, 0.5 - 0.4 * eps, 0.5 + 0.6 * eps, 0.5 - 0.6 * eps, 3.0, 1.0],
                   [0.5 + 0.1 * eps, 0.0, 0.5, 0.9, 0.5 - 0.49 * eps, 2.0 + 0.2 * eps]])
  zn, tn = np.asarray(z), np.asarray(theta)
  K = (np.abs((zn - tn) / eps) < 0.5).astype(np.float32)
  H = (zn > tn).astype(np.float32)
  g = jax.random.normal(jax.random.PRNGKey(0), z.shape)  # an arbitrary upstream gradient
  dz, dtheta = jax.grad(lambda z, t: jnp.sum(g * jumprelu.jumprelu(z, t, eps)), (0, 1))(z, theta)
  np.testing.assert_allclose(dtheta, np.sum(np.asarray(g) * -(tn / eps) * K, 0), rtol=1e-5)
  np.testing.assert_allclose(dz, np.asarray(g) * H)
  dz, dtheta = jax.grad(lambda z, t: jnp.sum(g * jumprelu.step(z, t, eps)), (0, 1))(z, theta)
  np.testing.assert_allclose(dtheta, np.sum(np.asarray(g) * -(1 / eps) * K, 0), rtol=1e-5)
  assert not np.any(np.asarray(dz))
  np.testing.assert_array_equal(jumprelu.jumprelu(z, theta, eps), zn * H)
  np.testing.assert_array_equal(jumprelu.step(z, theta, eps), H)


def test_jumprelu_gradient_wrt_x_is_the_ordinary_one_and_l0_trains_only_thresholds():
  hp = jumprelu.Hyper(n_latents=N, sparsity_coefficient=0.1, initial_threshold=0.3, bandwidth=0.5)
  params = jumprelu.init(jax.random.PRNGKey(0), D, N, None, hp)
  np.testing.assert_allclose(jumprelu.threshold(params), 0.3, rtol=1e-6)
  x = _x()
  c = jax.random.normal(jax.random.PRNGKey(5), (N,))
  gx = jax.grad(lambda x: jnp.sum(jumprelu.encode(params, x, None, hp) @ c))(x)
  pre = np.asarray(jumprelu.pre_activations(params, x))
  ordinary = ((pre > 0.3) * np.asarray(c)) @ np.asarray(params["W_enc"]).T
  np.testing.assert_allclose(gx, ordinary, rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda p: jumprelu.loss(p, x, {}, hp).sparsity_loss)(params)
  assert not np.any(np.asarray(g["W_enc"])) and not np.any(np.asarray(g["b_enc"]))
  assert not np.any(np.asarray(g["W_dec"]))
  # theta = exp(log_threshold): d/dlog_theta = theta · d/dtheta = -(theta/eps) sum K · lambda / B
  K = (np.abs(pre - 0.3) / 0.5 < 0.5).sum(0)
  assert K.sum() > 0
  np.testing.assert_allclose(g["log_threshold"], -0.1 * (0.3 / 0.5) * K / B, rtol=1e-4)
  out = jumprelu.loss(params, x, {}, hp)
  assert float(out.sparsity_loss) == pytest.approx(0.1 * float(out.l0), rel=1e-6)


def test_jumprelu_initial_threshold_must_be_positive():
  with pytest.raises(ValueError, match="initial_threshold=0.0 must be positive"):
    jumprelu.init(jax.random.PRNGKey(0), D, N, None, jumprelu.Hyper(n_latents=N, initial_threshold=0.0))


# ---------------------------------------------------------------- Gated


def test_gated_aux_term_gives_no_gradient_to_the_decoder():
  hp = _hp(gated.ARCH)
  params = gated.init(jax.random.PRNGKey(0), D, N, jnp.full((D,), 0.1))
  params = {**params, "r_mag": jnp.full((N,), 0.3), "b_mag": jnp.full((N,), -0.05)}
  x = _x()
  g_aux = jax.grad(lambda p: gated.loss(p, x, {}, hp).aux_loss)(params)
  assert not np.any(np.asarray(g_aux["W_dec"]))
  assert np.any(np.asarray(g_aux["W_enc"])) and np.any(np.asarray(g_aux["b_gate"]))
  assert not np.any(np.asarray(g_aux["r_mag"])) and not np.any(np.asarray(g_aux["b_mag"]))
  # the Heaviside gate passes no gradient: the reconstruction does not train b_gate
  g_rec = jax.grad(lambda p: gated.loss(p, x, {}, hp).normalized_mse)(params)
  assert not np.any(np.asarray(g_rec["b_gate"])) and np.any(np.asarray(g_rec["r_mag"]))


def test_gated_encoder_and_loss_are_the_papers():
  hp = _hp(gated.ARCH, sparsity_coefficient=0.2)
  params = gated.init(jax.random.PRNGKey(0), D, N, jnp.full((D,), 0.1))
  params = {**params, "r_mag": jnp.linspace(-0.5, 0.5, N), "b_mag": jnp.full((N,), -0.05),
            "b_gate": jnp.full((N,), 0.02),
            "W_dec": params["W_dec"] * jnp.linspace(0.5, 2.0, N)[:, None]}
  x, var = _x(), 2.0
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xn = np.asarray(x, np.float64)
  xc = xn - p["b_pre"]
  pi_gate = xc @ p["W_enc"] + p["b_gate"]
  pi_mag = xc @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]  # W_mag = exp(r_mag) ⊙ W_gate
  z = (pi_gate > 0) * np.maximum(pi_mag, 0)
  np.testing.assert_allclose(gated.encode(params, x), z, rtol=1e-5, atol=1e-6)
  norms = np.linalg.norm(p["W_dec"], axis=1)
  gate = np.maximum(pi_gate, 0)
  nmse = np.sum((xn - (z @ p["W_dec"] + p["b_pre"])) ** 2) / (B * var)
  aux = np.sum((xn - (gate @ p["W_dec"] + p["b_pre"])) ** 2) / (B * var)
  penalty = 0.2 * np.mean(gate @ norms)
  out = gated.loss(params, x, {}, hp, variance=var)
  assert float(out.normalized_mse) == pytest.approx(nmse, rel=1e-5)
  assert float(out.aux_loss) == pytest.approx(aux, rel=1e-5)
  assert float(out.sparsity_loss) == pytest.approx(penalty, rel=1e-5)
  assert float(out.loss) == pytest.approx(nmse + penalty + aux, rel=1e-5)


# ---------------------------------------------------------------- ReLU + L1 and KL


def test_anthropic_penalty_scales_with_decoder_norms():
  hp = _hp(relu_l1.ARCH, sparsity_coefficient=0.3)
  params = relu_l1.init(jax.random.PRNGKey(0), D, N)
  np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=1), 0.1, rtol=1e-5)
  np.testing.assert_array_equal(params["W_enc"], params["W_dec"].T)
  x = _x()
  base = float(relu_l1.loss(params, x, {}, hp).sparsity_loss)
  z = np.asarray(relu_l1.encode(params, x))
  assert base == pytest.approx(0.3 * np.mean(z.sum(-1)) * 0.1, rel=1e-5)
  scale = np.ones((N, 1), np.float32)
  scale[:N // 2] = 3.0  # triple the norms of half the decoder rows; the code is unchanged
  doubled = {**params, "W_dec": params["W_dec"] * scale}
  expect = 0.3 * np.mean(z @ (0.1 * scale[:, 0]))
  assert float(relu_l1.loss(doubled, x, {}, hp).sparsity_loss) == pytest.approx(expect, rel=1e-5)
  assert float(relu_l1.loss(doubled, x, {}, hp).sparsity_loss) > base
  g = jax.grad(lambda p: relu_l1.loss(p, x, {}, hp).sparsity_loss)(params)
  assert np.any(np.asarray(g["W_dec"]))  # the decoder norms are trained by the penalty
  assert not relu_l1.ARCH.unit_norm_decoder and relu_l1_unit_norm.ARCH.unit_norm_decoder


def test_unit_norm_relu_l1_penalty_is_plain_l1():
  hp = _hp(relu_l1_unit_norm.ARCH, sparsity_coefficient=0.3)
  params = relu_l1_unit_norm.init(jax.random.PRNGKey(0), D, N, jnp.full((D,), 0.2))
  x = _x()
  pre = (np.asarray(x) - 0.2) @ np.asarray(params["W_enc"]) + np.asarray(params["b_enc"])
  z = np.maximum(pre, 0)
  out = relu_l1_unit_norm.loss(params, x, {}, hp)
  assert float(out.sparsity_loss) == pytest.approx(0.3 * np.mean(z.sum(-1)), rel=1e-5)


def test_kl_penalty_equals_its_formula():
  rho = 0.05
  q = np.array([0.001, 0.03, 0.05, 0.2, 0.7, 0.95], np.float64)
  formula = rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q))
  np.testing.assert_allclose(kl.kl_divergence(rho, jnp.asarray(q, jnp.float32)), formula,
                             rtol=1e-4)
  assert float(kl.kl_divergence(rho, jnp.asarray(0.05))) == pytest.approx(0.0, abs=1e-7)
  hp = _hp(kl.ARCH, sparsity_coefficient=0.5, target_activation=rho)
  params = kl.init(jax.random.PRNGKey(0), D, N)
  x = _x() * 0.2
  z = np.maximum(np.asarray(x) @ np.asarray(params["W_enc"]), 0).astype(np.float64)
  rho_hat = z.mean(0)
  assert 0 < rho_hat.min() and rho_hat.max() < 0.99
  expect = 0.5 * np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
  out = kl.loss(params, x, {}, hp)
  assert float(out.sparsity_loss) == pytest.approx(expect, rel=1e-4)


def test_kl_penalty_stays_finite_and_increasing_outside_0_1():
  q = jnp.asarray([0.0, 0.5, 0.99, 1.0, 3.0])
  v = np.asarray(kl.kl_divergence(0.05, q))
  assert np.all(np.isfinite(v)) and v[2] < v[3] < v[4]
  slope = jax.grad(lambda q: kl.kl_divergence(0.05, q))(3.0)
  assert float(slope) > 0
  with pytest.raises(ValueError, match="target_activation=1.5 must be in"):
    kl.kl_divergence(1.5, q)


# ---------------------------------------------------------------- the zoo sweep


def test_architectures_sweep_covers_the_zoo_and_every_point_resolves():
  from sweeps import launch  # pylint: disable=import-outside-toplevel
  base, points = launch.load_sweep("sweeps/architectures.py")
  by_arch = {}
  for p in points:
    c = config.resolve(overrides.apply(base, p), d_in=576)  # the knob rule holds for each
    by_arch.setdefault(c.sae.architecture, set()).add(c.sae[saes.get(c.sae.architecture).knob])
  assert sorted(by_arch) == saes.names()
  assert all(len(v) >= 3 for v in by_arch.values())  # several sparsities per architecture
  assert len({overrides.apply(base, p).sae.input_norm for p in points}) == 1  # one nMSE space


@pytest.mark.parametrize("name", ALL)
def test_every_architecture_exposes_the_same_interface(name):
  """The interface of `sae_jax.saes.base`: every module (TopK included) has the five
  functions under the same names, with the same parameter names, and its ARCH uses them."""
  arch = saes.get(name)
  module = importlib.import_module("sae_jax.saes." + {"matryoshka_batchtopk": "matryoshka"}.get(name, name))
  expected = {"init": ["key", "d_in", "n_latents", "b_pre_D", "hp"],
              "init_extras": ["n_latents", "hp"],
              "encode": ["params", "x_BxD", "extras", "hp"],
              "decode": ["params", "z_BxN"],
              "loss": ["params", "x_BxD", "extras", "hp", "variance", "dead_N"]}
  for fn, params in expected.items():
    assert list(inspect.signature(getattr(module, fn)).parameters) == params, (name, fn)
    assert getattr(arch, fn) is getattr(module, fn), (name, fn)
  assert issubclass(arch.hyper, saes.Hyper) and arch.hyper is module.Hyper
  assert arch.fields() and arch.knob in {f.name for f in arch.fields()}


# ---------------------------------------------------------------- AuxK and "fired" (issue 14)


def test_auxk_is_openais_normalized_mse_by_hand():
  """AuxK = sum ||e - W_dec z_aux||^2 / sum ||e - mean_b e||^2, z_aux the top-k_aux ReLU'd
  pre-activations of the dead latents (Gao et al. 2024, A.2; OpenAI's `normalized_mse`):
  numpy by hand against the dense and the sparse path."""
  from sae_jax.saes import topk
  rng = np.random.default_rng(0)
  params = topk.init(jax.random.PRNGKey(0), D, N)
  pre = jnp.asarray(rng.normal(size=(B, N)), jnp.float32)
  e = jnp.asarray(rng.normal(size=(B, D)) + 2.0, jnp.float32)  # a mean, which must not count
  dead = np.arange(N) % 3 == 0
  k_aux = 5
  P, W = np.asarray(pre, np.float64), np.asarray(params["W_dec"], np.float64)
  z = np.zeros_like(P)
  for b in range(B):
    cand = np.where(dead, P[b], -np.inf)
    top = np.argsort(-cand)[:k_aux]
    z[b, top] = np.maximum(cand[top], 0)
  E = np.asarray(e, np.float64)
  by_hand = np.sum((E - z @ W) ** 2) / np.sum((E - E.mean(0)) ** 2)
  got = topk._auxk_loss(params, pre, e, jnp.asarray(dead), k_aux)  # pylint: disable=protected-access
  assert float(got) == pytest.approx(by_hand, rel=1e-5)
  # the sparse path recomputes the pre-activations from x: give it x with pre = W_enc(x - b_pre)
  x = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
  pre_x = topk.pre_activations(params, x)
  got_sparse = topk.sparse_auxk(params, pre_x, x, e, jnp.asarray(dead), k_aux, "xla")
  got_dense = topk._auxk_loss(params, pre_x, e, jnp.asarray(dead), k_aux)  # pylint: disable=protected-access
  assert float(got_sparse) == pytest.approx(float(got_dense), rel=1e-5)
  assert by_hand != pytest.approx(np.sum((E - z @ W) ** 2) / np.sum(E ** 2), rel=1e-2)


@pytest.mark.parametrize("name", ALL)
def test_a_latent_fires_above_the_threshold_only(name):
  """fired_N is z > fired_threshold (OpenAI: 1e-3); L0 still counts every non-zero z."""
  arch = saes.get(name)
  params = arch.init(jax.random.PRNGKey(0), D, N, None, _hp(arch))
  x, extras = _x(), arch.init_extras(N, _hp(arch))
  z = arch.encode(params, x, extras, _hp(arch))
  impls = (None, "xla") if arch.sparse_step else (None,)
  for threshold, impl in [(t, i) for t in (0.0, float(np.quantile(np.asarray(z)[np.asarray(z) > 0], 0.9)))
                          for i in impls]:
    hp = _hp(arch, fired_threshold=threshold, sparse_impl=impl)
    out = arch.loss(params, x, extras, hp, dead_N=jnp.zeros((N,), bool))
    z_train = np.asarray(z)
    if name in ("batchtopk", "matryoshka_batchtopk"):  # training uses the batch top-k code
      z_train = np.asarray(batchtopk.batch_topk(batchtopk.pre_activations(params, x), 4))
    np.testing.assert_array_equal(np.asarray(out.fired_N), np.any(z_train > threshold, axis=0))
    assert float(out.l0) == pytest.approx(np.mean(np.sum(z_train != 0, axis=-1)))


def test_jumprelu_tanh_penalty_and_preact_loss_by_hand():
  """Conerly et al. 2025: lambda · mean_b sum_i tanh(c z_i ||W_dec,i||) and preact_coef ·
  mean_b sum_{i dead} ReLU(theta_i - pre_i) ||W_dec,i||, computed in numpy."""
  arch = saes.get("jumprelu")
  hp = _hp(arch, penalty="tanh", tanh_c=4.0, preact_coef=0.3, initial_threshold=0.2)
  params = arch.init(jax.random.PRNGKey(0), D, N, None, hp)
  params["W_dec"] = params["W_dec"] * jnp.linspace(0.5, 2.0, N)[:, None]  # unequal norms
  x, dead = _x(), jnp.arange(N) % 3 == 0
  out = arch.loss(params, x, {}, hp, variance=2.0, dead_N=dead)
  P = {k: np.asarray(v, np.float64) for k, v in params.items()}
  X = np.asarray(x, np.float64)
  pre = X @ P["W_enc"] + P["b_enc"]
  theta = np.exp(P["log_threshold"])
  z = np.where(pre > theta, pre, 0)
  norms = np.linalg.norm(P["W_dec"], axis=-1)
  nmse = np.sum((X - z @ P["W_dec"] - P["b_pre"]) ** 2) / (B * 2.0)
  tanh = np.mean(np.sum(np.tanh(4.0 * z * norms), axis=-1))
  preact = np.mean(np.sum(np.where(np.asarray(dead), np.maximum(theta - pre, 0) * norms, 0), axis=-1))
  assert float(out.sparsity_loss) == pytest.approx(0.05 * tanh, rel=1e-5)
  assert float(out.aux_loss) == pytest.approx(preact, rel=1e-5)
  assert float(out.loss) == pytest.approx(nmse + 0.05 * tanh + 0.3 * preact, rel=1e-5)
  # the pre-activation loss raises the dead latents' pre-activations only
  g = jax.grad(lambda p: jumprelu.preact_loss(
      jumprelu.pre_activations(p, x), jumprelu.threshold(p), jnp.ones((N,)), dead))(params)
  assert np.all(np.asarray(g["b_enc"])[~np.asarray(dead)] == 0)
  assert np.all(np.asarray(g["b_enc"])[np.asarray(dead)] <= 0) and np.any(np.asarray(g["b_enc"]) < 0)
  with pytest.raises(config.ConfigError, match="sae.penalty='l1' must be"):
    arch.make_hyper({"penalty": "l1"}, n_latents=N)
