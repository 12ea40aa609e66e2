"""The trainer: data-parallel equality, exact resume, the data stream, evaluation."""

import json
import os

import jax
import numpy as np
import pytest

from sae_jax import config, errors, evals
from sae_jax.evals import suite
from sae_jax.data import batches
from sae_jax.training import checkpoint, optimizer, sharding, trainer
from sae_jax.training import step as step_lib


def _source(n_train=4096, n_eval=1024, d_in=32, n_features=96, seed=0):
  rng = np.random.default_rng(seed)
  dirs = rng.normal(size=(n_features, d_in))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

  def gen(n):
    acts = (rng.random((n, n_features)) < 0.05) * rng.random((n, n_features)) * 2
    return (acts @ dirs + 0.3 + 0.01 * rng.normal(size=(n, d_in))).astype(np.float32)

  return batches.ArraySource({"train": gen(n_train), "eval": gen(n_eval)})


def _config(**train_kw):
  c = config.default_config()
  c.sae.n_latents, c.sae.k = 128, 4
  c.sae.geometric_median_samples = 1024
  c.train.batch_size = 256
  c.train.token_budget = 4096
  c.train.dead_tokens = 1024
  c.train.n_eval_points = 3
  c.train.checkpoint_every_steps = 4
  for key, value in train_kw.items():
    c.train[key] = value
  return c


def _run_steps(n_devices, n_steps=6):
  source = _source()
  c = config.resolve(_config(n_devices=n_devices), source.d_in)
  mesh = sharding.make_mesh(n_devices)
  opt = optimizer.make(c.train.lr, eps=c.train.adam_eps)
  step_fn = step_lib.make_train_step(mesh, step_lib.StepConfig.from_config(c), opt)
  state = step_lib.init_state(jax.random.PRNGKey(0), source.read("train", np.arange(1024)), c, 1.0, opt)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  losses = []
  for step, x in batches.stream(source, c.train.batch_size, 0, 0, n_steps):
    x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    state, m = step_fn(state, x)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses


