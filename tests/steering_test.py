"""Steering: the SAE error term is kept, so an edit that leaves the latents as they are
leaves the logits bit-for-bit unchanged; edits act only from their position on (the LM is
causal); and on the real SmolLM2 a large value on a latent planted for a concept raises
the probability of the concept's tokens."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sae_jax import cli, files
from sae_jax.data import corpus, lm
from sae_jax.tools import interchange, steering
from sae_jax.errors import ConfigError
from sae_jax.tools.steering import Clamp

D, N, LAYER = 32, 64, 1


@pytest.fixture(scope="module")
def tiny_llama():
  cfg = LlamaConfig(vocab_size=97, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
  torch.manual_seed(0)
  return LlamaForCausalLM(cfg).eval()


def _random_sae(input_norm="unit_norm", k=4, seed=0):
  rng = np.random.default_rng(seed)
  W_dec = rng.normal(size=(N, D)).astype(np.float32)
  W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
  params = {"W_enc": W_dec.T.copy(), "W_dec": W_dec, "b_pre": np.zeros(D, np.float32),
            "b_enc": np.zeros(N, np.float32)}
  return params, interchange._base_cfg("topk", D, N, input_norm, k=k, layer=LAYER)


def _ids(S=12, seed=0):
  return torch.from_numpy(np.random.default_rng(seed).integers(0, 97, (2, S)))


def _latents(model, ids, params, cfg):
  h = lm.residual_stream(model, ids, LAYER).numpy()
  z, _ = interchange.encode(params, cfg, h.reshape(-1, D))
  return z.reshape(h.shape[0], h.shape[1], N)


def test_no_edit_and_own_value_leave_logits_unchanged(tiny_llama):
  params, cfg = _random_sae()
  ids = _ids()
  with torch.inference_mode():
    base = tiny_llama(input_ids=ids, use_cache=False).logits
  assert torch.equal(steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, []), base)
  z = _latents(tiny_llama, ids, params, cfg)
  p = 7
  i = int(np.argmax(z[0, p]))
  assert z[0, p, i] > 0 and z[1, p, i] != z[0, p, i]
  # row 0 at position p: its own value; the other row gets the same value, so only row 1 moves
  out = steering.steered_logits(tiny_llama, ids, params, cfg, LAYER,
                                [Clamp(i, float(z[0, p, i]))], positions=[p])
  assert torch.equal(out[0], base[0])
  assert not torch.equal(out[1], base[1])
  never = np.flatnonzero(~z.any(axis=(0, 1)))[0]  # a latent silent on every token
  out = steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, [Clamp(int(never), 0.0)])
  assert torch.equal(out, base)
  out = steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, [Clamp(i, 0.0, "add")])
  assert torch.equal(out, base)


def test_an_edit_acts_from_its_position_on(tiny_llama):
  params, cfg = _random_sae("mean_norm")
  cfg["norm_scale"] = 0.5
  ids = _ids(seed=1)
  with torch.inference_mode():
    base = tiny_llama(input_ids=ids, use_cache=False).logits
  p = 5
  out = steering.steered_logits(tiny_llama, ids, params, cfg, LAYER,
                                [Clamp(3, 20.0), Clamp(9, -4.0, "add")], positions=[p])
  assert torch.equal(out[:, :p], base[:, :p])
  assert (out[:, p:] - base[:, p:]).abs().amax(-1).min() > 1e-3
  # position 0 (the attention sink the SAE never saw) is left alone by default
  out = steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, [Clamp(3, 20.0)],
                                positions=[0])
  assert torch.equal(out, base)


def test_bad_edits_are_one_line_errors(tiny_llama):
  params, cfg = _random_sae()
  ids = _ids()
  with pytest.raises(ConfigError, match="latent 64 is out of range"):
    steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, [Clamp(64, 1.0)])
  with pytest.raises(ConfigError, match="mode"):
    steering.steered_logits(tiny_llama, ids, params, cfg, LAYER, [Clamp(1, 1.0, "set")])
  with pytest.raises(ConfigError, match="cannot steer at layer 2"):
    steering.steered_logits(tiny_llama, ids, params, cfg, 2, [Clamp(1, 1.0)])


# ----------------------------------------------------------------- real SmolLM2


CONCEPT = (" God", " LORD", " Lord")
PROMPTS = ["She opened the door and saw the", "He walked slowly into the",
           "They looked up at the"]


def _concept_sae(model, tokenizer, layer):
  """A TopK SAE (unit_norm inputs) whose latent 0 is a planted concept: "the next word
  is God / LORD / Lord". Its decoder direction is the difference of the mean normalised
  residuals over KJV positions holding " the", between those followed by a concept token
  and the others (conditioning on " the" removes the "Bible style" direction that an
  unconditioned difference picks up). The other latents are random directions."""
  docs = [d for d in corpus.load_documents("embedded", files.cache_root()) if d.source == "kjv"]
  text = " ".join(d.text for d in docs[:12])
  ids = tokenizer(text, return_tensors="pt").input_ids[:, :32 * 64].reshape(32, 64)
  h = lm.residual_stream(model, ids, layer).float().numpy()[:, 1:-1].reshape(-1, 576)
  cur, nxt = ids[:, 1:-1].reshape(-1).numpy(), ids[:, 2:].reshape(-1).numpy()
  concept_ids = [tokenizer.encode(w, add_special_tokens=False)[0] for w in CONCEPT]
  the = tokenizer.encode(" the", add_special_tokens=False)[0]
  is_c, is_the = np.isin(nxt, concept_ids), cur == the
  assert (is_the & is_c).sum() >= 10 and (is_the & ~is_c).sum() >= 50
  hu = h - h.mean(-1, keepdims=True)
  hu /= np.linalg.norm(hu, axis=-1, keepdims=True)
  d = hu[is_the & is_c].mean(0) - hu[is_the & ~is_c].mean(0)
  rng = np.random.default_rng(0)
  W_dec = rng.normal(size=(64, 576)).astype(np.float32)
  W_dec[0] = d
  W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
  params = {"W_enc": W_dec.T.copy(), "W_dec": W_dec, "b_pre": np.zeros(576, np.float32),
            "b_enc": np.zeros(64, np.float32)}
  return params, interchange._base_cfg("topk", 576, 64, "unit_norm", k=8, layer=layer,
                                       model="smollm2"), concept_ids


@pytest.mark.real_model
def test_planted_concept_latent_raises_the_concept_tokens(smollm2):
  model, tokenizer, _ = smollm2
  layer = 15
  params, cfg, concept_ids = _concept_sae(model, tokenizer, layer)
  for prompt in PROMPTS:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
      base = model(input_ids=ids, use_cache=False).logits.float()
    assert torch.equal(steering.steered_logits(model, ids, params, cfg, layer, []), base)
    p0 = torch.softmax(base[0, -1], -1)[concept_ids].sum().item()
    probs = []
    for v in (0.3, 1.0):
      out = steering.steered_logits(model, ids, params, cfg, layer, [Clamp(0, v)])
      probs.append(torch.softmax(out[0, -1], -1)[concept_ids].sum().item())
    assert probs[1] > max(10 * p0, 0.05) and probs[1] > probs[0] > p0, (prompt, p0, probs)
  # generation: the steered continuation says the concept; the unsteered one is the plain
  # greedy continuation
  out = steering.generate(model, tokenizer, params, cfg, layer, PROMPTS[0], [Clamp(0, 1.0)],
                          max_new_tokens=8)
  assert out["steered_ids"][0] in concept_ids, out
  ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
  with torch.inference_mode():
    greedy = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=8, do_sample=False,
                            pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
  assert out["unsteered_ids"] == greedy and greedy[0] not in concept_ids


@pytest.mark.real_model
def test_steer_command_prints_both_generations(tiny_lm_run, capsys):
  rc = cli.main(["steer", tiny_lm_run, "--prompt", "And God said", "--latent", "3",
                 "--value", "4", "--latent", "7", "--value", "2", "--max-new-tokens", "5"])
  out = capsys.readouterr()
  assert rc == 0, out.err
  assert "unsteered:" in out.out and "steered (latent 3 = 4, latent 7 = 2):" in out.out
  rc = cli.main(["steer", tiny_lm_run, "--prompt", "x", "--latent", "999", "--value", "1"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("sae-jax: error: latent 999 is out of range"), err
