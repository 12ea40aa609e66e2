"""Portable weights: an exported SAE loads and runs with numpy + safetensors alone, and
its numpy encoder / decoder equal the JAX ones for every registered architecture."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax import config, saes
from sae_jax.data import batches
from sae_jax.tools import export, export_reference
from sae_jax.training import checkpoint, step, trainer

REFERENCE = os.path.abspath(export_reference.__file__)

# Runs with only numpy / safetensors / json importable from the project's point of view:
# the reference file is loaded by path, never through the sae_jax package.
STANDALONE = r'''
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("ref", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
params, cfg = ref.load(sys.argv[2])
x = np.load(sys.argv[3])
z = ref.encode_numpy(params, cfg, ref.normalize_numpy(cfg, x))
np.savez(sys.argv[4], z=z, x_hat=ref.decode_numpy(params, cfg, z))
banned = [m for m in ("jax", "sae_jax", "torch", "orbax") if m in sys.modules]
assert not banned, banned
print(json.dumps({"architecture": cfg["architecture"], "names": sorted(params)}))
'''


def _source(d_in=32, seed=0):
  rng = np.random.default_rng(seed)
  dirs = rng.normal(size=(96, d_in))
  gen = lambda n: ((rng.random((n, 96)) < 0.05) * rng.random((n, 96)) * 2 @ dirs + 0.3
                   ).astype(np.float32)
  return batches.ArraySource({"train": gen(2048), "eval": gen(512)})


def _train(tmp_path, architecture, input_norm):
  c = config.default_config()
  c.sae.architecture, c.sae.input_norm = architecture, input_norm
  c.sae.n_latents, c.sae.k = 64, 4
  c.sae.geometric_median_samples = 512
  c.train.batch_size, c.train.token_budget = 256, 2048
  c.train.n_eval_points, c.train.checkpoint_every_steps, c.train.n_devices = 2, 4, 1
  run_dir = str(tmp_path / architecture)
  source = _source()
  records = trainer.train(c, source, run_dir, {"run_id": "r", "model": "m", "layer": 3},
                        progress=False)
  return run_dir, source, config.resolve(c, source.d_in), records


@pytest.mark.parametrize("architecture,input_norm", [("topk", "unit_norm"),
                                                     ("batchtopk", "mean_norm")])
def test_export_loads_without_the_training_code(tmp_path, architecture, input_norm):
  run_dir, source, c, records = _train(tmp_path, architecture, input_norm)
  out = export.export(run_dir)
  assert out == os.path.join(run_dir, "export")
  cfg = json.load(open(os.path.join(out, "config.json")))
  assert cfg["architecture"] == architecture and cfg["d_in"] == 32 and cfg["n_latents"] == 64
  assert cfg["k"] == 4 and cfg["input_norm"] == input_norm and cfg["tokens_trained"] == 2048
  assert cfg["final"] and (cfg["model"], cfg["layer"]) == ("m", 3) and cfg["encode"]
  assert cfg["normalized_mse"] == records[-1]["normalized_mse"]

  x = source.splits["eval"][:200]
  np.save(tmp_path / "x.npy", x)
  env = {"PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"}
  script = tmp_path / "standalone.py"
  script.write_text(STANDALONE)
  p = subprocess.run([sys.executable, "-S", "-c",
                      f"import site, sys; sys.path[:0] = {_site_packages()!r}; "
                      f"exec(open({str(script)!r}).read())",
                      REFERENCE, out, str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
                     env=env, cwd=str(tmp_path), capture_output=True, text=True, check=False)
  assert p.returncode == 0, p.stderr
  info = json.loads(p.stdout)
  assert {"W_enc", "b_enc", "W_dec", "b_pre"} <= set(info["names"])
  if architecture == "batchtopk":
    assert "threshold" in info["names"]
  got = np.load(tmp_path / "out.npz")

  state, _ = checkpoint.Checkpointer(os.path.join(run_dir, "checkpoints")).restore_untyped()
  arch, hp = saes.get(architecture), step.hyper(c)
  xn = batches.normalize(jnp.asarray(x), input_norm, state["norm_scale"])
  z = np.asarray(arch.encode(state["params"], xn, state["extras"], hp))
  x_hat = np.asarray(arch.decode(state["params"], jnp.asarray(z)))
  np.testing.assert_allclose(got["z"], z, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["x_hat"], x_hat, rtol=1e-4, atol=1e-5)
  assert (z != 0).any()


def _site_packages():
  """The interpreter's site-packages (numpy, safetensors), without the project on path."""
  import numpy, safetensors  # noqa: E401
  return sorted({os.path.dirname(os.path.dirname(m.__file__)) for m in (numpy, safetensors)})


@pytest.mark.parametrize("name", saes.names())
def test_numpy_reference_equals_jax_for_every_architecture(name):
  arch, d_in, n = saes.get(name), 24, 48
  hp = arch.hyper(n_latents=n, **({"k": 5} if arch.knob == "k" else {"sparsity_coefficient": 1e-2}))
  keys = jax.random.split(jax.random.PRNGKey(1), 8)
  params = arch.init(keys[0], d_in, n, jax.random.normal(keys[1], (d_in,)) * 0.1, hp)
  # move every param off its init value so each term of each formula matters
  params = {k: v + 0.05 * jax.random.normal(keys[2 + i % 6], v.shape)
            for i, (k, v) in enumerate(sorted(params.items()))}
  if "log_threshold" in params:
    params["log_threshold"] = jnp.full((n,), np.log(0.05), jnp.float32)
  extras = arch.init_extras(n, hp)
  if "threshold" in extras:
    extras = {**extras, "threshold": jnp.asarray(0.02, jnp.float32)}
  x = jax.random.normal(keys[7], (64, d_in)) / np.sqrt(d_in)
  z = np.asarray(arch.encode(params, x, extras, hp))
  x_hat = np.asarray(arch.decode(params, jnp.asarray(z)))
  np_params = {k: np.asarray(v) for k, v in {**params, **extras}.items()}
  cfg = {"architecture": name, "k": getattr(hp, "k", None), "input_norm": "none"}
  z_np = export_reference.encode_numpy(np_params, cfg, np.asarray(x))
  np.testing.assert_allclose(z_np, z, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(export_reference.decode_numpy(np_params, cfg, z_np), x_hat,
                             rtol=1e-4, atol=1e-5)
  assert 0 < (z != 0).mean() < 1
  assert name in export_reference.KNOWN and arch.encode_formula
