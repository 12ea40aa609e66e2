"""Issue 17: a corrupted file the project wrote (a cache's meta.json, a finished point's
records.json, a run's config.json, results.jsonl) gives a one-line error that names the
file and says what to do, or is recovered, and nothing else is lost."""

import json
import os

import numpy as np
import pytest

from analysis import results as results_lib
from sae_jax import cli
from sae_jax.data import cache as cache_lib
from sae_jax.errors import ConfigError
from sae_jax.evals import runs

from boundary_test import SWEEP


def _tree(root) -> dict[str, bytes]:
  out = {}
  for dirpath, _, names in os.walk(root):
    for n in names:
      p = os.path.join(dirpath, n)
      with open(p, "rb") as f:
        out[os.path.relpath(p, root)] = f.read()
  return out


def test_a_cache_with_a_corrupted_meta_json_is_named_and_left_as_it_is(tmp_path):
  path = str(tmp_path / "cache")
  rng = np.random.default_rng(0)
  cache_lib.write_cache(path, {"train": rng.normal(size=(256, 8)).astype(np.float32),
                               "eval": rng.normal(size=(64, 8)).astype(np.float32)},
                        {"model": "m", "layer": 0}, shard_tokens=128)
  meta = os.path.join(path, "meta.json")
  with open(meta, "r+b") as f:  # a write cut short: half the file
    f.truncate(os.path.getsize(meta) // 2)
  before = _tree(path)
  with pytest.raises(ConfigError) as e:
    cache_lib.ActivationCache.open(path)
  msg = str(e.value)
  assert "\n" not in msg and f"{meta} is not valid JSON" in msg and "delete it" in msg
  assert _tree(path) == before


def _cli(capsys, *argv) -> tuple[int, list[str]]:
  rc = cli.main(list(argv))
  err = [l for l in capsys.readouterr().err.replace("\r", "\n").splitlines()
         if l.startswith("sae-jax")]
  return rc, err


def test_a_corrupted_records_json_or_results_jsonl_loses_nothing(tmp_path, capsys):
  path = tmp_path / "syn.py"
  path.write_text(SWEEP.format(out=str(tmp_path / "runs")))
  out = tmp_path / "runs" / "syn"
  assert cli.main(["sweep", str(path), "--no-fit"]) == 0
  capsys.readouterr()
  results = out / "results.jsonl"
  whole = results.read_bytes()
  point = sorted(d for d in os.listdir(out) if (out / d / "records.json").exists())[0]
  records = out / point / "records.json"
  good = records.read_bytes()

  # a finished point's records.json cut short: one line naming it, nothing rewritten
  records.write_bytes(good[:len(good) // 2])
  before = _tree(out)
  rc, err = _cli(capsys, "sweep", str(path), "--no-fit")
  assert rc == 2 and len(err) == 1, err
  assert err[0].startswith(f"sae-jax: error: {records} is not valid JSON") and "delete it" in err[0]
  assert _tree(out) == before
  # ... and `sae-jax eval`'s reader of a run directory says the same of its config.json
  config = out / point / "config.json"
  config.write_text("{")
  with pytest.raises(ConfigError, match=f"{config} is not valid JSON.*records.json"):
    runs.load_run(str(out / point))
  os.remove(config)

  # doing what it says rebuilds it from the point's last checkpoint, as it was
  os.remove(records)
  assert cli.main(["sweep", str(path), "--no-fit"]) == 0
  assert json.loads(records.read_bytes()) == json.loads(good)
  assert results.read_bytes() == whole

  # results.jsonl with its last line cut short (a killed append): the readers keep every
  # other record and say which file they skipped a line of; the relaunch rewrites it whole
  lines = whole.decode().splitlines()
  results.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
  with pytest.warns(UserWarning, match="results.jsonl"):
    kept = results_lib.read_jsonl(str(results))
  assert kept == [json.loads(l) for l in lines[:-1]]
  # a line broken in the middle is an error naming the file and line
  results.write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")
  with pytest.raises(ConfigError, match=r"results.jsonl:2"):
    results_lib.read_jsonl(str(results))
  assert cli.main(["sweep", str(path), "--no-fit"]) == 0
  assert results.read_bytes() == whole
