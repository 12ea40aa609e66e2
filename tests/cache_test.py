"""Tests of sae_jax.data.cache and sae_jax.data.harvest: the cache format, corruption, harvest, resume, reuse."""

import json
import math
import os

import numpy as np
import pytest
import torch

from sae_jax import config
from sae_jax.data import cache as cache_lib, corpus, harvest, lm
from sae_jax.data.cache import ActivationCache
from sae_jax.errors import CacheCorruptError, ConfigError

D = 8


def _stored(x, dtype):
  return cache_lib.from_storage(cache_lib.to_storage(x, dtype), dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_write_cache_round_trip_and_stats(tmp_path, dtype):
  rng = np.random.default_rng(0)
  x_train = rng.normal(3.0, 2.0, (1000, D)).astype(np.float32)
  x_eval = rng.normal(size=(130, D)).astype(np.float32)
  tok = rng.integers(0, 50, (16, 64)).astype(np.int32)
  cache = cache_lib.write_cache(str(tmp_path / "c"), {"train": x_train, "eval": x_eval},
                                  {"model": "synthetic"}, dtype=dtype, shard_tokens=128,
                                  tokens={"train": tok})
  assert cache.d_in == D and cache.n_tokens("train") == 1000 and cache.n_tokens("eval") == 130
  assert len(os.listdir(tmp_path / "c" / "train")) == 8 + 1  # 7 full shards + 1 short + tokens
  assert not os.path.exists(tmp_path / "c.partial")
  rows = rng.integers(0, 1000, 300)  # unsorted, repeated, across all shards
  np.testing.assert_array_equal(cache.read("train", rows), _stored(x_train, dtype)[rows])
  np.testing.assert_array_equal(cache.read("eval", [129, 0, 64]), _stored(x_eval, dtype)[[129, 0, 64]])
  np.testing.assert_array_equal(cache.tokens("train"), tok)
  with pytest.raises(IndexError):
    cache.read("train", [1000])

  x64 = _stored(x_train, dtype).astype(np.float64)
  reopened = ActivationCache.open(str(tmp_path / "c"))
  st = reopened.stats
  np.testing.assert_allclose(st["mean"], x64.mean(0), rtol=1e-12)
  np.testing.assert_allclose(st["mean_norm"], np.linalg.norm(x64, axis=1).mean(), rtol=1e-12)
  np.testing.assert_allclose(st["mean_sq_norm"], (x64**2).sum(1).mean(), rtol=1e-12)
  np.testing.assert_allclose(st["total_variance"], ((x64 - x64.mean(0))**2).sum(1).mean(),
                             rtol=1e-9)
  assert reopened.meta["complete"] and reopened.meta["model"] == "synthetic"


def test_corrupted_or_truncated_shard_raises(tmp_path):
  x = np.random.default_rng(0).normal(size=(300, D)).astype(np.float32)
  path = str(tmp_path / "c")
  cache_lib.write_cache(path, {"train": x}, {}, shard_tokens=128)
  shard = os.path.join(path, "train", "shard_00001.npy")
  with open(shard, "r+b") as f:  # flip bytes in the data, same size
    f.seek(-20, os.SEEK_END)
    b = f.read(4)
    f.seek(-20, os.SEEK_END)
    f.write(bytes(v ^ 0xFF for v in b))
  with pytest.raises(CacheCorruptError, match=r"shard_00001.npy is corrupted .*delete .*/c "):
    ActivationCache.open(path, verify=True)
  ActivationCache.open(path)  # size and shape still fine: only sha catches it
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) - 10)
  with pytest.raises(CacheCorruptError, match="truncated"):
    ActivationCache.open(path, verify=False)


def test_open_reads_metadata_only_and_a_bad_row_names_its_shard(tmp_path, monkeypatch):
  x = np.random.default_rng(0).normal(size=(300, D)).astype(np.float32)
  path = str(tmp_path / "c")
  cache_lib.write_cache(path, {"train": x}, {}, shard_tokens=128)
  shard = os.path.join(path, "train", "shard_00002.npy")
  with open(shard, "r+b") as f:  # one NaN (float16 0x7fff) in the last row, same size
    f.seek(-2, os.SEEK_END)
    f.write(b"\xff\x7f")
  real_load = np.load
  monkeypatch.setattr(cache_lib.files, "file_sha256", lambda *_: pytest.fail("hashed on open"))
  monkeypatch.setattr(np, "load", lambda f, mmap_mode=None, **k: (
      real_load(f, mmap_mode=mmap_mode, **k) if mmap_mode == "r" else pytest.fail("read " + f)))
  cache = ActivationCache.open(path)  # no hash, no full read: headers and sizes only
  np.testing.assert_array_equal(cache.read("train", [0, 255]), _stored(x[[0, 255]], "float16"))
  with pytest.raises(CacheCorruptError, match=r"train/shard_00002.npy is corrupted \(non-finite"):
    cache.read("train", [5, 299])
  monkeypatch.undo()
  with pytest.raises(CacheCorruptError, match="shard_00002.npy is corrupted"):
    ActivationCache.open(path, verify=True)


