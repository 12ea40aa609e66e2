"""The evaluation suite (Gao et al. 2024): the splice is exact for an identity SAE and
equals zero-ablation for a zero one, probes find a planted latent and not a shuffled
label, a one-hot ablation effect has sparsity 1, the n-gram explainer finds a planted
bigram, and `sae-jax eval` runs end to end on a tiny Llama with its own tokenizer."""

import json
import os

import jax
import numpy as np
import pytest
import torch

from sae_jax import cli, config, errors
from sae_jax.data import sources
from sae_jax.evals import explain, probes, runs, shared, splice, suite
from sae_jax.saes import topk
from sae_jax.training import checkpoint, optimizer, step


def _tiny_llama(vocab=64, d=16, layers=3, seed=0):
  from transformers import LlamaConfig, LlamaForCausalLM  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=32, num_hidden_layers=layers,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
  return LlamaForCausalLM(cfg).eval()


def _identity_topk(d):
  """A TopK "SAE" with W_enc = [I, -I], W_dec = [I; -I], k = d: z holds the positive and
  negative parts of x, so x_hat = x exactly (each output is one product by +-1)."""
  eye = np.eye(d, dtype=np.float32)
  params = {"W_enc": np.concatenate([eye, -eye], 1), "b_enc": np.zeros(2 * d, np.float32),
            "W_dec": np.concatenate([eye, -eye], 0), "b_pre": np.zeros(d, np.float32)}
  return topk.Hyper(n_latents=2 * d, k=d), params


@pytest.fixture(scope="module")
def tiny():
  model = _tiny_llama()
  tok = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1)).numpy()
  return model, tok


def test_identity_sae_splice_gives_zero_delta_ce_and_kl_exactly(tiny):
  model, tok = tiny
  hp, params = _identity_topk(16)
  ident = runs.SAEOnRaw("topk", hp, params, {}, "none")
  x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  np.testing.assert_array_equal(ident.reconstruct(x), x)
  out = splice.downstream_loss(model, tok, 1, 1, {"sae": ident.reconstruct_torch},
                               mean_D=np.zeros(16), batch_size=4)
  assert out["sae"]["delta_ce"] == 0.0 and out["sae"]["kl"] == 0.0
  assert out["sae"]["loss_recovered_zero"] == 1.0
  assert out["zero"]["ce"] > out["clean"]["ce"] and out["n_tokens"] == 6 * 10


def test_zero_reconstruction_equals_zero_ablation(tiny):
  model, tok = tiny
  hp, params = _identity_topk(16)
  params = dict(params, W_dec=np.zeros_like(params["W_dec"]))
  zero = runs.SAEOnRaw("topk", hp, params, {}, "none")
  out = splice.downstream_loss(model, tok, 2, 1, {"sae": zero.reconstruct_torch})
  assert out["sae"]["ce"] == out["zero"]["ce"] and out["sae"]["kl"] == out["zero"]["kl"]
  assert out["sae"]["loss_recovered_zero"] == 0.0


def test_position_zero_is_never_spliced(tiny):
  model, tok = tiny
  ids = torch.from_numpy(tok.astype(np.int64))
  clean = splice.logits(model, ids, 1, None, 1)
  zeroed = splice.logits(model, ids, 1, torch.zeros_like, 1)
  assert torch.equal(clean[:, 0], zeroed[:, 0]) and not torch.equal(clean[:, 1], zeroed[:, 1])


@pytest.mark.parametrize("input_norm", ["unit_norm", "mean_norm"])
def test_unnormalisation_puts_back_mean_and_scale(input_norm):
  hp, params = _identity_topk(8)
  s = runs.SAEOnRaw("topk", hp, params, {}, input_norm, norm_scale=0.37)
  x = np.random.default_rng(1).normal(3.0, 2.0, size=(7, 8)).astype(np.float32)
  np.testing.assert_allclose(s.reconstruct(x), x, rtol=1e-5, atol=1e-5)


def test_splice_refuses_the_final_norm_layer(tiny):
  model, tok = tiny
  with pytest.raises(errors.ConfigError, match="cannot splice at layer 3"):
    splice.downstream_loss(model, tok, 3, 1, {})


