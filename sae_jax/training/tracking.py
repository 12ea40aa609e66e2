"""Run tracking: training curves and held-out metrics to TensorBoard (and optionally
Weights & Biases) while a run trains.

    tracker = tracking.Tracker(c, run_dir, run_info, start_step)
    tracker.train_step(step, metrics)     # every step's host metrics (pulled one step late)
    tracker.eval_point(step, measured)    # the held-out metrics of an evaluation point
    tracker.close()

One metric-name scheme for the records, TensorBoard and W&B: a scalar is tagged
``<split>/<name>`` where ``<name>`` is its key in the run records (README, "Results
table") or in the train step's metrics, and ``<split>`` is

* ``train``: every `train.log_every_steps` steps, the training batch's ``loss`` and its
  terms (``sparsity_loss``, ``aux_loss``), ``normalized_mse``, ``l0``, ``dead_fraction``
  (latents that have not fired for `train.dead_tokens` tokens), ``grad_norm`` (global L2
  norm of the gradient, before the decoder-gradient projection), ``lr``, ``tokens``
  (tokens seen), ``flops`` (training compute so far, `sae_jax.training.flops`) and
  ``tokens_per_s`` (throughput since the previous log point, wall clock);
* ``eval``: at each evaluation point, every scalar of the evaluation record on the
  held-out split (``normalized_mse``, ``mse``, ``l0``, ``dead_fraction``,
  ``dense_fraction``, and what the evaluation suite adds).

The x axis is the optimizer step (= batches consumed). Event files go to
``<run_dir>/tensorboard/``, so ``tensorboard --logdir <out_dir>/<sweep name>`` shows every
run of a sweep under its run id. A resumed run purges the events logged after its
checkpoint (tensorboardX's ``purge_step``), so curves never double back.

Backends are chosen by `train.loggers` (a tuple of "tensorboard", "wandb"). Only the
primary process of a multi-host run logs. Writing never blocks the step: tensorboardX
queues events to a background thread, and the metrics it gets were already pulled to the
host (one step late) by the trainer.
"""

from __future__ import annotations

import math
import os
import time

import ml_collections

from sae_jax import files
from sae_jax.config import LOGGERS
from sae_jax.errors import ConfigError
from sae_jax.training import distributed, flops

TENSORBOARD_DIR = "tensorboard"  # under each run directory
# The train step's metrics logged every log_every_steps, besides lr, tokens, flops and
# tokens_per_s that the tracker adds.
STEP_METRICS = ("loss", "sparsity_loss", "aux_loss", "normalized_mse", "l0", "dead_fraction",
                "grad_norm")
TRAIN_SCALARS = STEP_METRICS + ("lr", "tokens", "flops", "tokens_per_s")
# The held-out metrics every evaluation record holds (`sae_jax.training.metrics.evaluate`).
EVAL_SCALARS = ("normalized_mse", "mse", "l0", "dead_fraction", "dense_fraction")


def tag(split: str, name: str) -> str:
  """The name of a scalar in TensorBoard and W&B: ``<split>/<record key>``."""
  return f"{split}/{name}"


