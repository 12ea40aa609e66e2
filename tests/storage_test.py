"""A full or read-only disk (issue 17, item 4): every write fails with one line
(`sae-jax: error: ...`, exit 2) naming the path and, for a full disk, the space needed;
nothing saved earlier (checkpoints, exports, results.jsonl, fits.json) changes; a relaunch
after space is freed completes; `--dry-run` estimates the disk each point needs and
refuses what does not fit.

Writes are made to fail through the test-only hook $SAE_JAX_TEST_WRITE_FAULT
(`sae_jax.files.inject_fault`), which always works, and on a real full tmpfs where this
machine lets the test mount one (root); those tests are skipped with the reason otherwise.
"""

import contextlib
import errno
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax import cli, config as config_lib, files
from sae_jax.data import cache as cache_lib, harvest, lm
from sae_jax.errors import ConfigError, StorageError
from sae_jax.training import checkpoint
from sweeps import plan as plan_lib

import boundary_test  # the synthetic sweep both files drive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# boundary_test's synthetic sweep, on one device, without TensorBoard, at two sizes whose
# checkpoints differ enough to matter for the disk estimate
SWEEP = (boundary_test.SWEEP
         .replace("  return c\n", "  c.train.n_devices = 1\n  c.train.loggers = ()\n  return c\n", 1)
         .replace("for n in (64, 128)", "for n in (256, 1024)"))
N_STEPS = 4096 // 128  # the last step of each point: its final checkpoint


def _sweep_file(tmp, out) -> str:
  path = os.path.join(tmp, "syn.py")
  with open(path, "w", encoding="utf-8") as f:
    f.write(SWEEP.format(out=str(out)))
  return path


def _snapshot(root) -> dict:
  """{relative path: bytes} of every file under root but the lock files."""
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      p = os.path.join(d, n)
      if ".locks" not in p:
        with open(p, "rb") as f:
          out[os.path.relpath(p, root)] = f.read()
  return out


def _one_line(stderr: str) -> str:
  """The one line of stderr, tqdm's progress frames (erased on a terminal) left out."""
  lines = [l for l in stderr.replace("\r", "\n").splitlines()
           if l.strip() and not re.search(r"\d+/\d+ \[[^]]*\]$", l.rstrip())]
  assert len(lines) == 1 and lines[0].startswith("sae-jax: error: "), stderr[-3000:]
  return lines[0]


def _cli_error(capsys, *argv) -> str:
  rc = cli.main(list(argv))
  err = capsys.readouterr().err
  assert rc == 2, err[-3000:]
  return _one_line(err)


@contextlib.contextmanager
def _tmpfs(path, size: str):
  """A tmpfs of `size` mounted at `path` for the block; skips the test where mounting is
  not allowed (not root, no CAP_SYS_ADMIN)."""
  os.makedirs(path, exist_ok=True)
  p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                     capture_output=True, text=True, check=False)
  if p.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode}); the "
                "fault-injection tests cover the same paths")
  try:
    yield str(path)
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


# --- the writers -------------------------------------------------------------------------

def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
  target = tmp_path / "results.jsonl"
  target.write_bytes(b"old\n")
  monkeypatch.setenv(files.FAULT_ENV, "ENOSPC:*/results.jsonl")
  with pytest.raises(StorageError) as e:
    files.atomic_write_bytes(target, b"x" * 3000)
  msg = str(e.value)
  assert msg.startswith(f"disk full writing {target} (needs 2.93 KiB, ") and "free on /" in msg
  assert "\n" not in msg and "rerun the same command" in msg
  assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC  # optional writers skip it
  assert isinstance(e.value, ConfigError)  # the CLI's one-line path
  assert target.read_bytes() == b"old\n" and os.listdir(tmp_path) == ["results.jsonl"]

  monkeypatch.setenv(files.FAULT_ENV, "EROFS:*/results.jsonl")
  with pytest.raises(StorageError, match=f"cannot write {target}: read-only file system"):
    files.write_json_atomic(target, [{"a": 1}], jsonl=True)
  assert target.read_bytes() == b"old\n"
  files.atomic_write_bytes(tmp_path / "other.json", b"{}")  # other paths still write


def test_a_cache_shard_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv(files.FAULT_ENV, "ENOSPC:*/shard_00001.npy")
  x = np.random.default_rng(0).normal(size=(256, 16)).astype(np.float32)
  with pytest.raises(StorageError, match=r"disk full writing .*train/shard_00001.npy \(needs "):
    cache_lib.write_cache(str(tmp_path / "c"), {"train": x}, {"model": "m", "layer": 0},
                          shard_tokens=128)
  assert not (tmp_path / "c").exists()  # only a finished cache is ever renamed into place


