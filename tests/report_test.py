"""Tests of analysis.report / results: a synthetic sweep goes end to end to fits.json and
six plot files; failures leave an existing fits.json untouched."""

import json
import os
import warnings

import numpy as np
import pytest

from analysis import fit_sweep, load_results
from analysis.report import EXTRAPOLATION_STEMS, PLOT_STEMS, main
from sae_jax.errors import ConfigError

D_IN = 64
ALPHA_N = 0.5  # planted L(N) exponent


def _write_sweep(path, seed=0):
  """A 4 n_latents x 2 k sweep, 5 evaluation points per run, from a planted law:
  L = 0.02 + A_k * n^-0.5 + 3 * tokens^-0.3 (1% lognormal noise); flops = 12 d_in n tokens."""
  rng = np.random.default_rng(seed)
  budget = 2**19
  with open(path, "w") as f:
    for k, A in ((16, 6.0), (32, 4.0)):
      for n in (1024, 2048, 4096, 8192):
        for i, tokens in enumerate(budget // 2 ** np.arange(4, -1, -1)):
          loss = (0.02 + A * n**-ALPHA_N + 3 * float(tokens) ** -0.3) * np.exp(rng.normal(0, 0.01))
          rec = {"sweep": "synthetic", "run_id": f"n{n}_k{k}", "architecture": "topk",
                 "n_latents": n, "k": k, "d_in": D_IN, "tokens": int(tokens), "step": i,
                 "final": i == 4, "flops": 12.0 * D_IN * n * float(tokens),
                 "normalized_mse": loss, "mse": loss * 1e-3, "l0": float(k),
                 "dead_fraction": 0.0, "model": "smollm2", "layer": 15,
                 "config": {"sae": {"n_latents": n, "k": k}}}
          f.write(json.dumps(rec) + "\n")


def test_fit_sweep_writes_fits_and_plots(tmp_path):
  _write_sweep(tmp_path / "results.jsonl")
  with pytest.warns(UserWarning, match="8 of 8 runs have not converged"):
    # out dir defaults to the file's dir
    fits = fit_sweep(str(tmp_path / "results.jsonl"), n_bootstrap=50)
  on_disk = json.loads((tmp_path / "fits.json").read_text())
  assert on_disk == json.loads(json.dumps(fits))
  stems = PLOT_STEMS + EXTRAPOLATION_STEMS  # both extrapolations: L(N) and L(C) are fitted
  for stem in stems:
    for ext in ("png", "pdf"):
      assert (tmp_path / "plots" / f"{stem}.{ext}").stat().st_size > 1000
  assert sorted(os.listdir(tmp_path / "plots")) == sorted(
      f"{s}.{e}" for s in stems for e in ("png", "pdf"))  # no temp files left
  assert sorted(fits["plots"]) == sorted(f"plots/{s}.{e}" for s in stems for e in ("png", "pdf"))
  # Every law has a result or a one-line reason; the table's lr is fixed, so lr_opt is skipped.
  assert "params" in fits["L_NK"] and set(fits["L_C"]) == {"k=16", "k=32"}
  assert fits["groups"] == ["k=16", "k=32"] and set(fits["L_C_envelope"]) == {"all"}
  assert all("skipped" in v for v in fits["lr_opt"].values())
  assert fits["convergence"]["n_unconverged"] == 8  # 3 t^-0.3: still falling 19% per doubling
  assert set(fits["L_N"]) == {"k=16", "k=32"}
  for entry in fits["L_N"].values():
    assert entry["power_law"]["params"]["alpha"] > 0
    irr = entry["irreducible"]["params"]
    assert abs(irr["alpha"] / ALPHA_N - 1) < 0.25  # 4 points, 1% noise
  assert all(e["params"]["alpha"] > 0 for e in fits["L_C"].values())
  assert fits["n_records"] == 40 and fits["n_runs"] == 8


def test_filters_and_cli(tmp_path, capsys):
  _write_sweep(tmp_path / "results.jsonl")
  assert {r["k"] for r in load_results(tmp_path, k="32")} == {32}
  out = tmp_path / "k32"
  assert main([str(tmp_path), "--out", str(out), "--filter", "k=32", "--filter", "layer=15",
               "--bootstrap", "50", "--convergence", "exclude"]) == 0
  fits = json.loads((out / "fits.json").read_text())
  assert fits["filters"] == {"k": "32", "layer": "15"} and fits["n_runs"] == 4
  assert fits["settings"]["n_bootstrap"] == 50 and fits["settings"]["convergence"] == "exclude"
  # Every run is unconverged here, so excluding them leaves L(N) nothing to fit -- and says so.
  assert list(fits["L_N"]) == ["all"] and "every run is unconverged" in fits["L_N"]["all"]["error"]
  assert list(fits["compute_optimal"]) == ["k=32"]
  out_text = capsys.readouterr().out
  assert "L(C) frontier" in out_text and "4 of 4 runs not converged (excluded" in out_text


def test_filter_matching_nothing_names_the_filter(tmp_path):
  _write_sweep(tmp_path / "results.jsonl")
  with pytest.raises(ConfigError, match=r"match layer=3 .*layer in \[15\]"):
    load_results(tmp_path / "results.jsonl", layer=3)
  with pytest.raises(ConfigError, match="filter 'lyr' matches no field"):
    load_results(tmp_path / "results.jsonl", lyr=3)


def test_missing_file_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="results file not found"):
    load_results(tmp_path / "nope.jsonl")
  with pytest.raises(ConfigError, match="no results.jsonl in directory"):
    load_results(tmp_path)


