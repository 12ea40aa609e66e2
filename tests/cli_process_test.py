"""Issue 20's refusals, each through a real `sae-jax` process (not `cli.main` in this one):
exit status 2, exactly one stderr line starting `sae-jax: error:` that names what is wrong,
and nothing written where the command would have written."""

import json
import os
import subprocess
import sys

from sae_jax.tools import interchange

from boundary_test import SWEEP
from interchange_test import _sae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error(tmp_path, *argv) -> str:
  env = {**os.environ, "SAE_JAX_CACHE": str(tmp_path / "cache")}
  p = subprocess.run([sys.executable, "-m", "sae_jax.cli", *argv], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 2, p.stderr[-2000:]
  # tqdm's progress bar (erased on a terminal) shares stderr: leave its frames out
  lines = [l for l in p.stderr.replace("\r", "\n").splitlines()
           if l.strip() and not l.rstrip().endswith(("step/s]", "it/s]", "tok/s]"))]
  assert len(lines) == 1 and lines[0].startswith("sae-jax: error: "), p.stderr[-2000:]
  return lines[0]


def test_a_set_key_the_points_also_set_is_refused(tmp_path):
  err = _error(tmp_path, "sweep", "sweeps/tiny.py", "--dry-run", "--set", "sae.k=1000",
               f"out_dir={tmp_path / 'runs'}")
  assert "sae.k" in err and "tiny.py" in err and "--override-points" in err
  assert not (tmp_path / "runs").exists()


def test_a_corpus_that_is_not_utf8_is_refused_with_its_byte_offset(tmp_path):
  corpus = tmp_path / "latin1.txt"
  corpus.write_bytes("café crème ".encode("latin-1") * 100)
  err = _error(tmp_path, "harvest", "--set", f"data.corpus={corpus}")
  assert "latin1.txt" in err and "byte offset 3" in err and "--corpus-encoding" in err
  assert not os.path.exists(tmp_path / "cache" / "activations") or not [
      d for d in os.listdir(tmp_path / "cache" / "activations") if not d.endswith(".lock")]


def test_a_saelens_config_without_architecture_is_refused(tmp_path):
  params, cfg = _sae("topk", "none")
  sl = interchange.to_saelens(interchange.write_export(params, cfg, str(tmp_path / "o")),
                              str(tmp_path / "sl"))
  c = json.load(open(f"{sl}/cfg.json"))
  c.pop("sae_jax", None)
  del c["architecture"]
  json.dump(c, open(f"{sl}/cfg.json", "w"))
  err = _error(tmp_path, "convert", sl, str(tmp_path / "out"), "--to", "sae_jax")
  assert "does not say which architecture" in err
  assert not (tmp_path / "out").exists()


def test_a_finite_blow_up_is_divergence(tmp_path):
  """`--set train.lr=1e6` used to train to a normalized MSE of 1.76e29 and exit 0."""
  (tmp_path / "syn.py").write_text(SWEEP.format(out=str(tmp_path / "runs")))
  err = _error(tmp_path, "train", "--sweep", str(tmp_path / "syn.py"), "--set",
               "train.lr=1e6", "sae.n_latents=64", "sae.k=4")
  assert "exceeds 10" in err and "at step 1" in err and "lower train.lr" in err