def test_eight_device_step_equals_one_device():
  assert len(jax.devices()) == 8, "conftest forces 8 host devices"
  s1, l1 = _run_steps(1)
  s8, l8 = _run_steps(8)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for key in s1.params:
    np.testing.assert_allclose(s1.params[key], s8.params[key], rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(s1.tokens_since_fired_N, s8.tokens_since_fired_N)
  assert l1[-1] < l1[0]


def test_batches_are_deterministic_and_tile_each_epoch():
  n, B = 1000, 128
  seen = np.concatenate([batches.batch_rows(n, B, seed=3, step=s) for s in range(7)])
  assert len(np.unique(seen[:n - n % B])) == n - n % B  # no repeat inside the first epoch
  np.testing.assert_array_equal(batches.batch_rows(n, B, 3, 5), batches.batch_rows(n, B, 3, 5))
  assert not np.array_equal(batches.batch_rows(n, B, 3, 5), batches.batch_rows(n, B, 4, 5))


@pytest.mark.parametrize("block_rows", [0, 384])  # random rows; shuffled blocks (ragged)
def test_resume_is_bitwise_equal(tmp_path, block_rows):
  """A run stopped after a checkpoint and relaunched ends in the same state as one that
  was never stopped (same data order, same float results on CPU)."""
  source = _source()
  cfg = _config(n_devices=1)
  cfg.data.shuffle_block_rows, cfg.data.shuffle_buffer_blocks = block_rows, 3
  full = trainer.train(cfg, source, str(tmp_path / "full"), progress=False)

  part_cfg = _config(n_devices=1)
  part_cfg.data.shuffle_block_rows, part_cfg.data.shuffle_buffer_blocks = block_rows, 3
  part_cfg.train.token_budget = 4096  # same run...
  # ...interrupted: train only the first 6 steps by giving the stream an early end.
  original = batches.stream
  def short_stream(source, batch_size, seed, start, end, **kw):
    return original(source, batch_size, seed, start, min(end, 6), **kw)
  batches.stream = short_stream
  try:
    trainer.train(part_cfg, source, str(tmp_path / "part"), progress=False)
  finally:
    batches.stream = original
  resumed = trainer.train(part_cfg, source, str(tmp_path / "part"), progress=False)

  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(resumed) == strip(full)
  a = checkpoint.Checkpointer(str(tmp_path / "full" / "checkpoints"))
  b = checkpoint.Checkpointer(str(tmp_path / "part" / "checkpoints"))
  assert a.latest_step() == b.latest_step() == 16
  sa, _ = a.restore_untyped(16)
  sb, _ = b.restore_untyped(16)
  jax.tree.map(np.testing.assert_array_equal, sa, sb)


def _interrupted_and_resumed(c, source, run_dir, stop_after=6):
  """Train c for `stop_after` steps (the last checkpoint before them survives), then
  relaunch to the end."""
  original = batches.stream
  batches.stream = lambda s, b, seed, start, end, **kw: original(s, b, seed, start,
                                                                 min(end, stop_after), **kw)
  try:
    trainer.train(c, source, run_dir, progress=False)
  finally:
    batches.stream = original
  return trainer.train(c, source, run_dir, progress=False)


def test_resume_mid_warmup_is_bitwise_equal(tmp_path):
  """lr warm-up + decay, a lambda warm-up and dead-latent resampling are functions of the
  step: a run resumed from step 4, inside both warm-ups and before a resampling, ends
  bitwise equal to an uninterrupted one."""
  source = _source()
  # lambda 10 kills latents: one is resampled after step 12 (a latent is dead after a
  # batch without firing)
  c = _config(n_devices=1, lr_schedule="warmup_linear_decay", lr_warmup_steps=10,
              lr_decay_fraction=0.25, sparsity_warmup_steps=4, resample_steps=(12, 14),
              dead_tokens=256)
  c.sae.architecture, c.sae.k, c.sae.n_latents, c.sae.sparsity_coefficient = "relu_l1", None, 128, 10.0
  full = trainer.train(c, source, str(tmp_path / "full"), progress=False)
  resumed = _interrupted_and_resumed(c, source, str(tmp_path / "part"))
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(resumed) == strip(full)
  sa, _ = checkpoint.Checkpointer(str(tmp_path / "full" / "checkpoints")).restore_untyped(16)
  sb, _ = checkpoint.Checkpointer(str(tmp_path / "part" / "checkpoints")).restore_untyped(16)
  jax.tree.map(np.testing.assert_array_equal, sa, sb)
  # the schedules were live: the same run at constant lr and lambda ends elsewhere
  plain = _config(n_devices=1, dead_tokens=256)
  plain.sae.architecture, plain.sae.k, plain.sae.n_latents = "relu_l1", None, 128
  plain.sae.sparsity_coefficient = 10.0
  other = trainer.train(plain, source, str(tmp_path / "plain"), progress=False)
  assert other[-1]["normalized_mse"] != full[-1]["normalized_mse"]


def test_a_warmup_longer_than_the_run_stops_before_training(tmp_path):
  with pytest.raises(config.ConfigError, match="longer than the run") as e:
    trainer.train(_config(n_devices=1, lr_warmup_steps=17), _source(), str(tmp_path),
                  progress=False)
  assert "\n" not in str(e.value)
  with pytest.raises(config.ConfigError, match="exceeds the run"):
    trainer.train(_config(n_devices=1, lr_schedule="wsd", lr_warmup_steps=14,
                          lr_decay_fraction=0.25), _source(), str(tmp_path), progress=False)
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_records_cover_log_spaced_points_and_end_final():
  steps = trainer.eval_steps(1000, 8, 1 / 64)
  assert steps[-1] == 1000 and steps[0] == 16 and len(steps) == 8
  ratios = np.diff(np.log(steps))
  assert np.allclose(ratios, ratios[0], atol=0.05)


def test_training_lowers_loss_and_counts_dead_latents(tmp_path):
  records = trainer.train(_config(n_devices=1), _source(), str(tmp_path), progress=False)
  assert records[-1]["final"] and not any(r["final"] for r in records[:-1])
  assert records[-1]["normalized_mse"] < records[0]["normalized_mse"]
  assert all(0 < r["l0"] <= 4 for r in records)
  assert records[-1]["flops"] == pytest.approx(12 * 32 * 128 * 4096)
  assert 0 <= records[-1]["dead_fraction"] <= 1


def test_bad_device_count_and_batch_split(tmp_path):
  with pytest.raises(config.ConfigError, match="device"):
    trainer.train(_config(n_devices=64), _source(), str(tmp_path), progress=False)
  with pytest.raises(config.ConfigError, match="does not split over 8 devices"):
    trainer.train(_config(n_devices=8, batch_size=100, token_budget=1000), _source(),
                str(tmp_path), progress=False)


def test_nan_loss_stops_with_the_step(tmp_path):
  source = _source()
  source.splits["train"][3 * 256 + 5] = np.nan  # a NaN activation in batch 3 (sorted rows)
  rows = [batches.batch_rows(4096, 256, 0, s) for s in range(16)]
  bad_step = next(s for s, r in enumerate(rows) if (3 * 256 + 5) in r)
  with pytest.raises(errors.TrainingDivergedError, match=f"at step {bad_step}"):
    trainer.train(_config(n_devices=1), source, str(tmp_path), progress=False)


def test_many_saes_in_one_data_pass_equal_each_alone(tmp_path):
  """Each batch is read once and fed to every SAE; each ends as if trained alone, even
  with different sizes, token budgets and one of them resuming from a checkpoint."""
  source = _source()
  configs = [_config(n_devices=1), _config(n_devices=1), _config(n_devices=1)]
  configs[1].sae.n_latents = 64
  configs[2].train.token_budget = 2048
  alone = [trainer.train(c, source, str(tmp_path / f"alone{i}"), progress=False)
           for i, c in enumerate(configs)]
  # the second SAE has already done part of its run
  original = batches.stream
  batches.stream = lambda s, b, seed, start, end, **kw: original(s, b, seed, start, min(end, 5), **kw)
  try:
    trainer.train(configs[1], source, str(tmp_path / "many1"), progress=False)
  finally:
    batches.stream = original
  reads = []
  read = source.read
  source.read = lambda split, rows: reads.append(split) or read(split, rows)
  together = trainer.train_many(configs, source, [str(tmp_path / f"many{i}") for i in range(3)],
                              progress=False)
  source.read = read
  # one read per batch, plus the geometric-median sample of the two fresh runs
  assert reads.count("train") == 16 + 2
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  for a, b in zip(alone, together):
    assert strip(a) == strip(b)


def test_a_data_pass_needs_the_same_batches(tmp_path):
  a, b = _config(n_devices=1), _config(n_devices=1)
  b.train.batch_size = 128
  with pytest.raises(config.ConfigError, match="same seed, batch size and devices"):
    trainer.train_many([a, b], _source(), [str(tmp_path / "a"), str(tmp_path / "b")])


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
  """Orbax writes a step into a temporary directory and renames it when complete; what a
  kill during a save leaves behind is ignored, and the run resumes from the last
  complete step to the same end."""
  source = _source()
  full = trainer.train(_config(n_devices=1), source, str(tmp_path / "full"), progress=False)
  original = batches.stream
  batches.stream = lambda s, b, seed, start, end, **kw: original(s, b, seed, start, min(end, 8), **kw)
  try:
    trainer.train(_config(n_devices=1), source, str(tmp_path / "part"), progress=False)
  finally:
    batches.stream = original
  ckpts = tmp_path / "part" / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir() if p.name.isdigit()) == ["4", "8"]
  torn = ckpts / "12.orbax-checkpoint-tmp-1700000000000000"  # a save cut short
  (torn / "state").mkdir(parents=True)
  (torn / "state" / "garbage").write_bytes(b"\0" * 100)
  assert checkpoint.Checkpointer(str(ckpts)).latest_step() == 8
  resumed = trainer.train(_config(n_devices=1), source, str(tmp_path / "part"), progress=False)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(resumed) == strip(full)


