"""Run tracking (`sae_jax.training.tracking`): a sweep leaves TensorBoard event files that
TensorBoard's own reader reads back with every training scalar at every
`train.log_every_steps` and every held-out metric at every evaluation point, under the
names the records use; a resumed run does not double its curves back; bad logger
settings are one-line errors."""

import json
import os

import pytest
from tensorboard.backend.event_processing import event_accumulator

from sae_jax import cli, config
from sae_jax.errors import ConfigError
from sae_jax.training import tracking
from sweeps import launch

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "watched"
  c.out_dir = {out!r}
  c.data.source = "synthetic"
  c.data.generator.d_in = 16
  c.data.n_train_tokens, c.data.n_eval_tokens = 4096, 1024
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 64, 4, 1024
  c.train.batch_size, c.train.token_budget, c.train.lr = 128, 4096, 3e-3
  c.train.n_eval_points, c.train.n_devices, c.train.dead_tokens = 3, 1, 1024
  c.train.log_every_steps = 4
  return c


def get_sweep():
  return [{{"sae.n_latents": 64}}, {{"sae.n_latents": 128}}]
'''


def _scalars(run_dir):
  acc = event_accumulator.EventAccumulator(os.path.join(run_dir, tracking.TENSORBOARD_DIR),
                                           size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp("tracking")
  path = root / "watched.py"
  path.write_text(SWEEP.format(out=str(root / "runs")))
  lines = []
  launch.run_sweep(str(path), fit=False, progress=False, log=lines.append)
  return root / "runs" / "watched", lines


def test_sweep_prints_the_tensorboard_command(sweep):
  out, lines = sweep
  assert f"training curves: tensorboard --logdir {out}" in lines


def test_every_scalar_reads_back_on_schedule(sweep):
  out, _ = sweep
  runs = sorted(d for d in os.listdir(out) if os.path.isdir(out / d))
  assert len(runs) == 2
  for run in runs:
    records = json.loads((out / run / "records.json").read_text())
    scalars = _scalars(out / run)
    n_steps, every, B = 4096 // 128, 4, 128
    for name in tracking.TRAIN_SCALARS:
      steps = [s for s, _ in scalars[tracking.tag("train", name)]]
      assert steps == list(range(every, n_steps + 1, every)), name
    tokens = dict(scalars["train/tokens"])
    flops = dict(scalars["train/flops"])
    for step, value in tokens.items():
      assert value == step * B
      assert flops[step] == pytest.approx(12.0 * 16 * records[0]["n_latents"] * step * B)
    assert all(v == pytest.approx(3e-3) for _, v in scalars["train/lr"])
    assert all(v > 0 for _, v in scalars["train/tokens_per_s"] + scalars["train/grad_norm"])
    # the loss is the sum of its terms (TopK: normalized MSE + aux coefficient x AuxK)
    loss, nmse = dict(scalars["train/loss"]), dict(scalars["train/normalized_mse"])
    aux = dict(scalars["train/aux_loss"])
    for s in loss:
      assert loss[s] == pytest.approx(nmse[s] + aux[s] / 32, rel=1e-4)
    assert all(v == pytest.approx(4.0) for _, v in scalars["train/l0"])
    # held-out metrics at each evaluation point equal the records, under the same names
    for name in tracking.EVAL_SCALARS:
      logged = dict(scalars[tracking.tag("eval", name)])
      assert sorted(logged) == [r["step"] for r in records], name
      for r in records:
        assert logged[r["step"]] == pytest.approx(r[name], rel=1e-6), name


def test_resumed_run_purges_events_after_its_checkpoint(tmp_path):
  from sae_jax.data import sources  # pylint: disable=import-outside-toplevel
  from sae_jax.training import trainer  # pylint: disable=import-outside-toplevel
  c = config.default_config()
  c.data.source, c.data.generator.d_in = "synthetic", 16
  c.data.n_train_tokens, c.data.n_eval_tokens = 2048, 512
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 32, 4, 512
  c.train.batch_size, c.train.lr, c.train.n_devices = 128, 3e-3, 1
  c.train.n_eval_points, c.train.log_every_steps, c.train.checkpoint_every_steps = 1, 2, 8
  src = sources.get_source(c, progress=False)
  short = config.resolve(c, src.d_in)
  short.train.token_budget = 1024  # stops at step 8, checkpointed
  trainer.train(short, src, str(tmp_path), progress=False)
  full = config.resolve(c, src.d_in)
  trainer.train(full, src, str(tmp_path), progress=False)  # resumes at step 8 -> 16
  steps = [s for s, _ in _scalars(tmp_path)["train/loss"]]
  assert steps == list(range(2, 17, 2))
  assert [s for s, _ in _scalars(tmp_path)["eval/normalized_mse"]] == [8, 16]


def test_no_loggers_writes_no_event_files(tmp_path):
  from sae_jax.data import sources  # pylint: disable=import-outside-toplevel
  from sae_jax.training import trainer  # pylint: disable=import-outside-toplevel
  c = config.default_config()
  c.data.source, c.data.generator.d_in = "synthetic", 16
  c.data.n_train_tokens, c.data.n_eval_tokens = 1024, 512
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 32, 4, 512
  c.train.batch_size, c.train.n_devices, c.train.n_eval_points = 128, 1, 1
  c.train.loggers = ()
  src = sources.get_source(c, progress=False)
  trainer.train(config.resolve(c, src.d_in), src, str(tmp_path), progress=False)
  assert not os.path.exists(tmp_path / tracking.TENSORBOARD_DIR)


@pytest.mark.parametrize("setting, words", [
    ("train.loggers=('tensorboard','mlflow')", "unknown logger 'mlflow'"),
    ("train.log_every_steps=0", "train.log_every_steps=0 must be a positive integer"),
])
def test_bad_tracking_settings_are_one_line_errors(tmp_path, capsys, setting, words):
  rc = cli.main(["train", "--set", setting, f"out_dir={tmp_path}", "data.source='synthetic'"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("sae-jax: error:") and words in err
  assert len(err.splitlines()) == 1 and not os.listdir(tmp_path)


def test_wandb_backend_needs_wandb_installed_or_logs_offline(tmp_path, monkeypatch):
  c = config.resolve(config.default_config(), 16)
  c.train.loggers = ("wandb",)
  try:
    import wandb  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    with pytest.raises(ConfigError, match="pip install wandb"):
      tracking.Tracker(c, str(tmp_path), 16, {"run_id": "r", "sweep": "s"})
    return
  monkeypatch.setenv("WANDB_MODE", "offline")
  t = tracking.Tracker(c, str(tmp_path), 16, {"run_id": "r", "sweep": "s"})
  t.eval_point(1, {"normalized_mse": 0.5})
  t.close()
  assert os.path.isdir(tmp_path / "wandb")