def test_probe_finds_a_planted_latent_and_not_a_shuffled_label():
  rng = np.random.default_rng(0)
  M, N = 800, 300
  y = rng.random(M) < 0.5
  z = np.maximum(rng.normal(size=(M, N)), 0).astype(np.float32)
  z[:, 123] = y * (1 + rng.random(M))  # fires exactly on the positives
  best = probes.best_latent_probe(z[:400], y[:400], z[400:], y[400:])
  assert best["latent"] == 123 and best["loss"] < 0.1
  shuffled = rng.permutation(y)
  best = probes.best_latent_probe(z[:400], shuffled[:400], z[400:], shuffled[400:])
  assert best["loss"] > 0.65  # chance is log 2 = 0.693


def test_reference_probe_finds_a_planted_direction():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 20))
  y = x @ rng.normal(size=20) > 0
  assert probes.reference_probe(x[:300], y[:300], x[300:], y[300:])["loss"] < 0.3


def test_task_labels_from_text():
  words = ["\n", "HAMLET", ".", "Who", "is", "there", "?", "thou", "[", "Enter", "]", "7", " "]
  texts = dict(enumerate(words))
  seq = [0, 1, 2, 0, 3, 12, 4, 12, 5, 6, 12, 7, 12, 8, 9, 10, 12, 11]
  lab = probes.task_labels(np.asarray([seq]), texts)
  on = lambda name: [words[seq[i]] for i in np.flatnonzero(lab[name][0])]  # noqa: E731
  assert on("speaker_name") == ["HAMLET"]
  assert on("question") == ["Who", "is", "there", "?"]
  assert on("archaic_pronoun") == ["thou"] and on("digit") == ["7"]
  assert on("stage_direction") == ["[", "Enter", "]"]
  assert on("line_start") == ["HAMLET", "Who"] and on("sentence_start") == ["Who", "thou"]
  assert on("capitalized") == ["HAMLET", "Who", "Enter"]


def test_one_hot_effect_has_ablation_sparsity_one():
  delta = np.zeros((4, 50))
  delta[2, 7] = -3.0
  assert splice.effect_sparsity(delta) == (1.0, 1 / 200)
  delta[0, 1] = 3.0
  assert splice.effect_sparsity(delta)[0] == pytest.approx(2.0)
  assert np.isnan(splice.effect_sparsity(np.full((2, 5), 0.3))[0])  # a shift changes nothing


def test_explainer_finds_a_planted_bigram():
  rng = np.random.default_rng(0)
  tok = rng.integers(0, 50, size=(200, 32))
  tok[tok == 13] = 14
  for c in range(200):  # plant "7 13" three times per context
    for p in rng.choice(np.arange(1, 31), 3, replace=False):
      tok[c, p - 1:p + 1] = (7, 13)
  tok[rng.random(tok.shape) < 0.02] = 13  # stray 13s without a 7
  fires = (tok == 13) & (np.roll(tok, 1, axis=1) == 7)
  fires[:, 0] = False
  acts = np.where(fires, 1 + rng.random(tok.shape), 0.0)[..., None]
  noise = (rng.random((200, 32, 1)) < 0.1) * rng.random((200, 32, 1))  # a second, unexplained latent
  res = explain.explain_latents(tok, np.concatenate([acts, noise], -1), np.ones(tok.shape, bool))
  assert res[0]["ngram"] == (7, 13) and res[0]["precision"] == 1.0 and res[0]["recall"] == 1.0
  assert res[1]["f1"] < 0.5


def test_ablation_sparsity_in_a_tiny_model(tiny):
  model, tok = tiny
  hp, params = _identity_topk(16)
  ident = runs.SAEOnRaw("topk", hp, params, {}, "none")
  res = splice.ablation_sparsity(model, tok, 1, 1, ident, [(0, 0, 3), (20, 1, 5)], n_future=4)
  for r in res:
    if r["activation"] > 0:
      assert 1.0 <= r["effective_logits"] <= r["n_positions"] * 64
      assert r["fraction"] == pytest.approx(r["effective_logits"] / (r["n_positions"] * 64))


# ------------------------------------------------------------------------- end to end

_TEXT = ("HAMLET.\nWho is there? Speak, and thou shalt answer me.\n\n[Enter the KING and QUEEN.]\n\n"
         "KING.\nThou art my son. Why dost thou weep? Let us go hence, for 7 days.\n\n")


