"""Issue 17 item 3, with real processes: SIGTERM (a cluster's preemption) or SIGINT
(Ctrl-C) during training checkpoints at the next step boundary, exits 143 / 130 with one
line on stderr, and the relaunch resumes to the parameters of an uninterrupted run, bit
for bit; during a harvest it stops between LM batches and the relaunch completes a cache
equal to an uninterrupted one. Each signal is sent once the process shows it is in the
phase under test (a marker on stderr or on disk), never after a fixed sleep."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sae_jax import signals
from sae_jax.training import checkpoint, trainer

from suite_test import _TEXT, _tiny_llama, _tokenizer_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 600

SWEEP = f'''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "syn"
  c.data.source = "synthetic"
  c.data.n_train_tokens = 4096
  c.data.n_eval_tokens = 1024
  c.sae.n_latents = 64
  c.sae.k = 4
  c.sae.geometric_median_samples = 512
  c.train.batch_size = 128
  c.train.token_budget = 128 * {STEPS}
  c.train.n_eval_points = 2
  c.train.checkpoint_every_steps = 10_000
  c.train.dead_tokens = 1000
  return c


def get_sweep():
  return [{{}}]
'''


def _env(env=None):
  return {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}


def _start(*argv, env=None):
  return subprocess.Popen([sys.executable, "-m", "sae_jax.cli", *argv], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(env))


def _run(*argv, env=None):
  return subprocess.run([sys.executable, "-m", "sae_jax.cli", *argv], cwd=ROOT, env=_env(env),
                        capture_output=True, text=True, timeout=600)


def _signal_when(p, sig, ready, timeout=600) -> str:
  """Send `sig` to `p` once `ready(stderr so far)` holds; return its whole stderr."""
  os.set_blocking(p.stderr.fileno(), False)
  err, deadline = b"", time.time() + timeout
  while p.poll() is None and time.time() < deadline:
    err += p.stderr.read() or b""
    if ready(err.decode(errors="replace")):
      p.send_signal(sig)
      break
    time.sleep(0.02)
  os.set_blocking(p.stderr.fileno(), True)
  assert p.poll() is None, "the process ended before it could be signalled: " + err.decode()[-2000:]
  err += p.stderr.read()  # to its end (stdout: a few lines, never filling its pipe)
  p.wait(timeout=600)
  return err.decode(errors="replace")


def _lines(err: str) -> list[str]:
  """stderr without tqdm's progress frames (erased on a terminal)."""
  return [l for l in err.replace("\r", "\n").splitlines()
          if l.strip() and not re.search(r"(step|it|tok)/s(, [^]]*)?\]\s*$", l)
          and not re.search(r"\|\s*\d+/\d+ \[", l)]


def _train(path, out):
  return _start("train", "--sweep", str(path), "--set", f"out_dir={out}")