def test_evaluation_suite_measures_join_the_records(tmp_path, monkeypatch):
  """train.eval_measures adds the suite's measures to every evaluation record through the
  evaluators the launcher passes (the suite itself is tested in evaluation_test.py; here
  only the wiring)."""
  calls = []

  def fake(cfg, state, cache, measures, options):
    calls.append((measures, options.max_contexts))
    return {"delta_ce": 0.5, "kl": 0.25}

  monkeypatch.setattr(suite, "evaluation_measures", fake)
  c = _config(n_devices=1, eval_measures=("downstream",), eval_max_contexts=4)
  records = trainer.train(c, _source(), str(tmp_path), progress=False,
                          evaluators=evals.TRAINING_EVALUATORS)
  assert all(r["delta_ce"] == 0.5 and r["kl"] == 0.25 for r in records)
  assert calls == [(("downstream",), 4)] * len(records)


def test_a_finite_blow_up_is_divergence_and_leaves_only_good_checkpoints(tmp_path):
  """Issue 20: lr=1e6 trained to a normalized MSE of 1e29 and finished without a word."""
  with pytest.raises(errors.TrainingDivergedError,
                     match=r"normalized MSE .* exceeds .*divergence_factor.* at step \d+; lower "
                           r"train.lr \(now 1e\+06\)") as e:
    trainer.train(_config(n_devices=1, lr=1e6), _source(), str(tmp_path), progress=False)
  failed = json.loads((tmp_path / trainer.FAILED).read_text())
  assert failed["failed"] and failed["step"] == e.value.step
  assert failed["last_good_checkpoint"] == e.value.last_good_step
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert all(s <= (e.value.last_good_step or 0) for s in saved)  # the diverged one is gone
  # with the bound off, the same run trains to the end on finite nonsense
  records = trainer.train(_config(n_devices=1, lr=1e6, divergence_factor=0.0), _source(),
                          str(tmp_path / "unbounded"), progress=False)
  assert records[-1]["normalized_mse"] > 10