def _tokenizer_dir(path, corpus_text):
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel
  words = sorted(set(re.findall(r"\w+|[^\w\s]|\n| ", corpus_text)))
  vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\n| "), behavior="isolated")
  tk.decoder = decoders.Fuse()
  fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>")
  fast.save_pretrained(path)
  return len(vocab)


def test_sae_jax_eval_end_to_end(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(12):
    (corpus / f"scene{i}.txt").write_text(_TEXT * 6)
  model_dir = str(tmp_path / "model")
  n_vocab = _tokenizer_dir(model_dir, _TEXT)
  _tiny_llama(vocab=n_vocab).save_pretrained(model_dir)

  c = config.default_config()
  c.out_dir, c.name = str(tmp_path / "runs"), "tiny"
  c.data.model, c.data.layer, c.data.corpus = model_dir, 1, str(corpus)
  c.data.cache_dir = str(tmp_path / "cache")
  c.data.context_length, c.data.n_train_tokens, c.data.n_eval_tokens = 16, 3000, 600
  c.data.eval_doc_fraction = 0.3
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 32, 4, 256
  cache = sources.get_source(c, progress=False)
  for n in (32, 64):  # a run directory as the launcher writes it, at its initial state
    c.sae.n_latents = n
    resolved = config.resolve(c, cache.d_in)
    run_dir = tmp_path / "runs" / "tiny" / f"n{n}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(resolved.to_dict()))
    x = cache.read("train", np.arange(256))
    state = step.init_state(jax.random.PRNGKey(n), x, resolved, 1.0, optimizer.make(1e-3))
    ckpt = checkpoint.Checkpointer(str(run_dir / "checkpoints"))
    ckpt.save(0, state, {"records": [], "wall_time_s": 0.0})
    ckpt.close()

  # the launcher's hook: flat scalars of one SAE from a TrainState at an evaluation point
  flat = suite.evaluation_measures(resolved, state, cache, ("basics", "downstream"),
                                        shared.Options(max_contexts=2))
  assert set(flat) == set(suite.FLAT_KEYS["basics"] + suite.FLAT_KEYS["downstream"])
  assert flat["kl"] >= 0 and all(np.isfinite(v) for v in flat.values())

  sweep = str(tmp_path / "runs" / "tiny")
  assert cli.main(["eval", sweep, "--max-contexts", "4", "--max-latents", "4"]) == 0
  recs = [json.loads(l) for l in open(os.path.join(sweep, "eval.jsonl"))]
  assert sorted(r["n_latents"] for r in recs) == [32, 64]
  for r in recs:
    assert r["delta_ce"] is not None and r["kl"] >= 0 and r["normalized_mse"] > 0
    assert 0 < r["probe_loss"] < 1 and 0 < r["probe_loss_reference"] < 2  # tiny data: noisy
    assert r["ablation_sparsity"] >= 1 and 0 <= r["explain_precision"] <= 1
  rep = json.load(open(os.path.join(sweep, "n32", "eval.json")))
  assert {"speaker_name", "question", "stage_direction"} <= set(rep["probes"]["tasks"])
  assert sum(rep["basics"]["density_histogram"]["counts"]) + rep["basics"]["density_histogram"]["dead"] == 32
  assert os.path.isfile(os.path.join(sweep, "plots", "delta_ce_vs_normalized_mse.png"))
  # one run, one measure: only eval.json of that run changes
  assert cli.main(["eval", os.path.join(sweep, "n64", "checkpoints"), "--measures", "basics"]) == 0
  assert json.load(open(os.path.join(sweep, "n64", "eval.json")))["measures"] == ["basics"]
  assert cli.main(["eval", sweep, "--measures", "nonsense"]) == 2


def test_shared_prefix_path_matches_a_full_forward(tiny):
  model, tok = tiny
  ids = torch.from_numpy(tok.astype(np.int64))
  run = splice.Splicer(model, ids, 2)
  assert run.fast
  torch.testing.assert_close(run.logits(torch.zeros_like, 1),
                             splice.logits(model, ids, 2, torch.zeros_like, 1), atol=1e-5, rtol=1e-5)