# ------------------------------------------------------------------- harvest, fake LM


class _FakeTokenizer:
  eos_token_id = 1

  def __call__(self, texts, add_special_tokens=False, verbose=False):
    return {"input_ids": [[2 + ord(c) % 90 for c in t] for t in texts]}


class _FakeModel:
  """Counts forward passes; the fake residual stream depends on token id and position."""

  def __init__(self, crash_after=None):
    self.calls, self.crash_after = 0, crash_after


def _fake_residual_stream(model, ids_BxS, layer):
  if model.crash_after is not None and model.calls >= model.crash_after:
    raise KeyboardInterrupt("killed")
  model.calls += 1
  pos_S = torch.arange(ids_BxS.shape[1], dtype=torch.float32)
  d_D = torch.arange(1, D + 1, dtype=torch.float32)
  return (torch.sin(ids_BxS.float()[..., None] * d_D * 0.1) + 0.01 * pos_S[:, None]
          + 0.001 * ids_BxS.float().cumsum(1)[..., None] + layer)


@pytest.fixture
def fake_lm(monkeypatch):
  models = []

  def load(model, device="cpu", torch_dtype="float32", cache_dir=None):
    models.append(_FakeModel(crash_after=fake_lm_state["crash_after"]))
    return models[-1], _FakeTokenizer(), {}

  fake_lm_state = {"crash_after": None, "models": models}
  monkeypatch.setattr(lm, "describe_lm", lambda model, cache_dir=None: dict(
      name=model, n_layers=6, d_model=D, weights_hash="f" * 64))
  monkeypatch.setattr(lm, "load_lm", load)
  monkeypatch.setattr(lm, "residual_stream", _fake_residual_stream)
  return fake_lm_state


def _corpus(tmp_path, n_docs=40):
  p = tmp_path / "corpus.jsonl"
  rng = np.random.default_rng(1)
  words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
  with open(p, "w") as f:
    for i in range(n_docs):
      f.write(json.dumps({"id": f"doc{i}", "text": " ".join(rng.choice(words, 40))}) + "\n")
  return str(p)


def _cfg(tmp_path, cache, **data):
  c = config.default_config()
  c.data.corpus = _corpus(tmp_path)
  c.data.cache_dir = str(cache)
  c.data.context_length = 16
  c.data.n_train_tokens = 1000
  c.data.n_eval_tokens = 200
  c.data.eval_doc_fraction = 0.25
  c.data.shard_tokens = 128
  c.data.lm_batch_size = 4
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def _all_rows(cache, split):
  return cache.read(split, np.arange(cache.n_tokens(split)))


def test_harvest_layout_rows_and_split(tmp_path, fake_lm):
  cache = harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "cache"), progress=False)
  m = cache.meta
  assert m["layer"] == 3 and m["site"] == "residual" and m["d_in"] == D  # middle of 6 layers
  assert cache.n_tokens("train") == 1000 and cache.n_tokens("eval") == 200
  assert [s["n_rows"] for s in m["splits"]["train"]["shards"]] == [128] * 7 + [104]
  tok = cache.tokens("train")
  P = 15  # context_length - exclude_first
  assert tok.shape == (67, 16) and m["splits"]["train"]["n_contexts"] == 67  # ceil(1000 / 15)
  # row r = context r // P, position r % P + 1
  expected = _fake_residual_stream(_FakeModel(), torch.from_numpy(tok).long(), 3)[:, 1:]
  expected = expected.reshape(-1, D)[:1000].numpy()
  np.testing.assert_array_equal(_all_rows(cache, "train"), _stored(expected, "float16"))
  # train and eval contexts come from disjoint documents
  docs = corpus.load_documents(_cfg(tmp_path, "x").data.corpus, "")
  train, evl = corpus.split_documents(docs, 0.25, 0)
  assert evl and not {d.id for d in train} & {d.id for d in evl}
  assert os.path.basename(cache.path) == harvest.cache_key(
      {k: m[k] for k in harvest.cache_settings(_cfg(tmp_path, "x"), "f" * 64, 3, "")})


