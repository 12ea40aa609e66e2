"""Training without a cache (data.cache="none", `sae_jax.data.on_the_fly`) on a tiny Llama
with its own tokenizer: the stream holds the harvest's rows bitwise (another order), the
held-out split is the cache's, a sweep trains through `sae-jax sweep` without writing
activations, and a stopped run resumes to the same bits, running the LM only from the
resume step's shuffle buffer on."""

import json
import os

import numpy as np
import pytest
import torch

from sae_jax import cli, config, errors
from sae_jax.data import batches, harvest, on_the_fly, sources
from sae_jax.training import checkpoint, trainer

from suite_test import _TEXT, _tokenizer_dir  # the end-to-end tests' tiny corpus and tokenizer

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "tiny"
  c.data.model, c.data.layer, c.data.corpus = {model!r}, 1, {corpus!r}
  c.data.cache_dir = {cache!r}
  c.data.cache = "none"
  c.data.context_length, c.data.lm_batch_size, c.data.shuffle_buffer_blocks = 16, 4, 3
  c.data.n_train_tokens, c.data.n_eval_tokens, c.data.eval_doc_fraction = 1800, 600, 0.3
  c.sae.geometric_median_samples = 256
  c.train.batch_size = 60
  c.train.token_budget = 2 * 1800
  c.train.checkpoint_every_steps = 8
  c.train.n_eval_points = 3
  c.train.dead_tokens = 600
  c.train.n_devices = 1
  return c


def get_sweep():
  return [{{"sae.n_latents": n, "sae.k": 4}} for n in (32, 64)]
