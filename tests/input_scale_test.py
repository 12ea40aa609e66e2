"""The input scale s (`sae.input_scale`) and the silent-knob check (issue 19).

* Every penalty architecture's loss is invariant under scaling the inputs by c when the
  SAE's activations scale with them (biases and thresholds times c, weights unchanged)
  and s becomes c·s: the knobs are in units of s, so one lambda means the same at every
  input normalisation. JumpReLU's bandwidth and initial threshold follow s.
* `config.resolve` measures s from the training split's statistics: 1 for unit_norm, the
  RMS token norm after the mean_norm constant or of the raw inputs.
* `diagnostics.KnobCheck` warns once when the knob is silent (here: JumpReLU on raw inputs
  with the pre-issue absolute threshold), the trainer writes it into the records, and the
  fits and the sweep summary repeat it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import report, sweep_fits
from sae_jax import config, overrides, saes
from sae_jax.data import batches, synthetic
from sae_jax.saes import base, jumprelu
from sae_jax.training import diagnostics, step, trainer

PENALTY_ARCHITECTURES = ("jumprelu", "gated", "relu_l1", "relu_l1_unit_norm", "kl")
D, N, B = 16, 64, 64
SCALED_PARAMS = ("b_enc", "b_pre", "b_gate", "b_mag")  # lengths in input space


def _scaled(params: dict, c: float) -> dict:
  out = {k: (v * c if k in SCALED_PARAMS else v) for k, v in params.items()}
  if "log_threshold" in params:
    out["log_threshold"] = params["log_threshold"] + math.log(c)
  return out


@pytest.mark.parametrize("name", PENALTY_ARCHITECTURES)
def test_the_loss_is_invariant_under_input_scaling(name):
  arch = saes.get(name)
  s, c, variance = 1.7, 3.5, 2.0
  hp = arch.hyper(n_latents=N, sparsity_coefficient=0.05, input_scale=s)
  hp_c = arch.hyper(n_latents=N, sparsity_coefficient=0.05, input_scale=c * s)
  key_x, key_b, key_p = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(key_x, (B, D)) + 0.3
  params = arch.init(key_p, D, N, jnp.full((D,), 0.1), hp)
  for k in ("b_enc", "b_gate", "b_mag"):  # non-zero biases, so their scaling matters
    if k in params:
      params[k] = 0.05 * jax.random.normal(key_b, (N,))
  if "log_threshold" in params:  # thresholds spread through the pre-activations
    params["log_threshold"] = jnp.log(jnp.linspace(0.02, 1.0, N))
  out = arch.loss(params, x, {}, hp, variance=variance, dead_N=jnp.zeros(N, bool))
  out_c = arch.loss(_scaled(params, c), c * x, {}, hp_c, variance=c**2 * variance,
                    dead_N=jnp.zeros(N, bool))
  assert 0 < float(out.l0) < N and float(out.sparsity_loss) > 0
  for field in ("normalized_mse", "sparsity_loss", "aux_loss", "l0", "loss"):
    assert float(getattr(out_c, field)) == pytest.approx(float(getattr(out, field)),
                                                         rel=2e-4, abs=1e-7), field
  if name == "jumprelu":  # the straight-through gradients reach the same thresholds
    g = jax.grad(lambda p: arch.loss(p, x, {}, hp, variance=variance).loss)(params)
    g_c = jax.grad(lambda p: arch.loss(p, c * x, {}, hp_c, variance=c**2 * variance).loss)(
        _scaled(params, c))
    assert np.any(np.asarray(g["log_threshold"]))
    np.testing.assert_allclose(g_c["log_threshold"], g["log_threshold"], rtol=1e-3, atol=1e-7)


def test_jumprelu_bandwidth_and_initial_threshold_are_in_units_of_s():
  hp = jumprelu.Hyper(n_latents=N, input_scale=4.0)
  assert jumprelu.bandwidth(hp) == pytest.approx(4e-3)  # Gemma Scope's 1e-3 at s = 1
  params = jumprelu.init(jax.random.PRNGKey(0), D, N, None, hp)
  np.testing.assert_allclose(jumprelu.threshold(params), 0.05 * 4.0, rtol=1e-6)
  unset = jumprelu.Hyper(n_latents=N)  # a Hyper built by hand: s = 1
  assert base.scale(unset) == 1.0 and jumprelu.bandwidth(unset) == pytest.approx(1e-3)


def test_resolve_measures_the_input_scale_from_the_statistics():
  x = np.random.default_rng(0).normal(size=(4096, 8)).astype(np.float32) * 3 + 1
  stats = batches.ArraySource({"train": x, "eval": x}).stats
  rms = float(np.sqrt((x.astype(np.float64) ** 2).sum(1).mean()))
  mean_norm = float(np.linalg.norm(x.astype(np.float64), axis=1).mean())
  want = {"unit_norm": 1.0, "none": rms, "mean_norm": rms * np.sqrt(8) / mean_norm}
  for norm, s in want.items():
    c = overrides.apply(config.default_config(), {"sae.input_norm": norm,
                                                  "sae.architecture": "jumprelu"})
    assert config.resolve(c, 8).sae.input_scale is None  # not measured without statistics
    r = config.resolve(c, 8, stats)
    assert r.sae.input_scale == pytest.approx(s, rel=1e-6), norm
    assert step.hyper(r).input_scale == pytest.approx(s, rel=1e-6)
    xn = np.asarray(batches.normalize(jnp.asarray(x), norm, batches.norm_scale(norm, stats, 8)))
    assert np.sqrt((xn.astype(np.float64) ** 2).sum(1).mean()) == pytest.approx(s, rel=1e-4)
  c = overrides.apply(config.default_config(), {"sae.input_scale": 2.5})
  assert config.resolve(c, 8, stats).sae.input_scale == 2.5  # set by hand: kept
  with pytest.raises(config.ConfigError, match=r"sae.input_scale=-1.0 must be a positive"):
    config.resolve(overrides.apply(config.default_config(), {"sae.input_scale": -1.0}))


def _knob(probes: list[dict], **hp) -> diagnostics.KnobCheck:
  arch = saes.get("jumprelu")
  sc = step.StepConfig("jumprelu", arch.hyper(n_latents=N, **hp), 10**6, "none")
  check = diagnostics.KnobCheck(sc, n_steps=1000, lr=1e-3)
  check.probes = probes
  return check


def test_knob_check_verdicts():
  ok = {"sparsity_grad_norm": 0.1, "l0": 40.0, "input_rms": 3.0, "threshold_log_gap": 0.5}
  assert _knob([ok, {**ok, "l0": 20.0}], input_scale=3.0).verdict(100) is None
  # no gradient at any probe
  w = _knob([{**ok, "sparsity_grad_norm": 0.0}] * 3, input_scale=3.0).verdict(100)
  assert "sae.sparsity_coefficient=0.01 (jumprelu) is silent" in w
  assert "passes no gradient" in w and "bandwidth / 2 = 0.0015" in w
  # thresholds far below the activations and out of Adam's reach (1e-3 x 900 steps), with
  # the cause: an input scale set by hand that disagrees with the inputs' RMS norm
  far = {**ok, "threshold_log_gap": 5.0}
  w = _knob([far, {**far, "l0": 20.0}], input_scale=1.0).verdict(100)
  assert "~148x below the mean activation" in w
  assert "sae.input_scale=1 but the inputs' RMS norm is 3" in w
  # the same with a matching input scale: the cause is the threshold's own setting
  w = _knob([far, {**far, "l0": 20.0}], input_scale=3.0).verdict(100)
  assert "sae.bandwidth=0.001 and sae.initial_threshold=0.05 (units of s=3)" in w
  # far, but Adam can still close the gap in the steps left: no warning
  check = _knob([far, {**far, "l0": 20.0}], input_scale=3.0)
  check.n_steps = 10**5
  assert check.verdict(100) is None
  # L0 frozen although the penalty is on (at every probe, not only the first and last)
  w = _knob([ok, {**ok, "l0": 40.2}, {**ok, "l0": 40.1}], input_scale=3.0).verdict(100)
  assert "L0 stayed at 40.1" in w
  assert _knob([ok, {**ok, "l0": 30.0}, {**ok, "l0": 40.1}], input_scale=3.0).verdict(9) is None


def _tiny_config(**sae) -> config.ml_collections.ConfigDict:
  c = config.default_config()
  c.sae.architecture, c.sae.n_latents, c.sae.input_norm = "jumprelu", N, "none"
  c.sae.geometric_median_samples = 1024
  for k, v in sae.items():
    c.sae[k] = v
  c.train.batch_size, c.train.token_budget = 128, 128 * 100
  c.train.n_eval_points, c.train.checkpoint_every_steps, c.train.n_devices = 2, 10**6, 1
  c.train.first_eval_fraction = 0.5  # evaluations at steps 50 and 100, after the check's 10
  return c


def test_a_silent_jumprelu_knob_warns_once_and_the_records_and_fits_repeat_it(tmp_path):
  gen = synthetic.GeneratorConfig(d_in=D, n_features=64, mean_active=4, n_parents=2)
  source = synthetic.SyntheticSource(gen, n_train=8192, n_eval=1024)
  configs = [_tiny_config(),  # scale-aware defaults: silent-free
             _tiny_config(input_scale=1.0, initial_threshold=1e-3)]  # pre-issue units
  dirs = [str(tmp_path / "new"), str(tmp_path / "old")]
  infos = [{"sweep": "t", "run_id": "new"}, {"sweep": "t", "run_id": "old"}]
  with pytest.warns(UserWarning) as caught:
    records = trainer.train_many(configs, source, dirs, infos, progress=False)
  ours = [str(w.message) for w in caught if "is silent" in str(w.message)]
  assert len(ours) == 1 and ours[0].startswith("old: sae.sparsity_coefficient=0.01 (jumprelu)")
  assert "sae.input_scale=1 but the inputs' RMS norm is" in ours[0]
  assert records[0][-1]["config"]["sae"]["input_scale"] == pytest.approx(
      np.sqrt(source.stats["mean_sq_norm"]))
  assert all(r["run_warnings"] == [] for r in records[0])
  assert all(r["run_warnings"] == [ours[0][len("old: "):]] for r in records[1])
  flat = records[0] + records[1]
  assert sweep_fits.collect_run_warnings(flat) == {"old": records[1][-1]["run_warnings"]}
  fits = {"n_records": 4, "n_runs": 2, "sweeps": ["t"], "L_N": {}, "L_C": {},
          "run_warnings": sweep_fits.collect_run_warnings(flat)}
  assert "warning, run old: sae.sparsity_coefficient=0.01 (jumprelu) is silent" in (
      report.summary(fits))


def test_knob_check_waits_for_the_lambda_warmup():
  """While lambda ramps up (issue 14's train.sparsity_warmup_steps) a still L0 is expected:
  the probes start once lambda is at full strength, and a warm-up that leaves no room for
  the window turns the check off."""
  arch = saes.get("jumprelu")
  hp = arch.hyper(n_latents=N, input_scale=3.0)
  plain = diagnostics.KnobCheck(step.StepConfig("jumprelu", hp, 10**6, "none"), 1000, 1e-3)
  assert plain.active and plain.probe_steps[0] == 1 and plain.probe_steps[-1] == 100
  ramped = diagnostics.KnobCheck(step.StepConfig("jumprelu", hp, 10**6, "none", 300), 1000, 1e-3)
  assert ramped.active and ramped.probe_steps[0] == 301 and ramped.probe_steps[-1] == 400
  late = diagnostics.KnobCheck(step.StepConfig("jumprelu", hp, 10**6, "none", 950), 1000, 1e-3)
  assert not late.active
