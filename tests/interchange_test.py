"""Interchange: our SAEs -> SAELens files -> back leave encode / decode unchanged, the
SAELens files mean what SAELens computes, and OpenAI's TopK state dicts import to the
latents and reconstructions of their own forward. All files are built locally."""

import json
import os
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sae_jax.tools import interchange
from sae_jax.errors import ConfigError

D, N, K = 48, 96, 6


def _acts(B=64, seed=1):
  """Residual-stream-like raw activations: an offset, a few large directions, big norms."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, D)) * 3 + rng.normal(size=(D,)) * 5
  x[:, 0] += 40  # an outlier dimension, as real residual streams have
  return x.astype(np.float32)


def _sae(architecture, input_norm, seed=0):
  """Random params + cfg in our export format, with biases and thresholds that matter."""
  rng = np.random.default_rng(seed)
  W_dec = rng.normal(size=(N, D))
  W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
  scale = 1.0 if input_norm == "unit_norm" else 0.05
  p = {"W_enc": W_dec.T * (1 + rng.random(N)) * scale, "W_dec": W_dec / scale,
       "b_pre": rng.normal(size=(D,)) * 0.05 / scale, "b_enc": rng.normal(size=(N,)) * 0.05}
  if architecture == "jumprelu":
    p["log_threshold"] = np.log(rng.random(N) * 0.1 + 0.01)
  if architecture == "batchtopk":
    p["threshold"] = np.asarray(0.05)
  if architecture == "gated":
    del p["b_enc"]
    p.update(b_gate=rng.normal(size=(N,)) * 0.05, r_mag=rng.normal(size=(N,)) * 0.1,
             b_mag=rng.normal(size=(N,)) * 0.05)
  cfg = interchange._base_cfg(architecture, D, N, input_norm,
                              k=K if architecture == "topk" else None,
                              norm_scale=math.sqrt(D) / 60.0 if input_norm == "mean_norm" else 1.0,
                              model="smollm2", layer=15, context_length=64)
  return {k: np.asarray(v, np.float32) for k, v in p.items()}, cfg


CASES = [("topk", "unit_norm"), ("topk", "mean_norm"), ("topk", "none"),
         ("relu_l1", "none"), ("relu_l1_unit_norm", "unit_norm"), ("kl", "mean_norm"),
         ("jumprelu", "mean_norm"), ("jumprelu", "unit_norm"), ("batchtopk", "unit_norm"),
         ("gated", "unit_norm")]


def _saelens_forward(path, x):
  """SAELens' inference forward (sae_lens/saes/*.py), re-implemented from cfg.json +
  sae_weights.safetensors: norm in, minus b_dec if applied, the activation, decode, norm out."""
  from safetensors.numpy import load_file
  cfg = json.load(open(f"{path}/cfg.json"))
  w = {k: v.astype(np.float64) for k, v in load_file(f"{path}/sae_weights.safetensors").items()}
  x = x.astype(np.float64)
  mu, std = np.zeros((len(x), 1)), np.ones((len(x), 1))
  if cfg["normalize_activations"] == "layer_norm":
    mu = x.mean(-1, keepdims=True)
    std = (x - mu).std(-1, ddof=1, keepdims=True)
    x = (x - mu) / (std + 1e-5)
  else:
    assert cfg["normalize_activations"] == "none"
  sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
  arch = cfg["architecture"]
  if arch == "gated":
    gate = sae_in @ w["W_enc"] + w["b_gate"]
    mag = sae_in @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"]
    z = (gate > 0) * np.maximum(mag, 0)
  else:
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if arch == "topk":
      idx = np.argsort(-pre, axis=-1)[:, :cfg["k"]]
      z = np.zeros_like(pre)
      np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
    elif arch == "jumprelu":
      z = np.maximum(pre, 0) * (pre > w["threshold"])
    else:
      assert arch == "standard"
      z = np.maximum(pre, 0)
  return z, (z @ w["W_dec"] + w["b_dec"]) * std + mu


@pytest.mark.parametrize("architecture,input_norm", CASES)
def test_saelens_round_trip_keeps_encode_and_decode(tmp_path, architecture, input_norm):
  params, cfg = _sae(architecture, input_norm)
  x = _acts()
  src = interchange.write_export(params, cfg, str(tmp_path / "ours"))
  sl = interchange.to_saelens(src, str(tmp_path / "saelens"))
  back_params, back_cfg = interchange.load(sl)
  assert back_cfg["architecture"] == architecture and back_cfg["input_norm"] == input_norm
  z0, n0 = interchange.encode(params, cfg, x)
  z1, n1 = interchange.encode(back_params, back_cfg, x)
  assert (z0 > 0).sum() > len(x)  # the test exercises active latents
  np.testing.assert_array_equal(z0 != 0, z1 != 0)
  np.testing.assert_allclose(z1, z0, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(interchange.decode(back_params, back_cfg, z1, n1),
                             interchange.decode(params, cfg, z0, n0), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("architecture,input_norm", CASES)
def test_saelens_files_compute_what_our_sae_computes(tmp_path, architecture, input_norm):
  params, cfg = _sae(architecture, input_norm)
  x = _acts()
  sl = interchange.to_saelens(interchange.write_export(params, cfg, str(tmp_path / "o")),
                              str(tmp_path / "sl"))
  z_sl, x_hat_sl = _saelens_forward(sl, x)
  z, norm = interchange.encode(params, cfg, x)
  np.testing.assert_array_equal(z != 0, z_sl != 0)
  np.testing.assert_allclose(z, z_sl, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(interchange.decode(params, cfg, z, norm), x_hat_sl,
                             rtol=1e-4, atol=1e-3)
  sl_cfg = json.load(open(f"{sl}/cfg.json"))
  assert sl_cfg["d_in"] == D and sl_cfg["d_sae"] == N
  assert sl_cfg["metadata"]["hook_name"] == "blocks.15.hook_resid_pre"
  assert sl_cfg["metadata"]["model_name"] == interchange.SMOLLM2_HUB_ID
  if architecture == "topk":
    assert sl_cfg["k"] == K and sl_cfg["activation_fn_kwargs"] == {"k": K}


def _openai_forward(sd, x):
  """openai/sparse_autoencoder model.py's Autoencoder forward, re-implemented in torch."""
  x = torch.as_tensor(x, dtype=torch.float64)
  mu = x.mean(-1, keepdim=True)
  xc = x - mu
  std = xc.std(-1, keepdim=True)
  xl = xc / (std + 1e-5)
  pre = (xl - sd["pre_bias"].double()) @ sd["encoder.weight"].double().T + sd["latent_bias"].double()
  top = torch.topk(pre, k=sd["activation_state_dict"]["k"], dim=-1)
  z = torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
  recons = z @ sd["decoder.weight"].double().T + sd["pre_bias"].double()
  return z.numpy(), (recons * std + mu).numpy()