def test_failed_fit_sweep_keeps_the_old_fits_json(tmp_path, capsys):
  old = '{"old": true}\n'
  (tmp_path / "fits.json").write_text(old)
  (tmp_path / "results.jsonl").write_text("")
  with pytest.raises(ConfigError, match="empty"):
    fit_sweep(tmp_path / "results.jsonl")
  assert (tmp_path / "fits.json").read_text() == old
  assert main([str(tmp_path / "results.jsonl")]) == 2  # CLI: one-line error, exit 2
  assert capsys.readouterr().err.startswith("error: no records")
  assert (tmp_path / "fits.json").read_text() == old
  assert sorted(os.listdir(tmp_path)) == ["fits.json", "results.jsonl"]


def test_fit_any_measure_of_the_records(tmp_path):
  """`sae-jax fit --loss delta_ce`: the laws fit a suite measure (here a planted
  ΔCE = 2 n^-0.4) into fits_delta_ce.json and plots/delta_ce/, leaving fits.json alone."""
  path = tmp_path / "results.jsonl"
  _write_sweep(path)
  rows = [json.loads(line) for line in open(path)]
  for r in rows:
    r["delta_ce"] = 2.0 * r["n_latents"] ** -0.4 * (1 + 0.1 * r["tokens"] ** -0.5)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  fits = fit_sweep(str(path), n_bootstrap=0, loss_key="delta_ce")
  assert not (tmp_path / "fits.json").exists()
  assert (tmp_path / "fits_delta_ce.json").exists()
  assert (tmp_path / "plots" / "delta_ce" / "loss_vs_n_latents.png").exists()
  for key in ("k=16", "k=32"):
    assert fits["L_N"][key]["power_law"]["params"]["alpha"] == pytest.approx(0.4, rel=0.05)


# --- issue 21: degenerate refits, duplicates, one n_latents, all-or-nothing outputs ------------

EQ3 = dict(alpha=-0.5, beta_k=-0.3, beta_n=-0.2, gamma=-0.05, zeta=-4.0, eta=-0.1)


def _eq3_records(seed=0, ns=2 ** np.arange(10, 16), ks=2 ** np.arange(3, 8)):
  """Gao et al. Eq. 3 planted over 6 n_latents x 5 k, 2% lognormal noise, two evaluations
  per run (the final one at 2^20 tokens)."""
  rng = np.random.default_rng(seed)
  out = []
  for n in ns:
    for k in ks:
      ln, lk = np.log(n), np.log(k)
      L = (np.exp(EQ3["alpha"] + EQ3["beta_k"] * lk + EQ3["beta_n"] * ln + EQ3["gamma"] * lk * ln)
           + np.exp(EQ3["zeta"] + EQ3["eta"] * lk))
      for tokens in (2 ** 18, 2 ** 20):
        loss = L * (1 + (2 ** 18 / tokens) * 0.1) * np.exp(rng.normal(0, 0.02))
        out.append({"sweep": "eq3", "run_id": f"n{n}_k{k}", "architecture": "topk",
                    "n_latents": int(n), "k": int(k), "d_in": D_IN, "tokens": tokens,
                    "step": tokens // 1024, "final": tokens == 2 ** 20,
                    "flops": 12.0 * D_IN * n * tokens, "normalized_mse": float(loss)})
  return out


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_zero_bootstrap_refit_still_fits_and_plots(tmp_path, monkeypatch):
  """A bootstrap refit whose log c runs to -inf stores c = 0.0; the issue's `math domain
  error` came from the band taking its log. Such refits are left out and counted, and
  fits.json and every plot are written."""
  from analysis import fitting
  real, calls = fitting._minimise, []

  def minimise(Fs, logy, starts, delta, ftol=1e-15):
    theta, f = real(Fs, logy, starts, delta, ftol)
    calls.append(1)
    if ftol == 1e-12 and theta is not None and len(theta) == 3 and len(calls) % 4 == 0:
      theta = theta.copy()
      theta[2] = -1000.0  # log c: exp underflows to 0.0
    return theta, f

  monkeypatch.setattr(fitting, "_minimise", minimise)
  _write(tmp_path / "results.jsonl", _eq3_records())
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fits = fit_sweep(tmp_path / "results.jsonl", n_bootstrap=40)
  irr = [e["irreducible"] for e in fits["L_N"].values() if "params" in e["irreducible"]]
  assert irr and sum(f["n_bootstrap_excluded"] for f in irr) > 0
  for f in irr:
    assert all(row[2] > 0 for row in f["bootstrap"])  # no zero c left in the samples
    if f["n_bootstrap_excluded"]:
      assert "were left out" in f["note"]
  on_disk = json.loads((tmp_path / "fits.json").read_text())
  for rel in on_disk["plots"]:
    assert (tmp_path / rel).stat().st_size > 1000