def test_a_diverging_sae_leaves_its_pass_and_the_others_finish_as_alone(tmp_path):
  source = _source()
  healthy, bad = _config(n_devices=1), _config(n_devices=1, lr=1e20)
  alone = trainer.train(healthy, source, str(tmp_path / "alone"), progress=False)
  out = trainer.train_many([bad, healthy], source, [str(tmp_path / "bad"), str(tmp_path / "ok")],
                           progress=False, keep_going=True)
  assert isinstance(out[0], errors.TrainingDivergedError) and "at step" in str(out[0])
  assert (tmp_path / "bad" / trainer.FAILED).exists()
  assert not (tmp_path / "ok" / trainer.FAILED).exists()
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(out[1]) == strip(alone)
  a, _ = checkpoint.Checkpointer(str(tmp_path / "alone" / "checkpoints")).restore_untyped()
  b, _ = checkpoint.Checkpointer(str(tmp_path / "ok" / "checkpoints")).restore_untyped()
  for name in a["params"]:
    np.testing.assert_array_equal(a["params"][name], b["params"][name])
  with pytest.raises(errors.TrainingDivergedError):  # without keep_going: at once
    trainer.train_many([bad, healthy], source, [str(tmp_path / "b2"), str(tmp_path / "o2")],
                       progress=False)


def _truncate_all(directory):
  for d, _, fs in os.walk(directory):
    for f in fs:
      p = os.path.join(d, f)
      with open(p, "r+b") as fh:
        fh.truncate(os.path.getsize(p) // 2)


def test_a_truncated_checkpoint_is_named_and_the_previous_one_used(tmp_path, capfd):
  """Issue 17 item 6: a corrupted checkpoint is detected on read, named, and the run
  resumes from the previous one to the same result; with none readable, a one-line
  error names the directory."""
  c, source = _config(n_devices=1), _source()
  first = trainer.train(c, source, str(tmp_path / "run"), progress=False)
  ckpts = tmp_path / "run" / "checkpoints"
  a, _ = checkpoint.Checkpointer(str(ckpts)).restore_untyped()
  latest = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
  _truncate_all(ckpts / str(latest) / "state")
  capfd.readouterr()
  again = trainer.train(c, source, str(tmp_path / "run"), progress=False)
  err = capfd.readouterr().err
  assert f"checkpoint {ckpts}/{latest} cannot be read" in err
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]
  assert strip(again) == strip(first)
  b, _ = checkpoint.Checkpointer(str(ckpts)).restore_untyped()
  for name in a["params"]:
    np.testing.assert_array_equal(a["params"][name], b["params"][name])
  for s in os.listdir(ckpts):
    if s.isdigit():
      _truncate_all(ckpts / s / "state")
  with pytest.raises(errors.CheckpointCorruptError, match=f"no checkpoint under {ckpts}") as e:
    trainer.train(c, source, str(tmp_path / "run"), progress=False)
  assert "\n" not in str(e.value)