def _openai_state_dict(seed=0):
  g = torch.Generator().manual_seed(seed)
  dec = torch.randn(D, N, generator=g)
  dec /= dec.norm(dim=0, keepdim=True)
  return {"encoder.weight": dec.T * 0.2 + 0.01 * torch.randn(N, D, generator=g),
          "decoder.weight": dec, "pre_bias": 0.1 * torch.randn(D, generator=g),
          "latent_bias": 0.05 * torch.randn(N, generator=g),
          "stats_last_nonzero": torch.zeros(N, dtype=torch.long),
          "latents_activation_frequency": torch.ones(N),
          "latents_mean_square": torch.zeros(N),
          "activation": "TopK", "activation_state_dict": {"k": K, "postact_fn": "ReLU"}}


def test_openai_topk_state_dict_imports_to_their_forward(tmp_path):
  sd = _openai_state_dict()
  path = str(tmp_path / "ae.pt")
  torch.save(sd, path)
  out = interchange.from_openai(path, str(tmp_path / "imported"), layer=8, model="gpt2")
  params, cfg = interchange.load(out)
  assert cfg["architecture"] == "topk" and cfg["k"] == K and cfg["input_norm"] == "unit_norm"
  x = _acts()
  z_ref, x_hat_ref = _openai_forward(sd, x)
  z, norm = interchange.encode(params, cfg, x)
  assert (z > 0).sum(1).min() == K
  np.testing.assert_array_equal(z != 0, z_ref != 0)
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(interchange.decode(params, cfg, z, norm), x_hat_ref,
                             rtol=1e-4, atol=1e-3)
  # and on to SAELens: the same numbers through SAELens' forward
  sl = interchange.to_saelens(out, str(tmp_path / "sl"))
  z_sl, x_hat_sl = _saelens_forward(sl, x)
  np.testing.assert_allclose(z_sl, z_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(x_hat_sl, x_hat_ref, rtol=1e-4, atol=1e-3)


def test_openai_relu_state_dict_imports_without_normalisation():
  sd = _openai_state_dict()
  sd["activation"], sd["activation_state_dict"] = "ReLU", {}
  params, cfg = interchange.read_openai(sd)
  assert cfg["architecture"] == "relu_l1_unit_norm" and cfg["input_norm"] == "none"
  x = _acts()
  pre = (x - sd["pre_bias"].numpy()) @ sd["encoder.weight"].numpy().T + sd["latent_bias"].numpy()
  z, _ = interchange.encode(params, cfg, x)
  np.testing.assert_allclose(z, np.maximum(pre, 0), rtol=1e-5, atol=1e-5)


def test_unmappable_files_fail_with_one_line(tmp_path):
  params, cfg = _sae("topk", "none")
  sl = interchange.to_saelens(interchange.write_export(params, cfg, str(tmp_path / "o")),
                              str(tmp_path / "sl"))
  c = json.load(open(f"{sl}/cfg.json"))
  for norm, match in (("constant_norm_rescale", "no exact sae_jax equivalent"),
                      ("expected_average_only_in", "pass norm_scale")):
    c["normalize_activations"] = norm
    json.dump(c, open(f"{sl}/cfg.json", "w"))
    with pytest.raises(ConfigError, match=match):
      interchange.load(sl)
  sd = _openai_state_dict()
  del sd["pre_bias"]
  with pytest.raises(ConfigError, match="missing"):
    interchange.read_openai(sd)
  with pytest.raises(ConfigError, match="holds no SAE"):
    interchange.load(str(tmp_path))


def test_foreign_configs_that_do_not_say_what_they_are_are_refused(tmp_path):
  """Issue 20: a cfg.json without architecture was imported as relu_l1_unit_norm (k
  dropped), and k = 10**6 > d_sae was accepted."""
  params, cfg = _sae("topk", "none")
  sl = interchange.to_saelens(interchange.write_export(params, cfg, str(tmp_path / "o")),
                              str(tmp_path / "sl"))
  good = json.load(open(f"{sl}/cfg.json"))
  del good["sae_jax"]  # a config as SAELens itself writes it
  cases = [({"architecture": None}, "does not say which architecture"),
           ({"k": 10**6, "activation_fn_kwargs": {"k": 10**6}}, r"k=1000000, which is not an integer in \[1, d_sae"),
           ({"k": 0, "activation_fn_kwargs": {}}, "k=0"),
           ({"k": K + 1}, "two values of k"),
           ({"architecture": "standard"}, "disagree; for a TopK SAE set architecture to 'topk'"),
           ({"d_sae": N + 1}, "do not belong together")]
  for change, match in cases:
    c = {**good, **change}
    if change.get("architecture", "") is None:
      del c["architecture"]
    json.dump(c, open(f"{sl}/cfg.json", "w"))
    with pytest.raises(ConfigError, match=match) as e:
      interchange.load(sl)
    assert "\n" not in str(e.value)
  json.dump(good, open(f"{sl}/cfg.json", "w"))
  back, back_cfg = interchange.load(sl)
  assert back_cfg["architecture"] == "topk" and back_cfg["k"] == K
  open(f"{sl}/cfg.json", "w").write("{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    interchange.load(sl)


def test_a_corrupted_export_is_named(tmp_path):
  params, cfg = _sae("topk", "none")
  exp = interchange.write_export(params, cfg, str(tmp_path / "o"))
  weights = os.path.join(exp, "sae.safetensors")
  blob = open(weights, "rb").read()
  open(weights, "wb").write(blob[:len(blob) // 2])
  with pytest.raises(ConfigError, match=f"the export {exp} cannot be read") as e:
    interchange.load(exp)
  assert "\n" not in str(e.value) and "sae-jax export" in str(e.value)
  open(weights, "wb").write(blob)
  open(os.path.join(exp, "config.json"), "w").write('{"format": 1')
  with pytest.raises(ConfigError, match="cannot be read"):
    interchange.load(exp)


def _sparsify_folder(root, k=K, **cfg_changes):
  """One hookpoint's folder as EleutherAI sparsify's `SparseCoder.save_to_disk` writes it
  (cfg.json with d_in; sae.safetensors with its module's parameter names)."""
  rng = np.random.default_rng(3)
  enc = (rng.normal(size=(N, D)) * 0.05).astype(np.float32)
  W_dec = enc / np.linalg.norm(enc, axis=1, keepdims=True)
  weights = {"encoder.weight": enc, "encoder.bias": (rng.normal(size=(N,)) * 0.05).astype(np.float32),
             "W_dec": W_dec.astype(np.float32), "b_dec": (rng.normal(size=(D,)) * 2).astype(np.float32)}
  cfg = {"activation": "topk", "expansion_factor": 2, "normalize_decoder": True, "num_latents": N,
         "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D,
         **cfg_changes}
  os.makedirs(root, exist_ok=True)
  save_file(weights, os.path.join(root, "sae.safetensors"))
  json.dump(cfg, open(os.path.join(root, "cfg.json"), "w"))
  return weights


def _sparsify_forward(w, x, k=K):
  """sparsify's SparseCoder.forward in numpy: TopK_k(ReLU(encoder(x - b_dec))), decoded
  by W_dec^T plus b_dec (float64)."""
  x = x.astype(np.float64)
  pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"], 0)
  idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
  z = np.zeros_like(pre)
  np.put_along_axis(z, idx, np.take_along_axis(pre, idx, 1), 1)
  return z, z @ w["W_dec"] + w["b_dec"]


def test_sparsify_folder_imports_to_its_forward(tmp_path):
  folder = str(tmp_path / "layers.6")
  w = _sparsify_folder(folder)
  params, cfg = interchange.load(folder)
  assert cfg["architecture"] == "topk" and cfg["k"] == K and cfg["input_norm"] == "none"
  assert cfg["imported_from"].startswith("sparsify:") and cfg["hook_name"] == "layers.6"
  x = _acts()
  z_ref, x_hat_ref = _sparsify_forward(w, x)
  z, norm = interchange.encode(params, cfg, x)
  np.testing.assert_array_equal(z != 0, z_ref != 0)
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(interchange.decode(params, cfg, z, norm), x_hat_ref, rtol=1e-4, atol=1e-3)
  # and on to SAELens: the same numbers through SAELens' forward
  out = interchange.write_export(params, cfg, str(tmp_path / "ours"))
  z_sl, x_hat_sl = _saelens_forward(interchange.to_saelens(out, str(tmp_path / "sl")), x)
  np.testing.assert_allclose(z_sl, z_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(x_hat_sl, x_hat_ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("change,match", [
    ({"transcode": True}, "a transcoder"), ({"skip_connection": True}, "a skip connection"),
    ({"activation": "groupmax"}, "only sparsify's topk"), ({"k": N + 1}, "not an integer in"),
    ({"d_in": D + 1}, "do not belong together")])
def test_sparsify_folders_sae_jax_cannot_represent_are_refused(tmp_path, change, match):
  folder = str(tmp_path / "sp")
  _sparsify_folder(folder, **change)
  with pytest.raises(ConfigError, match=match) as e:
    interchange.load(folder)
  assert "\n" not in str(e.value)
