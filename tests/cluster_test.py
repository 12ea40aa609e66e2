"""Cluster sweeps on the real SmolLM2 model at a tiny size: submitit's local executor with
two points per job gives the inline run's results; --dry-run plans without harvesting,
loading the LM or writing; a point too big for device memory is refused before anything
is written; a resubmitted finished sweep skips every point."""

import glob
import json
import os
import subprocess
import sys

import pytest
from sweep_test import _records  # results.jsonl without wall time and out_dir

from sae_jax import cli
from sae_jax.data import harvest, lm
from sweeps import plan

pytestmark = pytest.mark.real_model

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "tiny"
  c.data.n_train_tokens = 4032
  c.data.n_eval_tokens = 1008
  c.data.shard_tokens = 2016
  c.data.cache_dir = {cache!r}
  c.sae.geometric_median_samples = 1024
  c.train.batch_size = 64
  c.train.token_budget = 4032
  c.train.checkpoint_every_steps = 16
  c.train.n_eval_points = 3
  c.train.dead_tokens = 2000
  return c


def get_sweep():
  return [{{"sae.n_latents": n, "sae.k": 4}} for n in (32, 64, 128)]
'''


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp("cluster")
  path = root / "tiny.py"
  path.write_text(SWEEP.format(cache=str(root / "cache")))
  return root, str(path)


def _sweep_cli(*args):
  p = subprocess.run([sys.executable, "-m", "sae_jax.cli", "sweep", *args],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
                     check=False)
  assert p.returncode == 0, p.stdout
  return p.stdout


@pytest.fixture(scope="module")
def inline(sweep):
  root, path = sweep
  out = str(root / "inline")
  return out, _sweep_cli(path, "--no-fit", "--set", f"out_dir={out}")


@pytest.fixture(scope="module")
def local(sweep, inline):  # after `inline`, so the cache exists and is reused
  root, path = sweep
  out = str(root / "local")
  return out, _sweep_cli(path, "--executor", "local", "--group-size", "2", "--set",
                         f"out_dir={out}")


def _no_lm(monkeypatch):
  def refuse(*a, **k):
    raise AssertionError("the LM was loaded or activations harvested")
  monkeypatch.setattr(lm, "load_lm", refuse)
  monkeypatch.setattr(harvest, "get_or_harvest", refuse)


def test_dry_run_plans_every_point_and_touches_nothing(sweep, tmp_path, capsys, monkeypatch):
  root, path = sweep
  _no_lm(monkeypatch)
  out, cache = tmp_path / "runs", tmp_path / "cache"
  rc = cli.main(["sweep", path, "--dry-run", "--executor", "local", "--group-size", "2",
                 "--set", f"out_dir={out}", f"data.cache_dir={cache}"])
  text = capsys.readouterr().out
  assert rc == 0, text
  p = plan.plan(path, {"out_dir": str(out)}, group_size=2)
  assert [pt.n_latents for pt in p.points] == [32, 64, 128]
  assert p.jobs == [[0, 1], [2]]
  for pt in p.points:
    row = next(line for line in text.splitlines() if pt.run_id in line)
    assert f"{pt.flops:.3g}" in row and "topk" in row and "k=4" in row
    assert pt.flops == 12 * 576 * pt.n_latents * 4032
    assert pt.n_params == 2 * 576 * pt.n_latents + pt.n_latents + 576
    assert pt.state_bytes == 4 * (3 * pt.n_params + pt.n_latents)
  assert "FLOPs in all" in text and "2 local job(s)" in text
  assert not out.exists()
  assert not (cache / "activations").exists()


def test_a_point_too_big_is_refused_before_anything_is_written(sweep, tmp_path, capsys,
                                                               monkeypatch):
  root, path = sweep
  _no_lm(monkeypatch)
  out = tmp_path / "runs"
  for extra in ([], ["--dry-run"], ["--executor", "local"]):
    rc = cli.main(["sweep", path, *extra, "--device-memory-gb", "0.0045",
                   "--set", f"out_dir={out}", f"data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    # n_latents 32 and 64 fit in 4.6 MiB, 128 does not: the message names it with the numbers
    assert "point n128_k4_" in err and "exceeds the 0.0045 GiB device memory" in err, err
    assert "GiB per device" in err and "train.model_parallel" in err
  assert not out.exists() and not (tmp_path / "cache" / "activations").exists()


def test_local_jobs_equal_the_inline_run(inline, local):
  (a, _), (b, log) = inline, local
  assert "submitted 2 local job(s) for 3 points" in log
  assert _records(a) == _records(b)
  assert os.path.exists(os.path.join(b, "tiny", "fits.json"))
  runs = sorted(d for d in os.listdir(os.path.join(b, "tiny")) if d.startswith("n"))
  assert len(runs) == 3
  for run in runs:  # every finished point is also exported
    assert os.path.exists(os.path.join(b, "tiny", run, "export", "sae.safetensors"))
    assert json.load(open(os.path.join(b, "tiny", run, "export", "config.json")))["final"]


def test_resubmitted_sweep_skips_every_point(sweep, local):
  root, path = sweep
  out, _ = local
  recs = sorted(glob.glob(os.path.join(out, "tiny", "n*", "records.json")))
  before = {r: os.path.getmtime(r) for r in recs}
  logs = lambda: set(glob.glob(os.path.join(out, "tiny", "submitit", "*", "*_log.out")))  # noqa: E731
  old = logs()
  log = _sweep_cli(path, "--executor", "local", "--group-size", "2", "--set", f"out_dir={out}")
  assert "submitted 2 local job(s)" in log
  new = logs() - old
  assert len(new) == 2
  job_logs = "".join(open(f).read() for f in new)
  assert job_logs.count("finished earlier") == 3 and "training" not in job_logs
  assert {r: os.path.getmtime(r) for r in recs} == before