def test_same_settings_reuse_cache_without_the_lm(tmp_path, fake_lm, monkeypatch):
  cfg = _cfg(tmp_path, tmp_path / "cache")
  first = harvest.get_or_harvest(cfg, progress=False)
  monkeypatch.setattr(lm, "load_lm", lambda *a, **k: pytest.fail("loaded the LM again"))
  # reuse costs O(metadata): no shard hashed, the corpus not parsed again
  with monkeypatch.context() as m:
    m.setattr(cache_lib.files, "file_sha256", lambda *_: pytest.fail("hashed a shard"))
    m.setattr(corpus, "load_documents", lambda *_: pytest.fail("parsed the corpus"))
    second = harvest.get_or_harvest(cfg, progress=False)
  assert second.path == first.path
  with open(cfg.data.corpus, "a") as f:  # an edited corpus is a different cache
    f.write(json.dumps({"id": "new", "text": "alpha beta"}) + "\n")
  with pytest.raises(pytest.fail.Exception):
    harvest.get_or_harvest(cfg, progress=False)
  cfg = _cfg(tmp_path, tmp_path / "cache")
  cfg.data.n_train_tokens = 900  # a different setting is a different cache
  with pytest.raises(pytest.fail.Exception):
    harvest.get_or_harvest(cfg, progress=False)


def test_killed_harvest_is_resumed_and_equals_uninterrupted(tmp_path, fake_lm):
  whole = harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "a"), progress=False)
  cfg = _cfg(tmp_path, tmp_path / "b")
  fake_lm["crash_after"] = 6  # 6 batches of 4 contexts = 360 rows: 2 shards on disk
  with pytest.raises(KeyboardInterrupt):
    harvest.get_or_harvest(cfg, progress=False)
  act = tmp_path / "b" / "activations"
  (partial,) = [f for f in os.listdir(act) if not f.endswith(".lock")]
  assert partial.endswith(".partial")
  progress = json.loads((act / partial / "progress.json").read_text())
  assert len(progress["splits"]["train"]) == 2
  fake_lm["crash_after"] = None
  resumed = harvest.get_or_harvest(cfg, progress=False)
  assert os.listdir(act) == [partial[:-len(".partial")]]
  # 1000 rows = 67 contexts = 17 batches; resuming at row 256 (context 17, batch 4) skips 4
  assert fake_lm["models"][-1].calls == 17 - 4 + 4  # + 4 batches for the 200 eval rows
  for split in ("train", "eval"):
    np.testing.assert_array_equal(_all_rows(resumed, split), _all_rows(whole, split))
    assert resumed.meta["splits"][split]["shards"] == whole.meta["splits"][split]["shards"]
  assert resumed.meta["stats"] == whole.meta["stats"]


def test_corrupt_shard_in_partial_is_redone(tmp_path, fake_lm):
  cfg = _cfg(tmp_path, tmp_path / "b")
  fake_lm["crash_after"] = 10
  with pytest.raises(KeyboardInterrupt):
    harvest.get_or_harvest(cfg, progress=False)
  (partial,) = (tmp_path / "b" / "activations").glob("*.partial")
  with open(partial / "train" / "shard_00001.npy", "r+b") as f:
    f.seek(200)
    f.write(b"\0\1\2\3")
  fake_lm["crash_after"] = None
  cache = harvest.get_or_harvest(cfg, progress=False)
  whole = harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "a"), progress=False)
  np.testing.assert_array_equal(_all_rows(cache, "train"), _all_rows(whole, "train"))


def test_harvest_errors(tmp_path, fake_lm):
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match=r"cannot write to .*file/activations.*set data.cache_dir"):
    harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "file"), progress=False)
  assert not fake_lm["models"]  # checked before loading the model
  with pytest.raises(ConfigError, match=r"the train split .* has only \d+ tokens .*lower "
                     r"data.n_train_tokens or add text"):
    harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "c", n_train_tokens=10**6),
                               progress=False)
  with pytest.raises(ConfigError, match=r"the eval split .* has only \d+ tokens"):
    harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "c", n_eval_tokens=10**5),
                               progress=False)
  assert all(m.calls == 0 for m in fake_lm["models"])  # found before any LM forward
  assert not list((tmp_path / "c" / "activations").glob("*.partial"))  # nothing left behind
  with pytest.raises(ConfigError, match=r"layer 7 is out of range .*use 0..6"):
    harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "c", layer=7), progress=False)