def loggers_of(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The config's `train.loggers` as a tuple (a lone string is one logger)."""
  loggers = c.train.get("loggers", ("tensorboard",))
  loggers = (loggers,) if isinstance(loggers, str) else tuple(loggers)
  assert all(x in LOGGERS for x in loggers), loggers  # config.validate checked them
  return loggers


def logdir_of(sweep_dir: str) -> str:
  """The command that shows a sweep's runs: ``tensorboard --logdir <sweep_dir>``."""
  return f"tensorboard --logdir {sweep_dir}"


def _scalars(d: dict) -> dict[str, float]:
  """The finite-or-not real scalars of a dict (records also hold strings and lists)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, bool) or not hasattr(v, "__float__"):
      continue
    try:
      out[k] = float(v)
    except (TypeError, ValueError):
      continue
  return out


class _TensorBoard:

  def __init__(self, logdir: str, purge_step: int | None):
    import tensorboardX  # pylint: disable=import-outside-toplevel  # heavy: imports torch
    # a queue long enough that add_scalar never waits for the writer thread (the default,
    # 10 events, is less than one log point and made every put block on the disk write)
    self.logdir = logdir
    self.writer = tensorboardX.SummaryWriter(logdir, purge_step=purge_step, max_queue=4096,
                                             flush_secs=30)
    self.error: OSError | None = None
    self._guard_writes()

  def _guard_writes(self) -> None:
    """A write that fails in tensorboardX's writer thread (a full disk) would kill that
    thread with a traceback and leave add_scalar blocked on its full queue; instead the
    error is kept, later events are dropped, and `log` raises it here as one line."""
    events = getattr(getattr(self.writer._get_file_writer(), "event_writer", None),  # pylint: disable=protected-access
                     "_ev_writer", None)
    if events is None:  # another tensorboardX layout: unguarded
      return
    for name in ("write_event", "flush"):
      original = getattr(events, name)

      def guarded(*args, _original=original):
        if self.error is not None:
          return None
        try:
          return _original(*args)
        except OSError as e:
          self.error = e
          return None
      setattr(events, name, guarded)

  def _raise(self) -> None:
    if self.error is not None:
      err = files.storage_error(self.error, self.error.filename or self.logdir)
      raise err if err is not None else self.error

  def log(self, step: int, scalars: dict[str, float]) -> None:
    self._raise()
    for name, value in scalars.items():
      self.writer.add_scalar(name, value, global_step=step)

  def flush(self) -> None:
    self.writer.flush()
    self._raise()

  def close(self) -> None:
    try:
      self.writer.close()
    except OSError as e:  # its last flush, on the main thread
      self.error = self.error or e
    self._raise()


class _WandB:
  """Weights & Biases, a backend only when chosen (`train.loggers`): not a dependency.
  Works offline with WANDB_MODE=offline (files under <run_dir>/wandb)."""

  def __init__(self, c: ml_collections.ConfigDict, run_dir: str, run_info: dict):
    try:
      import wandb  # pylint: disable=import-outside-toplevel  # optional, not a dependency
    except ImportError:
      raise ConfigError("train.loggers includes 'wandb' but wandb is not installed: "
                        "pip install wandb, or drop it from train.loggers") from None
    run_id = run_info.get("run_id") or os.path.basename(os.path.normpath(run_dir))
    self.run = wandb.init(project=run_info.get("sweep") or c.name, name=run_id, id=run_id,
                          dir=run_dir, config=c.to_dict(), resume="allow", reinit=True)

  def log(self, step: int, scalars: dict[str, float]) -> None:
    self.run.log(scalars, step=step)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self.run.finish()


class Tracker:
  """The run's loggers (`train.loggers`) and its logging schedule.

  Args:
    c: the run's resolved config (train.loggers, train.log_every_steps, batch size).
    run_dir: the run directory; TensorBoard events go to run_dir/tensorboard.
    d_in: activation width (for the compute count).
    run_info: the record's run fields (sweep, run_id), naming the W&B run.
    start_step: the step the run starts (or resumes) from.

  Raises:
    ConfigError: "wandb" chosen but not installed.
  """

  def __init__(self, c: ml_collections.ConfigDict, run_dir: str, d_in: int,
               run_info: dict | None = None, start_step: int = 0):
    self.every = int(c.train.get("log_every_steps", 10))
    self.batch_size, self.lr = int(c.train.batch_size), float(c.train.lr)
    self.flops_per_token = flops.flops_per_token(d_in, c.sae.n_latents)
    self.backends = []
    if distributed.is_primary():
      for name in loggers_of(c):
        if name == "tensorboard":
          self.backends.append(_TensorBoard(os.path.join(run_dir, TENSORBOARD_DIR),
                                            purge_step=start_step + 1 if start_step else None))
        elif name == "wandb":
          self.backends.append(_WandB(c, run_dir, dict(run_info or {})))
    self.last = (start_step, time.perf_counter())

  def lr_at(self, step: int) -> float:  # pylint: disable=unused-argument
    """The learning rate of step `step` (constant: `train.lr`)."""
    return self.lr

  def train_step(self, step: int, metrics: dict) -> None:
    """Log the host metrics of step `step` (0-based: the batch just trained on) when
    step + 1 is a multiple of log_every_steps. Cheap otherwise."""
    done = step + 1
    if not self.backends or done % self.every:
      return
    now = time.perf_counter()
    last_step, last_t = self.last
    self.last = (done, now)
    tokens = done * self.batch_size
    scalars = {k: float(metrics[k]) for k in STEP_METRICS if k in metrics}
    scalars.update(lr=self.lr_at(step), tokens=float(tokens),
                   flops=self.flops_per_token * tokens)
    if now > last_t and done > last_step:
      scalars["tokens_per_s"] = (done - last_step) * self.batch_size / (now - last_t)
    self._log(done, "train", scalars)

  def eval_point(self, step: int, measured: dict) -> None:
    """Log every scalar of an evaluation point's held-out metrics at step `step`
    (batches consumed)."""
    if self.backends:
      self._log(step, "eval", _scalars(measured))
      for b in self.backends:
        b.flush()

  def _log(self, step: int, split: str, scalars: dict[str, float]) -> None:
    tagged = {tag(split, k): v for k, v in scalars.items() if math.isfinite(v)}
    for b in self.backends:
      b.log(step, tagged)

  def close(self) -> None:
    for b in self.backends:
      b.close()
    self.backends = []