def test_tensorstore_errors_are_recognised():
  e = ValueError("RESOURCE_EXHAUSTED: Error writing \"a/0.0\": Failed to write 1677669 bytes "
                 "to file 14: No space left on device [os_error_code='28']")
  err = files.storage_error(e, "/x/checkpoints/32", 4 << 20)
  assert str(err).startswith("disk full writing /x/checkpoints/32 (needs 4 MiB, ")
  assert files.storage_error(ValueError("shape mismatch"), "/x") is None
  assert files.storage_error(OSError(errno.ENOENT, "No such file"), "/x") is None


def test_staged_outputs_name_the_final_path_and_change_nothing(tmp_path, monkeypatch):
  (tmp_path / "fits.json").write_text("old")
  monkeypatch.setenv(files.FAULT_ENV, "EROFS:*/fits.json")
  with pytest.raises(StorageError) as e:
    with files.staged_outputs(tmp_path) as staging:
      files.write_json_atomic(os.path.join(staging, "plots", "a.json"), {})
      files.write_json_atomic(os.path.join(staging, "fits.json"), {"new": 1})
  assert f"cannot write {tmp_path}/fits.json" in str(e.value) and ".staging" not in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["fits.json"] and (tmp_path / "fits.json").read_text() == "old"


def test_a_real_full_disk(tmp_path):
  """Orbax on a full tmpfs: the failed step is removed, the earlier one restores; the
  atomic writer keeps the old file."""
  with _tmpfs(tmp_path / "disk", "1m") as disk:
    ckpt = checkpoint.Checkpointer(os.path.join(disk, "checkpoints"))
    small = {"w": jnp.arange(100.0)}
    ckpt.save(1, small, {"records": []})
    big = {"w": jax.random.normal(jax.random.PRNGKey(0), (1024, 1024))}  # 4 MiB of noise
    with pytest.raises(StorageError) as e:
      ckpt.save(2, big, {"records": []})
    assert str(e.value).startswith(f"disk full writing {disk}/checkpoints/2 (needs 4 MiB, ")
    assert f"free on {disk}" in str(e.value)
    assert os.listdir(os.path.join(disk, "checkpoints")) == ["1"]  # no half-written step 2
    ckpt.close()
    state, _ = checkpoint.Checkpointer(os.path.join(disk, "checkpoints")).restore_untyped()
    np.testing.assert_array_equal(state["w"], np.arange(100.0))

    target = os.path.join(disk, "results.jsonl")
    files.atomic_write_bytes(target, b"old\n")
    with pytest.raises(StorageError, match=r"\(needs 2 MiB, "):
      files.atomic_write_bytes(target, os.urandom(2 << 20))
    assert open(target, "rb").read() == b"old\n"
    assert sorted(os.listdir(disk)) == ["checkpoints", "results.jsonl"]


def test_tensorboard_on_a_full_disk_is_one_line_not_a_hung_thread(tmp_path):
  """tensorboardX writes in a thread: on a full disk it died with a traceback and the
  next add_scalar blocked forever on its full queue."""
  from sae_jax.training import tracking  # pylint: disable=import-outside-toplevel
  with _tmpfs(tmp_path / "disk", "64k") as disk:
    tb = tracking._TensorBoard(os.path.join(disk, "tensorboard"), None)  # pylint: disable=protected-access
    with pytest.raises(StorageError, match=f"disk full writing {disk}/tensorboard "):
      for step in range(100_000):
        tb.log(step, {"train/loss": float(step)})
        if step % 1000 == 0:
          tb.flush()
    with pytest.raises(StorageError):
      tb.close()


# --- the sweep ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full(tmp_path_factory):
  """A finished sweep (in this process): (sweep file, its directory)."""
  tmp = tmp_path_factory.mktemp("storage")
  path = _sweep_file(str(tmp), tmp / "runs")
  assert cli.main(["sweep", path]) in (0, None)
  return path, str(tmp / "runs" / "syn")


def _records(sweep_dir):
  with open(os.path.join(sweep_dir, "results.jsonl"), encoding="utf-8") as f:
    recs = [json.loads(line) for line in f]
  for r in recs:
    r.pop("wall_time_s")
    r["config"].pop("out_dir")
  return recs


def test_dry_run_estimates_what_each_point_writes(full, tmp_path):
  path, sweep_dir = full
  fresh = plan_lib.plan(path, {"out_dir": str(tmp_path / "fresh")})
  for pt in fresh.points:
    run_dir = os.path.join(sweep_dir, pt.run_id)
    written = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(run_dir) for f in fs)
    assert written <= pt.disk_bytes <= 3 * written, (pt.run_id, written, pt.disk_bytes)
  done = plan_lib.plan(path)
  assert [pt.disk_bytes for pt in done.points] == [0, 0]  # finished: nothing more to write
  assert "disk = checkpoints" in plan_lib.format_plan(fresh, "inline")