# ------------------------------------------------------------------ harvest, real model


@pytest.mark.real_model
def test_real_model_resume_equals_uninterrupted_and_hidden_states(tmp_path, smollm2, monkeypatch):
  model, tokenizer, info = smollm2
  root = config.cache_root()
  corpus.load_documents("embedded", root)  # fetch once into the user cache, then share it
  calls = {"n": 0, "crash_after": None}
  real_rs = lm.residual_stream

  def counting_rs(m, ids, layer):
    if calls["crash_after"] is not None and calls["n"] >= calls["crash_after"]:
      raise KeyboardInterrupt("killed")
    calls["n"] += 1
    return real_rs(m, ids, layer)

  monkeypatch.setattr(lm, "load_lm", lambda *a, **k: (model, tokenizer, info))
  monkeypatch.setattr(lm, "describe_lm", lambda *a, **k: dict(info))
  monkeypatch.setattr(lm, "residual_stream", counting_rs)

  def cfg(cache):
    if not os.path.exists(cache):
      os.makedirs(cache)
      os.symlink(os.path.join(root, "corpus"), os.path.join(cache, "corpus"))
    c = config.default_config()
    c.data.cache_dir = str(cache)
    c.data.n_train_tokens, c.data.n_eval_tokens = 630, 126
    c.data.shard_tokens, c.data.lm_batch_size = 126, 4
    return c

  whole = harvest.get_or_harvest(cfg(tmp_path / "a"), progress=False)
  assert whole.meta["layer"] == 15 and whole.d_in == 576
  calls["crash_after"] = 1  # 4 contexts x 63 rows: 2 shards of 126 written
  with pytest.raises(KeyboardInterrupt):
    harvest.get_or_harvest(cfg(tmp_path / "b"), progress=False)
  calls["crash_after"] = None
  resumed = harvest.get_or_harvest(cfg(tmp_path / "b"), progress=False)
  for split in ("train", "eval"):
    np.testing.assert_array_equal(_all_rows(resumed, split), _all_rows(whole, split))
  # the cached rows are hidden_states[15] of a plain forward on the stored tokens
  tok = torch.from_numpy(whole.tokens("train")[:2]).long()
  with torch.inference_mode():
    hs = model(input_ids=tok, output_hidden_states=True).hidden_states[15][:, 1:]
  np.testing.assert_allclose(whole.read("train", np.arange(126)),
                             hs.reshape(-1, 576).numpy().astype(np.float16), rtol=0, atol=1e-5)


