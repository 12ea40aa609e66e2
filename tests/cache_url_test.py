"""The activation cache at a URL (tensorstore zarr3 over a kvstore) and the multi-host
harvest: the same rows as the local .npy layout, bit for bit; a missing or altered chunk
refused; P processes harvesting disjoint shards into one cache equal one process."""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from cache_test import D, _all_rows, _cfg, _corpus, _stored, fake_lm, fake_sites  # noqa: F401  # pylint: disable=unused-import
from sae_jax import config
from sae_jax.data import cache as cache_lib, harvest, lm
from sae_jax.data.cache import ActivationCache
from sae_jax.errors import CacheCorruptError, ConfigError


def _shard_hashes(cache, split):
  """The sha256 of each shard's stored array (a URL cache records these; a local one
  records the .npy file's, header included)."""
  if cache.meta.get("layout") == "zarr3":
    return [s["sha256"] for s in cache.meta["splits"][split]["shards"]]
  return [hashlib.sha256(np.load(os.path.join(cache.path, split, s["file"])).tobytes()).hexdigest()
          for s in cache.meta["splits"][split]["shards"]]


def _url(tmp_path, name):
  return f"file://{tmp_path / name}"


@pytest.mark.parametrize("scheme", ["memory", "file"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_url_cache_reads_what_the_local_layout_reads(tmp_path, scheme, dtype):
  rng = np.random.default_rng(0)
  x = {"train": rng.normal(3.0, 2.0, (1000, D)).astype(np.float32),
       "eval": rng.normal(size=(130, D)).astype(np.float32)}
  tok = {"train": rng.integers(0, 50, (16, 64)).astype(np.int32)}
  url = f"memory://{tmp_path.name}/c" if scheme == "memory" else _url(tmp_path, "c")
  local = cache_lib.write_cache(str(tmp_path / "l"), x, {"model": "m"}, dtype, 128, tok)
  remote = cache_lib.write_cache(url, x, {"model": "m"}, dtype, 128, tok)
  assert remote.meta["layout"] == "zarr3" and "layout" not in local.meta
  reopened = ActivationCache.open(url, verify=True)
  rows = rng.integers(0, 1000, 300)  # unsorted, repeated, across all shards
  for c in (remote, reopened):
    np.testing.assert_array_equal(c.read("train", rows), local.read("train", rows))
    np.testing.assert_array_equal(c.read("train", rows), _stored(x["train"], dtype)[rows])
    np.testing.assert_array_equal(c.read("eval", [129, 0, 64]), local.read("eval", [129, 0, 64]))
    np.testing.assert_array_equal(c.tokens("train"), tok["train"])
    assert c.meta["stats"] == local.meta["stats"]
    assert _shard_hashes(c, "train") == _shard_hashes(local, "train")  # same stored bytes
  assert reopened.read("train", []).shape == (0, D)
  with pytest.raises(IndexError):
    remote.read("train", [1000])
  with pytest.raises(ConfigError, match="already exists"):
    cache_lib.write_cache(url, x, {}, dtype, 128)
  if scheme == "file":  # an object per shard of 128 rows, nothing else but metadata
    assert sorted(os.listdir(tmp_path / "c" / "train" / "activations" / "c")) == [
        str(i) for i in range(8)]


def test_a_missing_or_altered_chunk_is_refused_and_other_rows_still_read(tmp_path):
  x = np.random.default_rng(0).normal(size=(1000, D)).astype(np.float32)
  url = _url(tmp_path, "c")
  cache_lib.write_cache(url, {"train": x}, {}, shard_tokens=128)
  chunks = tmp_path / "c" / "train" / "activations" / "c"
  os.remove(chunks / "1" / "0")  # shard 1 (rows 128..255) lost
  with open(chunks / "2" / "0", "r+b") as f:  # a byte of shard 2 altered, same size
    f.seek(100)
    b = f.read(1)
    f.seek(100)
    f.write(bytes([b[0] ^ 0x55]))
  cache = ActivationCache.open(url)  # O(metadata): nothing of the data read
  # a process that reads only its rows (shards 0 and 3..7) never touches the bad ones
  mine = np.r_[0:128, 384:1000]
  np.testing.assert_array_equal(cache.read("train", mine), _stored(x[mine], "float16"))
  with pytest.raises(CacheCorruptError, match=r"c/train/activations/c/1/0 \(rows 128..255\) "
                     r"is corrupted or missing \(non-finite.*delete file://"):
    cache.read("train", [5, 130])
  with pytest.raises(CacheCorruptError, match=r"activations/c/2/0 \(rows 256..383\) is "
                     r"unreadable"):
    cache.read("train", [300])
  with pytest.raises(CacheCorruptError, match=r"c/1/0 .*(sha256 mismatch|unreadable)"):
    ActivationCache.open(url, verify=True)


def test_unknown_scheme_and_unreachable_url_are_one_line_errors(tmp_path, fake_lm, monkeypatch):
  with pytest.raises(ConfigError) as e:
    harvest.get_or_harvest(_cfg(tmp_path, "ftp://host/cache"), progress=False)
  assert "data.cache_dir='ftp://host/cache' has the unknown scheme 'ftp'" in str(e.value)
  monkeypatch.setattr(cache_lib, "URL_TIMEOUT_S", 2.0)
  with pytest.raises(ConfigError) as e:  # no network here: it never answers
    harvest.get_or_harvest(_cfg(tmp_path, "gs://sae-jax-no-such-bucket/c"), progress=False)
  msg = str(e.value)
  assert msg.startswith("cannot ") and "gs://sae-jax-no-such-bucket/c/activations/" in msg
  assert "check the URL, the network and the credentials" in msg and "\n" not in msg
  assert not fake_lm["models"]  # refused before the LM was loaded


def _train(cache, run_dir):
  from sae_jax.training import trainer  # pylint: disable=import-outside-toplevel
  c = config.default_config()
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 32, 4, 512
  c.train.batch_size, c.train.token_budget, c.train.n_devices = 100, 1000, 1
  c.train.dead_tokens, c.train.n_eval_points, c.train.checkpoint_every_steps = 500, 2, 5
  return trainer.train(config.resolve(c, cache.d_in), cache, str(run_dir), progress=False)


def test_harvest_into_a_file_url_equals_the_local_layout_and_trains(tmp_path, fake_lm):
  local = harvest.get_or_harvest(_cfg(tmp_path, tmp_path / "local"), progress=False)
  cfg = _cfg(tmp_path, _url(tmp_path, "remote"))
  fake_lm["crash_after"] = 6  # killed after 2 shards, then resumed
  with pytest.raises(KeyboardInterrupt):
    harvest.get_or_harvest(cfg, progress=False)
  fake_lm["crash_after"] = None
  remote = harvest.get_or_harvest(cfg, progress=False)
  assert remote.path.startswith(_url(tmp_path, "remote/activations/"))
  assert remote.path.rstrip("/").endswith(os.path.basename(local.path))  # same key
  assert fake_lm["models"][-1].calls == 17 - 4 + 4  # only the missing shards' batches
  for split in ("train", "eval"):
    np.testing.assert_array_equal(_all_rows(remote, split), _all_rows(local, split))
    np.testing.assert_array_equal(remote.tokens(split), local.tokens(split))
    assert _shard_hashes(remote, split) == _shard_hashes(local, split)
  assert remote.meta["stats"] == local.meta["stats"]
  assert not [f for f in os.listdir(tmp_path / "remote" / "activations" / os.path.basename(
      local.path)) if f.startswith("progress")]
  n = len(fake_lm["models"])
  assert harvest.get_or_harvest(cfg, progress=False).path == remote.path  # reused
  assert len(fake_lm["models"]) == n
  records = _train(remote, tmp_path / "run")  # the same rows as the local cache (above)
  assert records[-1]["tokens"] == 1000
  assert np.isfinite(records[-1]["normalized_mse"]) and records[-1]["normalized_mse"] < 1


WORKER = r'''
import json, os, sys
sys.path.insert(0, {tests!r})
from sae_jax.training import distributed
distributed.initialize()
import cache_test
from sae_jax.data import harvest, lm
models = []
def load(model, device="cpu", torch_dtype="float32", cache_dir=None):
  models.append(cache_test._FakeModel())
  models[-1].targets = []
  return models[-1], cache_test._FakeTokenizer(), {{}}
lm.describe_lm = lambda model, cache_dir=None: dict(name=model, n_layers=6, d_model=cache_test.D,
                                                    weights_hash="f" * 64)
lm.load_lm = load
lm.activations = cache_test._fake_activations
index, n_proc = distributed.process()
out = {{}}
for name, cache_dir in {caches!r}.items():
  own = os.path.join({tmp!r}, f"p{{index}}")  # where _cfg writes its (unused) corpus
  os.makedirs(own, exist_ok=True)
  c = cache_test._cfg(__import__("pathlib").Path(own), cache_dir)
  c.data.corpus = {corpus!r}
  if name == "url":  # through the command line, as a user runs it
    from sae_jax import cli
    assert cli.main(["harvest", "--set"] + [f"data.{{k}}={{c.data[k]}}" for k in (
        "corpus", "cache_dir", "context_length", "n_train_tokens", "n_eval_tokens",
        "eval_doc_fraction", "shard_tokens", "lm_batch_size")]) == 0
    calls = models[-1].calls
    caches = harvest.get_or_harvest_many(c, progress=False)  # complete: reused, for its path
  else:
    c.data.layers = (1, 3)  # two caches from each process's LM passes
    caches = harvest.get_or_harvest_many(c, progress=False, process=(index, n_proc),
                                         barrier=distributed.barrier)
    calls = models[-1].calls
  out[name] = dict(paths=[x.path for x in caches.values()], calls=calls)
with open({out!r} + str(index), "w") as f:
  json.dump(dict(out, n_proc=n_proc), f)
'''


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_harvest_one_cache_equal_to_one_process(tmp_path, fake_sites):
  corpus_path = _corpus(tmp_path)
  caches = {"url": _url(tmp_path, "multi_url"), "local": str(tmp_path / "multi_local")}
  script = tmp_path / "worker.py"
  script.write_text(WORKER.format(tests=os.path.dirname(__file__), caches=caches,
                                  tmp=str(tmp_path), corpus=corpus_path,
                                  out=str(tmp_path / "out")))
  port, procs = _free_port(), []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", SAE_JAX_COORDINATOR=f"127.0.0.1:{port}",
               SAE_JAX_NUM_PROCESSES="2", SAE_JAX_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen([sys.executable, str(script)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  for p in procs:
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 0, log[-3000:]
  outs = [json.loads((tmp_path / f"out{i}").read_text()) for i in range(2)]
  assert [o["n_proc"] for o in outs] == [2, 2]

  single = _cfg(tmp_path, tmp_path / "single")
  single.data.corpus, single.data.layers = corpus_path, (1, 3)
  one = harvest.get_or_harvest_many(single, progress=False)
  total_calls = fake_sites["models"][-1].calls  # 17 train + 4 eval batches of 4 contexts
  for name in caches:
    assert outs[0][name]["paths"] == outs[1][name]["paths"]
    for path, ref in zip(outs[0][name]["paths"], one.values()):
      multi = ActivationCache.open(path, verify=True)
      assert os.path.basename(path.rstrip("/")) == os.path.basename(ref.path)  # same key
      for split in ("train", "eval"):
        np.testing.assert_array_equal(_all_rows(multi, split), _all_rows(ref, split))
        np.testing.assert_array_equal(multi.tokens(split), ref.tokens(split))
        assert _shard_hashes(multi, split) == _shard_hashes(ref, split)
      assert multi.meta["stats"] == ref.meta["stats"]
    # each process ran the LM on its half (+ at most a batch per split where they meet)
    calls = [o[name]["calls"] for o in outs]
    assert sum(calls) <= total_calls + 2 and max(calls) <= total_calls // 2 + 2, calls
  assert sorted(os.listdir(tmp_path / "multi_local" / "activations")) == sorted(
      os.path.basename(p) for p in outs[0]["local"]["paths"])  # no .partial, no lock left