'''


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """(root, sweep file, its base config): a tiny Llama, its tokenizer and a 20-scene corpus."""
  from transformers import LlamaConfig, LlamaForCausalLM  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("on_the_fly")
  corpus = root / "corpus"
  corpus.mkdir()
  for i in range(20):  # each scene a little different, so contexts differ
    (corpus / f"scene{i}.txt").write_text((_TEXT * (3 + i % 4)).replace("7", str(i % 10)))
  model_dir = str(root / "model")
  n_vocab = _tokenizer_dir(model_dir, _TEXT + "0123456789")
  torch.manual_seed(0)
  LlamaForCausalLM(LlamaConfig(
      vocab_size=n_vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval(
      ).save_pretrained(model_dir)
  path = root / "tiny.py"
  path.write_text(SWEEP.format(model=model_dir, corpus=str(corpus), cache=str(root / "cache")))
  base, _ = cli.points.load_sweep(str(path))
  return root, str(path), base


def _activation_files(cache_dir):
  return [os.path.join(d, f) for d, _, fs in os.walk(cache_dir) for f in fs
          if f.endswith(".npy") or "activations" in d]


def test_stream_holds_the_harvests_rows_and_its_eval_split(sweep):
  root, _, base = sweep
  cfg = base.copy_and_resolve_references()
  cfg.data.cache_dir = str(root / "harvest_cache")
  src = sources.get_source(cfg, progress=False)
  assert isinstance(src, on_the_fly.OnTheFlySource)
  assert _activation_files(cfg.data.cache_dir) == []  # nothing written
  cfg.data.cache = "disk"
  cache = harvest.get_or_harvest(cfg, progress=False)
  assert src.meta["cache_key"] == os.path.basename(cache.path)
  assert src.d_in == cache.d_in == 16
  n = src.n_tokens("train")
  assert n == cache.n_tokens("train") == 1800 and src.n_tokens("eval") == 600
  # held-out: the cache's eval split, bitwise
  np.testing.assert_array_equal(src.read("eval", np.arange(600)), cache.read("eval", np.arange(600)))
  np.testing.assert_array_equal(src.tokens("eval"), cache.tokens("eval"))
  # one epoch of the stream: each position holds the cached row it names, bitwise, and the
  # epoch is a permutation of the rows (the cache's rows as a multiset)
  B = 60
  streamed = [x for _, x in batches.stream(src, B, int(cfg.seed), 0, n // B, order=src.order)]
  rows = np.concatenate([batches.ordered_rows(n, B, int(cfg.seed), s, src.order)
                         for s in range(n // B)])
  np.testing.assert_array_equal(np.sort(rows), np.arange(n))
  np.testing.assert_array_equal(np.concatenate(streamed), cache.read("train", rows))
  # the LM ran once per LM batch of the epoch (the first buffer, computed at start for
  # the stats, is reused by the stream)
  n_ctx = n // 15
  assert src.n_forward_contexts == n_ctx
  # shuffled: a batch of 60 rows mixes all 12 contexts of its buffer (3 LM batches of 4),
  # not 4 contexts' consecutive tokens
  assert len(np.unique(rows[:B] // 15)) == src.order.window_rows // 15 == 12
  # stats of the first buffer are close to the whole split's
  np.testing.assert_allclose(src.stats["mean_norm"], cache.stats["mean_norm"], rtol=0.1)


def test_sweep_trains_every_point_without_a_cache(sweep, capsys):
  root, path, _ = sweep
  out = str(root / "runs")
  assert cli.main(["sweep", path, "--set", f"out_dir={out}", "--no-fit"]) == 0
  log = capsys.readouterr()
  assert "(2 SAEs share one pass over the data)" in log.out, log.out
  assert _activation_files(str(root / "cache")) == []
  recs = [json.loads(l) for l in open(os.path.join(out, "tiny", "results.jsonl"))]
  assert {(r["n_latents"], r["k"]) for r in recs} == {(32, 4), (64, 4)}
  assert sum(r["final"] for r in recs) == 2
  for r in recs:
    assert r["cache"].startswith("none:") and r["config"]["data"]["cache"] == "none"
    assert all(np.isfinite(r[k]) for k in ("normalized_mse", "mse", "l0"))
  final = {r["n_latents"]: r["normalized_mse"] for r in recs if r["final"]}
  assert all(0 < v < 1 for v in final.values()), final


def test_on_the_fly_records_equal_cache_then_train_on_the_same_rows(sweep, tmp_path):
  """The issue's check: the same rows in the same order (the cache read through the
  on-the-fly source's shuffle-buffer order, with its b_pre sample) train to the same
  records, whether the rows come from the LM forward or from a harvested cache."""
  _, _, base = sweep
  c = base.copy_and_resolve_references()
  c.data.cache_dir = str(tmp_path / "cache")
  c.sae.n_latents, c.sae.k = 32, 4
  src = on_the_fly.OnTheFlySource(c, False)
  disk = c.copy_and_resolve_references()
  disk.data.cache = "disk"
  cache = harvest.get_or_harvest(disk, progress=False)
  cache.order, cache.sample_rows = src.order, src.sample_rows
  fly = trainer.train_many([c], src, [str(tmp_path / "fly")], progress=False)[0]
  cached = trainer.train_many([disk], cache, [str(tmp_path / "disk")], progress=False)[0]
  assert len(fly) == len(cached) == 3
  for a, b in zip(fly, cached):
    for key in ("tokens", "step", "flops", "normalized_mse", "mse", "l0", "dead_fraction",
                "dense_fraction", "train_dead_fraction"):
      assert a[key] == b[key], (key, a[key], b[key])


def test_a_stopped_run_resumes_to_the_same_bits(sweep, tmp_path):
  """A run stops at step 53 (2nd epoch; last checkpoint at 48) and a fresh source (a
  relaunch) resumes it: records and parameters equal an uninterrupted run's, and the
  relaunch runs the LM only from step 48's shuffle buffer on."""
  _, _, base = sweep
  c = base.copy_and_resolve_references()
  c.data.cache_dir = str(tmp_path / "cache")
  c.sae.n_latents, c.sae.k = 32, 4
  full = trainer.train(c, on_the_fly.OnTheFlySource(c, False), str(tmp_path / "full"),
                       progress=False)
  original = batches.stream
  batches.stream = lambda s, b, seed, start, end, **kw: original(s, b, seed, start, min(end, 53),
                                                                 **kw)
  try:
    trainer.train(c, on_the_fly.OnTheFlySource(c, False), str(tmp_path / "part"), progress=False)
  finally:
    batches.stream = original
  assert checkpoint.Checkpointer(str(tmp_path / "part" / "checkpoints")).latest_step() == 48
  src = on_the_fly.OnTheFlySource(c, False)
  at_start = src.n_forward_contexts
  resumed = trainer.train(c, src, str(tmp_path / "part"), progress=False)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(resumed) == strip(full)
  sa, _ = checkpoint.Checkpointer(str(tmp_path / "full" / "checkpoints")).restore_untyped(60)
  sb, _ = checkpoint.Checkpointer(str(tmp_path / "part" / "checkpoints")).restore_untyped(60)
  for name in sa["params"]:
    np.testing.assert_array_equal(sa["params"][name], sb["params"][name])
  # steps 48..59 are stream positions 2880..3599 = offsets 1080..1799 of epoch 1: its
  # shuffle buffers 6..9 (180 rows = 12 contexts each), 48 contexts; not the 240 of both
  # epochs, nor anything past the run's end (the read-ahead stops there)
  assert src.n_forward_contexts - at_start == 48


def test_bad_cache_settings_say_what_to_change(sweep, capsys):
  root, path, base = sweep
  assert cli.main(["harvest", "--sweep", path]) == 2
  err = capsys.readouterr().err
  assert "data.cache='none' asks for none" in err and len(err.strip().splitlines()) == 1, err
  assert _activation_files(str(root / "cache")) == []
  c = base.copy_and_resolve_references()
  c.data.cache = "ram"
  with pytest.raises(errors.ConfigError, match=r"data.cache='ram' is not 'disk'"):
    config.validate(c)
  c.data.cache, c.data.shuffle_block_rows = "none", 4096
  with pytest.raises(errors.ConfigError, match=r"with data.cache='none' a block is one LM batch"):
    config.validate(c)


def test_jax_leaves_the_lm_half_the_gpu_unless_the_user_chose(sweep, monkeypatch):
  """data.cache="none" shares one GPU between torch's LM and JAX's SAEs: the CLI caps JAX's
  preallocation (75% by default) at half, and never overrides a value the user set."""
  _, _, base = sweep
  var = "XLA_PYTHON_CLIENT_MEM_FRACTION"
  monkeypatch.setenv(var, "x")  # so that the teardown restores the variable's absence
  monkeypatch.delenv(var)
  c = base.copy_and_resolve_references()
  c.data.cache = "disk"
  cli.share_gpu_with_lm(c)
  assert var not in os.environ
  c.data.cache = "none"
  cli.share_gpu_with_lm(c)
  assert os.environ[var] == cli.LM_GPU_SHARE == "0.5"
  monkeypatch.setenv(var, "0.3")
  cli.share_gpu_with_lm(c)
  assert os.environ[var] == "0.3"