def test_dry_run_refuses_what_does_not_fit(full, tmp_path, capsys, monkeypatch):
  path, _ = full
  fresh = plan_lib.plan(path, {"out_dir": str(tmp_path / "fresh")})
  need = sum(pt.disk_bytes for pt in fresh.points)
  monkeypatch.setattr(files, "free_bytes", lambda _: need - 1)
  err = _cli_error(capsys, "sweep", path, "--dry-run", "--device-flops", "1e12",
                   "--set", f"out_dir={tmp_path / 'fresh'}")
  assert f"needs about {files.human_bytes(need)} on the disk of {tmp_path / 'fresh'}/syn" in err
  assert "2 unfinished point(s)" in err and "out_dir=" in err
  monkeypatch.setattr(files, "free_bytes", lambda _: need)
  assert cli.main(["sweep", path, "--dry-run", "--device-flops", "1e12",
                   "--set", f"out_dir={tmp_path / 'fresh'}"]) in (0, None)
  capsys.readouterr()
  assert not (tmp_path / "fresh").exists()


def test_dry_run_on_a_real_small_disk(full, tmp_path, capsys):
  path, _ = full
  with _tmpfs(tmp_path / "disk", "1m") as disk:
    err = _cli_error(capsys, "sweep", path, "--dry-run", "--device-flops", "1e12",
                     "--set", f"out_dir={disk}")
    assert f"on the disk of {disk}/syn" in err and f"is free on {disk}" in err


@pytest.mark.real_model  # reads (does not load) the embedded SmolLM2's files
def test_lm_caches_already_harvested_need_no_disk(tmp_path):
  cfg = config_lib.default_config()
  cfg.data.cache_dir = str(tmp_path)
  cfg.data.n_train_tokens, cfg.data.n_eval_tokens = 4000, 1000
  memo = {}
  (name, need), = plan_lib.caches_to_harvest(cfg, memo).items()
  info = lm.describe_lm(cfg.data.model, str(tmp_path))
  assert need == 5000 * (info["d_model"] * 2 + 4) and "layer 15 residual" in name
  settings = harvest.cache_settings(cfg, info["weights_hash"], 15, "abc", "residual")
  files.write_json_atomic(tmp_path / "activations" / "k" / "meta.json", settings)
  assert plan_lib.caches_to_harvest(cfg, {}) == {}


def test_every_output_write_keeps_what_was_saved(full, capsys, monkeypatch):
  """Rerunning a finished sweep (and fit, export) onto a disk that refuses one file:
  one line naming it, and every file of the sweep byte-identical."""
  path, sweep_dir = full
  before = _snapshot(sweep_dir)
  run = os.path.join(sweep_dir, sorted(d for d in os.listdir(sweep_dir) if d.startswith("n"))[0])
  cases = [
      ("ENOSPC:*/results.jsonl", ["sweep", path], "disk full writing", "results.jsonl"),
      ("EROFS:*/fits.json", ["sweep", path], "read-only file system", "fits.json"),
      ("ENOSPC:*/plots/*", ["fit", os.path.join(sweep_dir, "results.jsonl"), "--out", sweep_dir],
       "disk full writing", "plots/"),
      ("EACCES:*/sae.safetensors", ["export", run, "--out", os.path.join(run, "export")],
       "permission denied", "sae.safetensors"),
  ]
  for fault, argv, what, name in cases:
    monkeypatch.setenv(files.FAULT_ENV, fault)
    err = _cli_error(capsys, *argv)
    assert what in err and name in err, (fault, err)
    assert _snapshot(sweep_dir) == before, fault


def test_a_sweep_that_fills_the_disk_resumes_after_space_is_freed(full, tmp_path):
  """Real processes: a point's last checkpoint cannot be written (after its earlier ones
  were); the sweep stops in one line, the earlier checkpoint stays, and a relaunch
  finishes with the records of an uninterrupted sweep."""
  path, full_dir = full
  out = tmp_path / "runs"
  path = _sweep_file(str(tmp_path), out)
  env = {**os.environ, files.FAULT_ENV: f"ENOSPC:*/checkpoints/{N_STEPS}"}
  p = subprocess.run([sys.executable, "-m", "sae_jax.cli", "sweep", path], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 2, p.stderr[-3000:]
  err = _one_line(p.stderr)
  assert f"/checkpoints/{N_STEPS} (needs " in err and "disk full writing" in err
  sweep_dir = out / "syn"
  first = next(d for d in os.listdir(sweep_dir) if (sweep_dir / d / "checkpoints").is_dir())
  steps = os.listdir(sweep_dir / first / "checkpoints")
  assert steps and all(s.isdigit() and int(s) < N_STEPS for s in steps), steps  # no tmp dir
  assert not (sweep_dir / first / "records.json").exists()
  assert not (sweep_dir / "results.jsonl").exists()

  env.pop(files.FAULT_ENV)
  p = subprocess.run([sys.executable, "-m", "sae_jax.cli", "sweep", path], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  assert _records(str(sweep_dir)) == _records(full_dir)
  assert (sweep_dir / "fits.json").exists()
