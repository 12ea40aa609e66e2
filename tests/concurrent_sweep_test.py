"""Two `sae-jax sweep` processes on the same sweep and output directory share its points
(issue 17, item 5): each point is trained by exactly one of them (the holder of its
`fcntl.flock` lock), results.jsonl holds each record once on whole lines, and a process
killed with SIGKILL while training a point releases it, so a relaunch finishes it.
Real processes, a synthetic sweep of three small points."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from sae_jax import cli, config as config_lib, files
from sae_jax.training import checkpoint
from sweeps import points

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# get_config() waits until `n_procs` processes have loaded the file (a barrier), so the
# processes reach their first point together and really contend for it.
SWEEP = '''
import glob, os, time
from sae_jax.config import default_config

ROOT = {root!r}


def get_config():
  mark = os.path.join(ROOT, f"ready.{{os.getpid()}}")
  if not os.path.exists(mark):
    open(mark, "w").close()
    deadline = time.time() + 300
    while len(glob.glob(os.path.join(ROOT, "ready.*"))) < {n_procs} and time.time() < deadline:
      time.sleep(0.05)
  c = default_config()
  c.name = "syn"
  c.out_dir = os.path.join(ROOT, "runs")
  c.data.source = "synthetic"
  c.data.n_train_tokens = 4096
  c.data.n_eval_tokens = 1024
  c.sae.geometric_median_samples = 512
  c.sae.n_latents = 32
  c.train.batch_size = 128
  c.train.token_budget = 2048
  c.train.n_eval_points = 2
  c.train.n_devices = 1
  c.train.loggers = ()
  return c


def get_sweep():
  return [{{"sae.k": k}} for k in (2, 3, 4)]
'''


def _sweep_file(tmp_path, n_procs):
  path = tmp_path / "syn.py"
  path.write_text(SWEEP.format(root=str(tmp_path), n_procs=n_procs))
  return str(path)


def _start(path, *extra):
  return subprocess.Popen([sys.executable, "-m", "sae_jax.cli", "sweep", path, "--no-fit",
                           "--saes-per-pass", "1", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _trained(log):
  """Run ids a process's log says it trained."""
  return re.findall(r"\] (\S+): training ", log)


def _check_results(sweep_dir):
  """results.jsonl: whole JSON lines, each (run, step) once, every point final once."""
  with open(os.path.join(sweep_dir, "results.jsonl"), encoding="utf-8") as f:
    text = f.read()
  assert text.endswith("\n")
  recs = [json.loads(line) for line in text.splitlines()]
  keys = [(r["run_id"], r["step"]) for r in recs]
  assert len(keys) == len(set(keys)), keys
  runs = {r["run_id"] for r in recs}
  assert len(runs) == 3 and sum(r["final"] for r in recs) == 3
  for rid in runs:  # every point's checkpoint reads back
    state, meta = checkpoint.Checkpointer(os.path.join(sweep_dir, rid, "checkpoints")).restore_untyped()
    assert int(state["step"]) == 2048 // 128 and meta["records"]
    assert os.path.exists(os.path.join(sweep_dir, rid, "export", "sae.safetensors"))
  return runs


def test_two_sweeps_share_the_points_each_trained_once(tmp_path):
  path = _sweep_file(tmp_path, n_procs=2)
  procs = [_start(path), _start(path)]
  logs = [p.communicate(timeout=900)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  trained = [_trained(log) for log in logs]
  everything = trained[0] + trained[1]
  assert len(everything) == len(set(everything)) == 3, trained  # each point exactly once
  assert trained[0] and trained[1], trained  # both processes took some of the work
  assert all("trained by another process" in log for log in logs)
  runs = _check_results(str(tmp_path / "runs" / "syn"))
  assert runs == set(everything)


def test_a_point_held_by_a_killed_sweep_is_finished_by_the_relaunch(tmp_path):
  path = _sweep_file(tmp_path, n_procs=1)
  sweep_dir = tmp_path / "runs" / "syn"
  p = _start(path)
  deadline, held = time.time() + 600, None
  while time.time() < deadline and p.poll() is None and held is None:
    locks = tmp_path / "runs" / ".locks" / "syn"
    for name in (os.listdir(locks) if locks.is_dir() else []):
      lock = files.Lock(locks / name)
      if name != "results.lock" and lock.holder() == str(p.pid) and not lock.acquire(False):
        held = name[:-len(".lock")]  # the point the sweep is training right now
        break
      lock.release()
    time.sleep(0.05)
  assert held is not None and p.poll() is None, "the sweep ended before it could be killed"
  os.kill(p.pid, signal.SIGKILL)
  p.wait()
  assert not (sweep_dir / held / "records.json").exists()
  lock = points.point_lock(str(sweep_dir), held)
  assert lock.acquire(blocking=False)  # the kernel released the killed holder's lock
  lock.release()

  p = _start(path)
  log, _ = p.communicate(timeout=900)
  assert p.returncode == 0, log[-3000:]
  assert held in _trained(log)
  _check_results(str(sweep_dir))



def test_train_refuses_a_run_another_process_is_training(tmp_path, capsys):
  """`sae-jax train` takes the same lock as a sweep's point: it never writes checkpoints
  a running sweep (or another train) is writing."""
  path = _sweep_file(tmp_path, n_procs=1)
  base, _ = points.load_sweep(path)
  base.sae.k = 2
  resolved = config_lib.resolve(base, 64)  # the synthetic generator's d_in
  rid = points.run_id({"sae.n_latents": 32, "sae.k": 2}, resolved)
  sweep_dir = str(tmp_path / "runs" / "syn")
  with points.point_lock(sweep_dir, rid):
    rc = cli.main(["train", "--sweep", path, "--set", "sae.k=2"])
    err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1, err
  assert err[0] == (f"sae-jax: error: {sweep_dir}/{rid} is being trained by another process "
                    f"(pid {os.getpid()}); wait for it to finish, or set out_dir=... or "
                    "name=... for a separate run")
  assert not os.path.exists(os.path.join(sweep_dir, rid, "checkpoints"))