def test_band_of_an_old_fits_json_with_a_zero_refit():
  """fits.json files written before the fix hold refits with c = 0.0 (or null): the band
  is computed from the others instead of failing."""
  from analysis.fitting import LawFit, fit_law
  n = 2.0 ** np.arange(6, 16)
  y = (3 * n ** -0.5 + 0.02) * np.exp(np.random.default_rng(0).normal(0, 0.02, n.shape))
  fit = fit_law("power_law_irreducible", n, y, n_bootstrap=30)
  assert fit.bootstrap
  d = fit.to_dict()
  good = LawFit.from_dict(d).predict_band(n)
  d["bootstrap"] = d["bootstrap"] + [[3.0, 0.5, 0.0], [3.0, 0.5, None]]
  lo, hi = LawFit.from_dict(d).predict_band(n)
  assert np.all(np.isfinite(lo)) and np.all(lo <= hi)
  np.testing.assert_allclose(lo, good[0], rtol=0.2)


def test_failed_plot_leaves_old_fits_and_plots_together(tmp_path, monkeypatch):
  from analysis import plots
  _write_sweep(tmp_path / "results.jsonl")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit_sweep(tmp_path / "results.jsonl", n_bootstrap=0)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

  def boom(*args, **kwargs):
    raise RuntimeError("plot failed")

  monkeypatch.setattr(plots, "plot_extrapolation", boom)  # the last plots drawn
  with pytest.raises(RuntimeError), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit_sweep(tmp_path / "results.jsonl", n_bootstrap=10, bootstrap_seed=1)
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  assert after == before  # nothing replaced, no staging left behind


def test_duplicated_table_is_collapsed_with_a_warning(tmp_path):
  records = _eq3_records(ks=[32])
  _write(tmp_path / "once.jsonl", records)
  _write(tmp_path / "twice.jsonl", records + records[:-1] + [dict(records[-1])])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    once = fit_sweep(tmp_path / "once.jsonl", tmp_path / "a", n_bootstrap=20)
  with pytest.warns(UserWarning, match=r"collapsed 12 duplicate record\(s\).*twice.jsonl:13 "
                                       r"repeats .*twice.jsonl:1\b"):
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="^(?!collapsed)")
      twice = fit_sweep(tmp_path / "twice.jsonl", tmp_path / "b", n_bootstrap=20)
  assert twice["n_records"] == once["n_records"] == len(records)
  for law in ("power_law", "irreducible"):
    assert twice["L_N"]["k=32"][law]["n_points"] == 6
    assert twice["L_N"]["k=32"][law]["ci95"] == once["L_N"]["k=32"][law]["ci95"]


def test_conflicting_duplicate_is_a_one_line_error_naming_both_lines(tmp_path, capsys):
  records = _eq3_records(ks=[32])
  changed = dict(records[-1], normalized_mse=records[-1]["normalized_mse"] * 0.9)
  _write(tmp_path / "results.jsonl", records + [changed])
  (tmp_path / "fits.json").write_text('{"old": true}\n')
  assert main([str(tmp_path), "--bootstrap", "0"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "conflicting duplicate records" in err
  assert f"results.jsonl:{len(records)} and " in err and f"results.jsonl:{len(records) + 1}" in err
  assert "normalized_mse" in err
  assert (tmp_path / "fits.json").read_text() == '{"old": true}\n'
  with pytest.raises(ConfigError, match="record 12 and record 13"):
    from analysis import fit_scaling_laws
    fit_scaling_laws(records + [changed])


def test_single_n_latents_has_no_L_C(tmp_path):
  """One n_latents (one run per k): its "frontier" would be a training curve, so L(C) says
  why it is not fitted, and the rest still fits and plots."""
  _write(tmp_path / "results.jsonl", _eq3_records(ns=[4096], ks=[32]))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fits = fit_sweep(tmp_path / "results.jsonl", n_bootstrap=10)
  assert "at least 3 distinct runs, got 1" in fits["L_C"]["k=32"]["error"]
  assert "need at least 3 points with distinct n_latents" in fits["L_N"]["k=32"]["power_law"]["error"]
  assert (tmp_path / "plots" / "loss_vs_compute.png").exists()
