"""Issue 20, with real processes: a diverging SAE fails alone. Its data pass goes on,
the healthy point's records and export are bitwise those of training it alone, the
sweep saves everything else before it exits non-zero, and a relaunch retries only the
failed point. Synthetic activations, so no LM is loaded."""

import json
import os
import subprocess
import sys

from safetensors.numpy import load_file

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "syn"
  c.data.source = "synthetic"
  c.data.n_train_tokens = 4096
  c.data.n_eval_tokens = 1024
  c.sae.geometric_median_samples = 512
  c.train.batch_size = 128
  c.train.token_budget = 2048
  c.train.n_eval_points = 2
  c.train.checkpoint_every_steps = 4
  c.train.dead_tokens = 1000
  return c


def get_sweep():
  return {points}
'''
HEALTHY = '{"sae.n_latents": 128, "sae.k": 4}'
DIVERGING = '{"sae.n_latents": 64, "sae.k": 4, "train.lr": 1e20}'


def _sweep(path, out):
  p = subprocess.run([sys.executable, "-m", "sae_jax.cli", "sweep", str(path), "--no-fit",
                      "--set", f"out_dir={out}"], capture_output=True, text=True, timeout=600,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  return p.returncode, p.stdout, p.stderr


def _results(out):
  with open(os.path.join(out, "syn", "results.jsonl")) as f:
    recs = [json.loads(line) for line in f]
  for r in recs:
    r.pop("wall_time_s")
    r["config"].pop("out_dir")
  return recs


def test_a_diverging_point_fails_alone_and_is_retried_alone(tmp_path):
  mixed, alone = tmp_path / "mixed.py", tmp_path / "alone.py"
  mixed.write_text(SWEEP.format(points=f"[{DIVERGING}, {HEALTHY}]"))
  alone.write_text(SWEEP.format(points=f"[{HEALTHY}]"))
  out_m, out_a = tmp_path / "m", tmp_path / "a"

  rc, stdout, stderr = _sweep(mixed, out_m)
  assert rc == 2, stdout + stderr
  err = [l for l in stderr.strip().splitlines() if "sae-jax" in l or "Error" in l]
  assert len(err) == 1 and err[0].startswith("sae-jax: error: 1 of 2 point(s) diverged"), stderr
  assert "Traceback" not in stderr
  assert sum(line.startswith("point 1 failed: loss is nan at step") for line in
             stdout.splitlines()) == 1, stdout
  assert "lower train.lr" in stdout
  runs = {d: os.listdir(out_m / "syn" / d) for d in os.listdir(out_m / "syn") if d != "results.jsonl"}
  bad = next(d for d in runs if d.startswith("n64"))
  good = next(d for d in runs if d.startswith("n128"))
  assert "failed.json" in runs[bad] and "records.json" not in runs[bad] and "export" not in runs[bad]
  failed = json.loads((out_m / "syn" / bad / "failed.json").read_text())
  assert failed["failed"] and failed["step"] >= 0 and "last_good_checkpoint" in failed
  assert "records.json" in runs[good] and "failed.json" not in runs[good]

  rc, stdout, stderr = _sweep(alone, out_a)
  assert rc == 0, stdout + stderr
  assert _results(out_m) == _results(out_a)  # results.jsonl holds the finished point
  # the export's tensors bit for bit (the safetensors header's metadata order is
  # safetensors' hash-map order, which varies between processes) and its config
  exp_m, exp_a = out_m / "syn" / good / "export", out_a / "syn" / good / "export"
  t_m, t_a = load_file(str(exp_m / "sae.safetensors")), load_file(str(exp_a / "sae.safetensors"))
  assert t_m.keys() == t_a.keys()
  for name in t_m:
    assert t_m[name].dtype == t_a[name].dtype and t_m[name].tobytes() == t_a[name].tobytes()
  c_m, c_a = (json.loads((e / "config.json").read_text()) for e in (exp_m, exp_a))
  for c in (c_m, c_a):
    c["training_config"].pop("out_dir")  # where it went, not what was trained
  assert c_m == c_a

  # the relaunch reuses the healthy point and retries only the failed one
  rc, stdout, stderr = _sweep(mixed, out_m)
  assert rc == 2, stdout + stderr
  assert f"{good}: finished earlier" in stdout and f"{bad}: failed earlier" in stdout
  assert "SAEs share one pass" not in stdout