def test_harvest_verify_names_the_bad_shard_in_one_line(tmp_path, fake_lm, capsys):
  from sae_jax import cli  # pylint: disable=import-outside-toplevel
  c = _cfg(tmp_path, tmp_path / "cache")
  argv = ["harvest", "--set"] + [f"data.{k}={c.data[k]}" for k in (
      "corpus", "cache_dir", "context_length", "n_train_tokens", "n_eval_tokens",
      "eval_doc_fraction", "shard_tokens", "lm_batch_size")]
  assert cli.main(argv) == 0
  path = capsys.readouterr().out.splitlines()[0]
  assert cli.main(argv + ["--verify"]) == 0
  assert "every sha256 verified" in capsys.readouterr().out
  shard = os.path.join(path, "eval", "shard_00001.npy")
  with open(shard, "r+b") as f:
    f.seek(-3, os.SEEK_END)
    f.write(b"\x00\x01\x02")
  assert cli.main(argv) == 0  # reuse checks sizes and shapes only
  capsys.readouterr()
  assert cli.main(argv + ["--verify"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if not l.startswith("[sae_jax]")]
  assert len(err) == 1 and err[0].startswith("sae-jax: error: activation cache file ")
  err = err[0]
  assert "eval/shard_00001.npy is corrupted (sha256 mismatch)" in err and path in err


_SITE_OFFSET = {"residual": 0.0, "resid_pre": 0.0, "attn_out": 10.0, "resid_mid": 20.0,
                "mlp_in": 30.0, "mlp_out": 40.0, "resid_post": 50.0}


def _fake_activations(model, ids_BxS, targets):
  model.calls += 1
  model.targets.append(list(targets))
  pos_S = torch.arange(ids_BxS.shape[1], dtype=torch.float32)
  d_D = torch.arange(1, D + 1, dtype=torch.float32)
  base = torch.sin(ids_BxS.float()[..., None] * d_D * 0.1) + 0.01 * pos_S[:, None]
  return {(l, s): base + l + _SITE_OFFSET[s] for l, s in targets}


@pytest.fixture
def fake_sites(fake_lm, monkeypatch):
  real_model = _FakeModel.__init__

  def init(self, crash_after=None):
    real_model(self, crash_after)
    self.targets = []
  monkeypatch.setattr(_FakeModel, "__init__", init)
  monkeypatch.setattr(lm, "activations", _fake_activations)
  monkeypatch.setattr(lm, "check_site_available", lambda model, site: None)
  return fake_lm


def test_many_sites_fill_one_cache_each_from_one_lm_pass(tmp_path, fake_sites):
  cfg = _cfg(tmp_path, tmp_path / "many", layer=2, site="resid_post", layers=(1, 4),
             sites=("attn_out", "mlp_out"))
  config.validate(cfg)
  caches = harvest.get_or_harvest_many(cfg, progress=False)
  targets = [(2, "resid_post"), (1, "attn_out"), (1, "mlp_out"), (4, "attn_out"), (4, "mlp_out")]
  assert list(caches) == targets
  (model,) = fake_sites["models"]
  n_batches = sum(math.ceil(c.meta["splits"][s]["n_contexts"] / 4)
                  for c in caches.values() for s in ("train", "eval")) // len(targets)
  assert model.calls == n_batches  # one LM forward per batch of contexts for all five
  assert all(sorted(t) == sorted(targets) for t in model.targets)
  for (layer, site), cache in caches.items():
    assert (cache.meta["layer"], cache.meta["site"]) == (layer, site)
    assert cache.meta["hook_name"] == f"blocks.{layer}.hook_{site}"
    alone = _cfg(tmp_path, tmp_path / f"alone_{layer}_{site}", layer=layer, site=site)
    single = harvest.get_or_harvest(alone, progress=False)
    assert os.path.basename(single.path) == os.path.basename(cache.path)  # same settings, same key
    for split in ("train", "eval"):
      np.testing.assert_array_equal(_all_rows(single, split), _all_rows(cache, split))
  assert harvest.get_or_harvest(cfg, progress=False).path == caches[(2, "resid_post")].path


@pytest.mark.parametrize("data, words", [
    ({"site": "resid_middle"}, "unknown hook site 'resid_middle'; use one of residual, resid_pre"),
    ({"sites": ("attn_out", "attn_pre")}, "unknown hook site 'attn_pre'"),
    ({"layers": (3, 5, 3)}, "data.layers=(3, 5, 3) lists 3 twice"),
    ({"sites": ("mlp_out", "mlp_out")}, "lists 'mlp_out' twice"),
    ({"site": "attn_out", "layer": 6}, "layer 6 is out of range for smollm2 at site 'attn_out' "
                                       "(6 blocks: use 0..5)"),
])
def test_bad_sites_and_layers_are_one_line_errors_and_write_nothing(tmp_path, fake_sites, data,
                                                                    words):
  cfg = _cfg(tmp_path, tmp_path / "cache", **data)
  with pytest.raises(ConfigError) as e:
    harvest.get_or_harvest(cfg, progress=False)
  assert words in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "cache" / "activations") or not os.listdir(
      tmp_path / "cache" / "activations")
  assert not fake_sites["models"]  # the LM was never loaded


def test_sweep_points_on_several_sites_share_one_lm_pass(tmp_path, fake_sites):
  from sweeps import launch  # pylint: disable=import-outside-toplevel
  configs = []
  for layer, site in ((1, "attn_out"), (1, "mlp_out"), (4, "resid_pre"), (1, "attn_out")):
    configs.append(_cfg(tmp_path, tmp_path / "cache", layer=layer, site=site))
  caches = {}
  launch.share_lm_passes(configs, caches, progress=False)
  assert len(fake_sites["models"]) == 1  # the LM loaded once, for one pass over the contexts
  assert len(caches) == 3
  assert sorted((c.meta["layer"], c.meta["site"]) for c in caches.values()) == [
      (1, "attn_out"), (1, "mlp_out"), (4, "resid_pre")]
