"""Tests of analysis.forecast (`sae-jax predict`, `sae-jax plan`) and of the L(N, D)
allocation (Hoffmann et al. 2022, Approach 3) on planted runs."""

import importlib.util
import json
import math
import warnings

import numpy as np
import pytest

from analysis import forecast, optimal
from sae_jax import cli

KAPPA = 12 * 576
E, A_EXP, B_EXP = 0.02, 0.3, 0.3


def _runs(seed=0, ns=2.0 ** np.arange(10, 16)):
  """6 runs, each evaluated at 24 token counts up to 4 n_latents: L = E + N^-0.3 + D^-0.3,
  2% run-level and 0.5% point-level lognormal noise."""
  rng = np.random.default_rng(seed)
  recs = []
  for n in ns:
    run = float(np.exp(rng.normal(0, 0.02)))
    for i, d in enumerate(np.geomspace(n / 64, 4 * n, 24)):
      recs.append({"sweep": "planted", "run_id": f"n{int(n)}", "architecture": "topk", "k": 32,
                   "n_latents": int(n), "tokens": float(d), "flops": KAPPA * n * d,
                   "final": i == 23, "lr": 2e-4 / math.sqrt(n / 2 ** 14),
                   "normalized_mse": (E + n ** -A_EXP + d ** -B_EXP) * run
                   * float(np.exp(rng.normal(0, 0.005))),
                   "config": {"data": {"model": "smollm2", "layer": 15},
                              "train": {"batch_size": 512}}})
  return recs


def _truth(n, d):
  return E + n ** -A_EXP + d ** -B_EXP


def test_allocation_exponent_is_reported_once_with_its_complement():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = optimal.chinchilla_allocation(_runs(), n_bootstrap=0)
  assert out["n_opt_exponent"] + out["tokens_opt_exponent"] == pytest.approx(1.0)
  lo, hi = out["n_opt_exponent_ci95"]
  assert lo < 0.5 < hi and hi - lo < 0.5  # planted beta / (alpha + beta) = 0.5
  assert out["kappa"] == pytest.approx(KAPPA)
  assert out["runs"] == sorted(f"planted/n{int(n)}" for n in 2.0 ** np.arange(10, 16))
  assert out["fit"]["ci95_method"].startswith("t (5 dof) x the larger of the cluster-robust")


def test_predict_inside_the_range_covers_the_truth():
  recs = _runs()
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)  # inside the range: no extrapolation warning
    out = forecast.predict(recs, 4096, 32, 8192)
  lo, hi = out["interval"]
  assert lo < out["loss"] < hi
  # the new run's own 2% noise is part of a prediction interval: the truth is inside
  assert lo < _truth(4096, 8192) < hi and abs(out["loss"] / _truth(4096, 8192) - 1) < 0.03
  assert out["extrapolation"] == [] and out["flops"] == pytest.approx(KAPPA * 4096 * 8192)


def test_predict_outside_the_range_warns_with_the_factor():
  with pytest.warns(UserWarning, match=r"n_latents=2.621e\+05 is 8x outside the fitted range"):
    out = forecast.predict(_runs(), 2 ** 18, 32, 2 ** 16)
  assert out["interval"][1] / out["interval"][0] > 1.0


def test_plan_puts_compute_where_the_planted_law_is_lowest(tmp_path, capsys):
  recs = _runs()
  C = 4 * max(r["flops"] for r in recs)
  with pytest.warns(UserWarning, match=r"flops=.* is 4x outside"):
    out = forecast.plan(recs, C, 32)
  n_true = math.sqrt(C / KAPPA)  # alpha = beta, A = B: n* = D* = sqrt(C / kappa)
  assert 0.5 < out["n_latents"] / n_true < 2.0
  assert out["n_latents"] * out["tokens"] * KAPPA == pytest.approx(C)
  lo, hi = out["interval"]
  assert lo < _truth(out["n_latents"], out["tokens"]) < hi
  assert out["lr"] == pytest.approx(2e-4 / math.sqrt(out["n_latents"] / 2 ** 14), rel=1e-6)

  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in recs))
  sweep = tmp_path / "plan.py"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert cli.main(["plan", str(path), "--compute", f"{C:g}", "--write", str(sweep)]) == 0
  printed = capsys.readouterr().out
  assert "n_latents* =" in printed and "its complement" in printed and "wrote" in printed
  spec = importlib.util.spec_from_file_location("plan_sweep", sweep)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  (point,) = module.get_sweep()
  assert point["sae.k"] == 32 and point["sae.n_latents"] % 64 == 0
  assert abs(point["sae.n_latents"] / out["n_latents"] - 1) < 0.01
  c = module.get_config()
  assert c.data.layer == 15 and c.train.batch_size == 512 and c.train.token_budget % 512 == 0
  # a second --write to the same file is a one-line error; the file is kept
  before = sweep.read_text()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert cli.main(["plan", str(path), "--compute", f"{C:g}", "--write", str(sweep)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "exists" in err and sweep.read_text() == before


def test_predict_cli_prints_one_line_and_needs_k_when_several(tmp_path, capsys):
  recs = _runs() + [dict(r, k=8, run_id=r["run_id"] + "_k8") for r in _runs(seed=1)]
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in recs))
  assert cli.main(["predict", str(path), "--n-latents", "4096", "--tokens", "8192"]) == 2
  assert "pick one with --k" in capsys.readouterr().err
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert cli.main(["predict", str(path), "--n-latents", "4096", "--k", "32",
                     "--tokens", "8192"]) == 0
  out = capsys.readouterr().out
  assert out.count("\n") == 1 and "95% prediction interval" in out and out.startswith("k=32")
