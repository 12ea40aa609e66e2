"""The Hugging Face Hub: `sae-jax push --dry-run` builds the folder a push uploads
(SAELens's layout, our export, the records, the per-latent firing frequency), and
`interchange.load("hf://...")` reads it back through huggingface_hub from a hub cache
laid out by hand (HF_HUB_OFFLINE: no network here)."""

import json
import os
import re
import shutil

import huggingface_hub
import huggingface_hub.constants  # a lazy submodule: imported before the tests patch it
import numpy as np
import pytest
from safetensors.numpy import load_file

from sae_jax import cli
from sae_jax.errors import ConfigError
from sae_jax.tools import interchange
from sweeps import launch
from interchange_test import _acts, _sparsify_folder, _sparsify_forward

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "pushed"
  c.out_dir = {out!r}
  c.data.source = "synthetic"
  c.data.generator.d_in = 16
  c.data.n_train_tokens, c.data.n_eval_tokens = 4096, 2048
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 64, 4, 1024
  c.train.batch_size, c.train.token_budget, c.train.lr = 128, 4096, 3e-3
  c.train.n_eval_points, c.train.n_devices, c.train.loggers = 1, 1, ()
  return c


def get_sweep():
  return [{{"sae.n_latents": 64}}]
'''
FILES = ["cfg.json", "config.json", "records.json", "sae.safetensors",
         "sae_weights.safetensors", "sparsity.safetensors"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("hub")
  (root / "pushed.py").write_text(SWEEP.format(out=str(root / "runs")))
  launch.run_sweep(str(root / "pushed.py"), fit=False, progress=False, log=lambda *_: None)
  (run,) = [d for d in os.listdir(root / "runs" / "pushed") if d.startswith("n64")]
  return str(root / "runs" / "pushed" / run)


def test_push_dry_run_builds_the_folder_and_lists_it(run_dir, capsys, monkeypatch):
  monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                      lambda *a, **k: pytest.fail("uploaded on a dry run"))
  assert cli.main(["push", run_dir, "me/saes", "--subdir", "topk64", "--dry-run"]) == 0
  out = capsys.readouterr().out.splitlines()
  folder = os.path.join(run_dir, "hub")
  assert out[0].startswith(f"{folder}: would upload 6 files to https://huggingface.co/me/saes")
  assert [l.split()[0] for l in out[1:]] == [f"topk64/{f}" for f in FILES]
  assert sorted(os.listdir(folder)) == FILES
  # SAELens's layout, and our export read back exactly
  sl = json.load(open(os.path.join(folder, "cfg.json")))
  assert (sl["architecture"], sl["d_in"], sl["d_sae"], sl["k"]) == ("topk", 16, 64, 4)
  ours, cfg = interchange.load(os.path.join(run_dir, "export"))
  back, back_cfg = interchange.load(folder)
  assert back_cfg == cfg and all(np.array_equal(back[k], ours[k]) for k in ours)
  # the firing frequency is that of the held-out split the records were measured on
  records = json.load(open(os.path.join(folder, "records.json")))
  sp = load_file(os.path.join(folder, "sparsity.safetensors"))
  freq = sp["firing_frequency"]
  assert freq.shape == (64,)
  np.testing.assert_allclose(sp["sparsity"], np.log10(freq + 1e-10), rtol=1e-6)
  assert freq.sum() == pytest.approx(records[-1]["l0"], rel=1e-3)  # sum of frequencies = L0
  assert np.mean(freq == 0) == pytest.approx(records[-1]["dead_fraction"], abs=1.5 / 64)


def _hand_laid_hub_cache(root, repo_id, subdir, folder):
  """models--<owner>--<name>/refs/main + snapshots/<commit>/<subdir>/..., as
  huggingface_hub lays out its cache (plain files instead of links to blobs)."""
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = root / ("models--" + repo_id.replace("/", "--"))
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  shutil.copytree(folder, repo / "snapshots" / commit / subdir)


def test_load_hf_path_from_the_hub_cache_offline(run_dir, tmp_path, monkeypatch):
  if not os.path.isdir(os.path.join(run_dir, "hub")):
    assert cli.main(["push", run_dir, "me/saes", "--dry-run"]) == 0
  _hand_laid_hub_cache(tmp_path, "me/saes", "topk64", os.path.join(run_dir, "hub"))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  params, cfg = interchange.load("hf://me/saes/topk64")
  ours, ours_cfg = interchange.load(os.path.join(run_dir, "export"))
  assert cfg == ours_cfg and all(np.array_equal(params[k], ours[k]) for k in ours)
  # SAELens's files alone (no sae.safetensors) load to the same encoder
  sl_only = tmp_path / "sl"
  (sl_only).mkdir()
  for f in ("cfg.json", "sae_weights.safetensors"):
    shutil.copy(os.path.join(run_dir, "hub", f), sl_only / f)
  _hand_laid_hub_cache(tmp_path / "cache2", "them/saes", "", sl_only)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache2"))
  sl_params, sl_cfg = interchange.load("hf://them/saes")
  x = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
  np.testing.assert_allclose(interchange.encode(sl_params, sl_cfg, x)[0],
                             interchange.encode(ours, ours_cfg, x)[0], atol=1e-4)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
  for path, words in (("hf://me/saes/nope", "has no folder 'nope'"),
                      ("hf://me/missing", "cannot fetch hf://me/missing"),
                      ("hf://me", "is not hf://owner/name[/subdir]")):
    with pytest.raises(ConfigError, match=re.escape(words)) as e:
      interchange.load(path)
    assert "\n" not in str(e.value)


def test_push_refuses_a_bad_repo_id_and_an_unfinished_run(tmp_path, capsys, run_dir):
  assert cli.main(["push", run_dir, "no-owner", "--dry-run"]) == 2
  assert "repo id 'no-owner' is not owner/name" in capsys.readouterr().err
  assert cli.main(["push", str(tmp_path), "me/saes", "--dry-run"]) == 2
  assert "is not a finished run" in capsys.readouterr().err


def test_load_sparsify_layout_from_the_hub_cache_offline(tmp_path, monkeypatch):
  """A sparsify repository (one folder per hookpoint) read through hf://owner/name/hookpoint,
  offline from the hub cache, computes what sparsify's forward computes."""
  w = _sparsify_folder(str(tmp_path / "repo" / "layers.6"))
  _hand_laid_hub_cache(tmp_path / "cache", "eleuther/sae-smollm2", "", tmp_path / "repo")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  params, cfg = interchange.load("hf://eleuther/sae-smollm2/layers.6")
  assert cfg["imported_from"].startswith("sparsify:") and cfg["architecture"] == "topk"
  x = _acts()
  z_ref, _ = _sparsify_forward(w, x)
  np.testing.assert_allclose(interchange.encode(params, cfg, x)[0], z_ref, rtol=1e-4, atol=1e-4)
