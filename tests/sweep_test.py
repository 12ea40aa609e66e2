"""The sweep launcher and the sae-jax command line, end to end on the real SmolLM2 model
at a tiny size: kill and relaunch, reuse, and the one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sae_jax import cli
from sae_jax.training import checkpoint

pytestmark = pytest.mark.real_model

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "tiny"
  c.out_dir = "runs"
  c.data.n_train_tokens = 4032
  c.data.n_eval_tokens = 1008
  c.data.shard_tokens = 2016
  c.data.cache_dir = {cache!r}
  c.sae.geometric_median_samples = 1024
  c.train.batch_size = 64
  c.train.token_budget = 2 * 4032
  c.train.checkpoint_every_steps = 16
  c.train.n_eval_points = 4
  c.train.dead_tokens = 2000
  return c


def get_sweep():
  return [{{"sae.n_latents": n, "sae.k": 4}} for n in (64, 128)]
'''


def _sae_jax(*args, **kw):
  return subprocess.Popen([sys.executable, "-m", "sae_jax.cli", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  path = root / "tiny.py"
  path.write_text(SWEEP.format(cache=str(root / "cache")))
  return root, str(path)


@pytest.fixture(scope="module")
def uninterrupted(sweep):
  root, path = sweep
  out = str(root / "full")
  p = _sae_jax("sweep", path, "--set", f"out_dir={out}")
  log, _ = p.communicate(timeout=600)
  assert p.returncode == 0, log
  return out, log


def _records(out):
  with open(os.path.join(out, "tiny", "results.jsonl")) as f:
    recs = [json.loads(line) for line in f]
  for r in recs:
    r.pop("wall_time_s")
    r["config"].pop("out_dir")
  return recs


def _final_params(out):
  params = {}
  for run in sorted(os.listdir(os.path.join(out, "tiny"))):
    d = os.path.join(out, "tiny", run, "checkpoints")
    if os.path.isdir(d):
      state, _ = checkpoint.Checkpointer(d).restore_untyped()
      params[run] = state["params"]
  return params


def test_sweep_writes_results_fits_and_plots(uninterrupted):
  out, _ = uninterrupted
  recs = _records(out)
  assert {(r["n_latents"], r["k"]) for r in recs} == {(64, 4), (128, 4)}
  assert sum(r["final"] for r in recs) == 2
  assert all(r["tokens"] <= 2 * 4032 and r["flops"] > 0 and r["layer"] == 15 for r in recs)
  fits = json.load(open(os.path.join(out, "tiny", "fits.json")))
  assert "L_C" in fits
  plots = os.listdir(os.path.join(out, "tiny", "plots"))
  assert {"loss_vs_n_latents.png", "loss_vs_compute.png", "loss_vs_tokens.png"} <= set(plots)


def test_killed_sweep_resumes_to_the_same_records(sweep, uninterrupted):
  root, path = sweep
  full, _ = uninterrupted
  out = str(root / "killed")
  p = _sae_jax("sweep", path, "--set", f"out_dir={out}")
  deadline = time.time() + 300
  first_run_ckpts = None
  while time.time() < deadline and p.poll() is None:
    runs = [d for d in os.listdir(os.path.join(out, "tiny"))] if os.path.isdir(
        os.path.join(out, "tiny")) else []
    ckpt_dirs = [os.path.join(out, "tiny", r, "checkpoints") for r in runs]
    steps = [s for d in ckpt_dirs if os.path.isdir(d) for s in os.listdir(d) if s.isdigit()]
    if steps:
      first_run_ckpts = steps
      break
    time.sleep(0.05)
  assert p.poll() is None, "the sweep ended before it could be killed"
  os.kill(p.pid, signal.SIGKILL)
  p.wait()
  assert first_run_ckpts
  assert not os.path.exists(os.path.join(out, "tiny", "results.jsonl"))

  p = _sae_jax("sweep", path, "--set", f"out_dir={out}")
  log, _ = p.communicate(timeout=600)
  assert p.returncode == 0, log
  assert "loading smollm2" not in log  # the activation cache was reused
  assert _records(out) == _records(full)
  a, b = _final_params(full), _final_params(out)
  assert a.keys() == b.keys() and len(a) == 2
  for run in a:
    for name in a[run]:
      np.testing.assert_array_equal(a[run][name], b[run][name])


def test_rerun_reuses_everything(sweep, uninterrupted):
  root, path = sweep
  out, _ = uninterrupted
  t = time.time()
  p = _sae_jax("sweep", path, "--set", f"out_dir={out}")
  log, _ = p.communicate(timeout=300)
  assert p.returncode == 0, log
  assert log.count("finished earlier") == 2 and "loading smollm2" not in log
  assert time.time() - t < 60


def _cli_error(capsys, *argv):
  rc = cli.main(list(argv))
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  last = err.splitlines()[-1]  # progress lines ("[sae_jax] reusing ...") may come first
  assert last.startswith("sae-jax: error: "), err
  assert "Traceback" not in err
  return last


def test_bad_input_is_one_line_and_loses_nothing(sweep, uninterrupted, capsys, tmp_path):
  root, path = sweep
  out, _ = uninterrupted
  results = os.path.join(out, "tiny", "results.jsonl")
  fits = os.path.join(out, "tiny", "fits.json")
  before = open(results, "rb").read(), open(fits, "rb").read()
  cache = str(root / "cache")

  assert "k=64 exceeds n_latents=32" in _cli_error(
      capsys, "train", "--sweep", path, "--set", f"out_dir={out}", "sae.k=64", "sae.n_latents=32")
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert "cannot write" in _cli_error(capsys, "sweep", path, "--set", f"out_dir={blocker}/runs")
  assert "unknown model" in _cli_error(
      capsys, "harvest", "--sweep", path, "--set", "data.model=/nonexistent/model")
  assert "out of range" in _cli_error(capsys, "harvest", "--sweep", path, "--set", "data.layer=99")
  empty = tmp_path / "empty.txt"
  empty.write_text("  \n")
  assert "no text" in _cli_error(capsys, "harvest", "--sweep", path, "--set",
                                 f"data.corpus={empty}")
  assert (open(results, "rb").read(), open(fits, "rb").read()) == before

  # a corrupted shard is detected (`harvest --verify`: reuse itself checks sizes and
  # headers only, issue 15), named, and left for the user to delete
  acts = os.path.join(cache, "activations")
  key = next(d for d in os.listdir(acts) if not d.endswith((".lock", ".partial")))
  shard = os.path.join(acts, key, "train", "shard_00000.npy")
  blob = bytearray(open(shard, "rb").read())
  blob[-100:] = bytes(100)
  open(shard, "wb").write(bytes(blob))
  err = _cli_error(capsys, "harvest", "--sweep", path, "--verify")
  assert "shard_00000.npy" in err
  assert os.path.exists(shard)


def test_every_subcommand_has_help(capsys):
  for sub in ("harvest", "train", "sweep", "fit"):
    with pytest.raises(SystemExit) as e:
      cli.main([sub, "--help"])
    assert e.value.code == 0
    assert "usage: sae-jax " + sub in capsys.readouterr().out


def test_train_writes_the_config_and_records_of_its_run(sweep, tmp_path, capsys):
  """`sae-jax train` leaves a run directory as a sweep does, so eval, view and export can
  read its config.json."""
  _, path = sweep
  # Its own cache: test_bad_input_is_one_line_and_loses_nothing corrupts the module's.
  rc = cli.main(["train", "--sweep", path, "--set", f"out_dir={tmp_path}", "sae.n_latents=64",
                 "sae.k=4", "train.token_budget=1024", f"data.cache_dir={tmp_path / 'cache'}"])
  out, err = capsys.readouterr()
  assert rc in (0, None), err
  run_dirs = os.listdir(tmp_path / "tiny")
  assert len(run_dirs) == 1 and out.strip().splitlines()[-1].startswith(str(tmp_path / "tiny")), (out, err)
  run = tmp_path / "tiny" / run_dirs[0]
  cfg = json.loads((run / "config.json").read_text())
  assert cfg["sae"]["n_latents"] == 64 and cfg["train"]["token_budget"] == 1024
  assert json.loads((run / "records.json").read_text())[-1]["tokens"] == 1024


def test_sweep_leaves_tensorboard_logs_with_every_scalar(uninterrupted):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from sae_jax.training import tracking  # pylint: disable=import-outside-toplevel
  out, log = uninterrupted
  assert f"training curves: tensorboard --logdir {os.path.join(out, 'tiny')}" in log
  for run in (d for d in os.listdir(os.path.join(out, "tiny")) if d.startswith("n")):
    acc = event_accumulator.EventAccumulator(os.path.join(out, "tiny", run, "tensorboard"),
                                             size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {tracking.tag("train", n) for n in tracking.TRAIN_SCALARS} <= tags, run
    assert {tracking.tag("eval", n) for n in tracking.EVAL_SCALARS} <= tags, run
    records = json.load(open(os.path.join(out, "tiny", run, "records.json")))
    assert [e.step for e in acc.Scalars("eval/normalized_mse")] == [r["step"] for r in records]