def _final_params(out):
  (run,) = os.listdir(os.path.join(out, "syn"))
  state, _ = checkpoint.Checkpointer(os.path.join(out, "syn", run, "checkpoints")).restore_untyped()
  return state["params"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(sweep file, out_dir) of the run trained without a signal."""
  root = tmp_path_factory.mktemp("signals")
  (root / "syn.py").write_text(SWEEP)
  p = _train(root / "syn.py", root / "full")
  _, err = p.communicate(timeout=900)
  assert p.returncode == 0, err.decode()[-2000:]
  return root / "syn.py", root / "full"


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_in_training_checkpoints_and_the_relaunch_resumes_bitwise(
    tmp_path, uninterrupted, sig, status):
  path, full = uninterrupted
  p = _train(path, tmp_path / "cut")
  # tqdm's bar shows a finished step: the process is inside the training loop
  err = _signal_when(p, sig, lambda e: re.search(rf"\| *[1-9]\d*/{STEPS} \[", e))
  assert p.returncode == status, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  (line,) = _lines(err)
  m = re.fullmatch(rf"sae-jax: stopped on {sig.name}; checkpointed at step (\d+); rerun the "
                   "same command to resume", line)
  assert m and 1 <= int(m[1]) < STEPS, line
  (run,) = os.listdir(tmp_path / "cut" / "syn")
  assert checkpoint.Checkpointer(str(tmp_path / "cut" / "syn" / run / "checkpoints")
                                 ).latest_step() == int(m[1])

  again = _train(path, tmp_path / "cut")
  _, err = again.communicate(timeout=900)
  assert again.returncode == 0, err.decode()[-2000:]
  a, b = _final_params(full), _final_params(tmp_path / "cut")
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def _lm_args(tmp_path, cache_dir):
  corpus, model = tmp_path / "corpus", tmp_path / "model"
  if not corpus.exists():
    corpus.mkdir()
    for i in range(40):
      (corpus / f"scene{i}.txt").write_text(_TEXT * 30)
    _tiny_llama(vocab=_tokenizer_dir(str(model), _TEXT)).save_pretrained(str(model))
  return ["harvest", "--set", f"data.model={model}", f"data.corpus={corpus}", "data.layer=1",
          f"data.cache_dir={cache_dir}", "data.context_length=16", "data.n_train_tokens=4000",
          "data.n_eval_tokens=1000", "data.shard_tokens=500", "data.lm_batch_size=4"]


def _cache_files(cache_dir) -> dict[str, bytes]:
  act = os.path.join(cache_dir, "activations")
  (key,) = [d for d in os.listdir(act) if not d.endswith(".lock")]
  out = {}
  for dirpath, _, names in os.walk(os.path.join(act, key)):
    for n in names:
      with open(os.path.join(dirpath, n), "rb") as f:
        out[os.path.relpath(os.path.join(dirpath, n), act)] = f.read()
  return out


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_the_harvest_stops_between_batches_and_the_relaunch_completes_it(
    tmp_path, sig, status):
  # the model's memoised hash lives in SAE_JAX_CACHE; one torch thread: a harvest of a
  # tiny LM is all per-batch overhead
  env = {"SAE_JAX_CACHE": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
  cut = tmp_path / "cut"

  def shards_on_disk(_err):
    act = cut / "activations"
    return act.is_dir() and any(
        (act / d / "train").is_dir() and any(f.startswith("shard_") for f in os.listdir(act / d / "train"))
        for d in os.listdir(act) if d.endswith(".partial"))

  p = _start(*_lm_args(tmp_path, cut), env=env)
  err = _signal_when(p, sig, shards_on_disk)
  assert p.returncode == status, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  lines = [l for l in _lines(err) if l.startswith("sae-jax")]
  assert len(lines) == 1, err[-3000:]
  line = lines[0]
  assert re.fullmatch(rf"sae-jax: stopped on {sig.name}; the harvest is saved at \d+ train "
                      "shards; rerun the same command to resume", line), line
  assert not [d for d in os.listdir(cut / "activations") if not d.endswith((".partial", ".lock"))]

  again = _run(*_lm_args(tmp_path, cut), env=env)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resuming a half-written cache" in again.stderr
  whole = _run(*_lm_args(tmp_path, tmp_path / "whole"), env=env)
  assert whole.returncode == 0, whole.stderr[-2000:]
  a, b = _cache_files(cut), _cache_files(tmp_path / "whole")
  assert a.keys() == b.keys()
  for name in a:
    if name.endswith(".json"):
      assert json.loads(a[name]) == json.loads(b[name]), name
    else:
      assert a[name] == b[name], name


# ------------------------------------------------------------------------- the stop step


class _FakeRun:
  def __init__(self, evals, every, start=0, n_steps=1000, within=0.0):
    import ml_collections  # pylint: disable=import-outside-toplevel
    self.evals, self.start_step, self.n_steps = set(evals), start, n_steps
    self.c = ml_collections.ConfigDict(
        {"train": {"checkpoint_every_steps": every, "preempt_checkpoint_within_s": within}})


def test_the_default_stops_at_the_current_step():
  runs = [_FakeRun([100, 1000], 50)]
  assert trainer._stop_step(runs, {}, 47, elapsed_s=4.7, steps_done=47) == 47


def test_a_scheduled_checkpoint_due_within_the_window_is_waited_for():
  # 0.1 s per step: step 50's checkpoint is 0.3 s away, inside a 1 s window
  runs = [_FakeRun([100, 1000], 50, within=1.0)]
  assert trainer._stop_step(runs, {}, 47, elapsed_s=4.7, steps_done=47) == 50
  # an evaluation point counts as a scheduled checkpoint too
  runs = [_FakeRun([49, 1000], 50, within=1.0)]
  assert trainer._stop_step(runs, {}, 47, elapsed_s=4.7, steps_done=47) == 49
  # 13 steps = 1.3 s: beyond the window, so now
  runs = [_FakeRun([100, 1000], 60, within=1.0)]
  assert trainer._stop_step(runs, {}, 47, elapsed_s=4.7, steps_done=47) == 47
  # a failed run of the pass does not count
  runs = [_FakeRun([100, 1000], 60, within=1.0), _FakeRun([48], 50, within=1.0)]
  assert trainer._stop_step(runs, {1: None}, 47, elapsed_s=4.7, steps_done=47) == 47


def test_a_negative_window_is_a_config_error():
  from sae_jax import config  # pylint: disable=import-outside-toplevel
  from sae_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  c = config.default_config()
  c.train.preempt_checkpoint_within_s = -1.0
  with pytest.raises(ConfigError, match="preempt_checkpoint_within_s"):
    config.validate(c)


# ------------------------------------------------------------------------- the handler


def test_inside_a_deferred_block_a_signal_only_asks_and_the_block_polls_it():
  previous = signals.install()
  try:
    with pytest.raises(signals.Interrupted) as e:
      with signals.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run (main thread) and did not raise
        assert signals.requested() == signal.SIGTERM
        signals.check("saved at the boundary")
    assert e.value.signum == signal.SIGTERM and e.value.where == "saved at the boundary"
    # outside a deferred block the signal stops at once, as KeyboardInterrupt would
    signals.restore(signals.install())
    with pytest.raises(signals.Interrupted):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  finally:
    signals.restore(previous)


# ------------------------------------------------------------------------- submitit


def test_submitits_preemption_signal_checkpoints_then_hands_over_to_submitit(
    tmp_path, monkeypatch):
  """A PointsJob (what a submitit job runs) gets submitit's preemption signal mid-pass:
  the pass checkpoints at the step boundary, submitit's handler (here a stand-in that
  records the call, as its checkpoint_and_try_requeue would requeue and exit) runs after,
  and the requeued call ends with the uninterrupted run's parameters, bit for bit."""
  import submitit  # pylint: disable=import-outside-toplevel
  from sweeps import cluster  # pylint: disable=import-outside-toplevel
  sig = submitit.JobEnvironment._usr_sig()  # pylint: disable=protected-access
  path = tmp_path / "syn.py"
  path.write_text(SWEEP.replace(f"128 * {STEPS}", "128 * 40"))

  class Requeued(BaseException):
    pass

  calls = []

  def submitits_handler(signum, _frame):
    calls.append((signum, max(int(s) for s in os.listdir(ckpt_dir()) if s.isdigit())))
    raise Requeued()  # submitit's handler ends the process (sys.exit) after requeuing

  def ckpt_dir():
    (run,) = os.listdir(tmp_path / "cut" / "syn")
    return tmp_path / "cut" / "syn" / run / "checkpoints"

  step = trainer._Run.step

  def step_and_preempt(self, i, x):
    if i == 12 and "cut" in self.run_dir and not calls:
      os.kill(os.getpid(), sig)  # delivered to the main thread: inside the training loop
    return step(self, i, x)

  monkeypatch.setattr(trainer._Run, "step", step_and_preempt)
  previous = signal.signal(sig, submitits_handler)
  try:
    job = cluster.PointsJob(str(path), [0], {"out_dir": str(tmp_path / "cut")})
    with pytest.raises(Requeued):
      job()
    assert calls == [(sig, 13)]  # checkpointed at the boundary after step 12, then handed over
    assert signal.getsignal(sig) is submitits_handler  # submitit's handler is back
    job()  # the requeued call
    cluster.PointsJob(str(path), [0], {"out_dir": str(tmp_path / "full")})()
  finally:
    signal.signal(sig, previous)
  a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "cut")
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
