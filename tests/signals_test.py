"""Issue 17 item 3, with real processes: SIGTERM (a cluster's preemption) or SIGINT
during training checkpoints at the next step boundary, exits 143 / 130 with one line,
and the relaunch resumes to the parameters of an uninterrupted run, bit for bit."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sae_jax.training import checkpoint

SWEEP = '''
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
  c.train.token_budget = 128 * 600
  c.train.n_eval_points = 2
  c.train.checkpoint_every_steps = 10_000
  c.train.dead_tokens = 1000
  return c


def get_sweep():
  return [{}]
'''


def _train(path, out, **kw):
  return subprocess.Popen([sys.executable, "-m", "sae_jax.cli", "train", "--sweep", str(path),
                           "--set", f"out_dir={out}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, **kw)


def _final_params(out):
  (run,) = os.listdir(os.path.join(out, "syn"))
  state, _ = checkpoint.Checkpointer(os.path.join(out, "syn", run, "checkpoints")).restore_untyped()
  return state["params"]


@pytest.mark.parametrize("sig, status, name", [(signal.SIGTERM, 143, "SIGTERM"),
                                               (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_checkpoints_and_the_relaunch_resumes_bitwise(tmp_path, sig, status, name):
  path = tmp_path / "syn.py"
  path.write_text(SWEEP)
  full = _train(path, tmp_path / "full")
  _, err = full.communicate(timeout=900)
  assert full.returncode == 0, err

  p = _train(path, tmp_path / "cut")
  deadline = time.time() + 600
  while time.time() < deadline and p.poll() is None:
    runs = (tmp_path / "cut" / "syn")
    if runs.is_dir() and any((runs / r / "checkpoints").is_dir() for r in os.listdir(runs)):
      break
    time.sleep(0.2)
  time.sleep(3)  # into the training loop
  assert p.poll() is None, "the run ended before it could be signalled"
  p.send_signal(sig)
  _, err = p.communicate(timeout=600)
  assert p.returncode == status, err
  lines = [l for l in err.splitlines() if l.startswith("sae-jax")]
  assert len(lines) == 1 and lines[0].startswith(f"sae-jax: stopped on {name}"), err
  assert "Traceback" not in err

  again = _train(path, tmp_path / "cut")
  _, err = again.communicate(timeout=900)
  assert again.returncode == 0, err
  a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "cut")
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
