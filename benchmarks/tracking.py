"""Cost of run tracking (`sae_jax.training.tracking`) against the train step, in one process.

For a shape (d_in, n_latents, k, B) on the default JAX backend (1 device) it times:
  * the jitted TopK train step (`sae_jax.training.step.make_train_step`), median per step;
  * `Tracker.train_step` writing every scalar to TensorBoard (tensorboardX) at EVERY step
    (train.log_every_steps = 1, the worst case; the default is 10), median per call,
    on the host metrics of a real step;
  * the same at the default schedule (log_every_steps = 10), mean per step;
  * the trainer's loop (dispatch step s, pull step s-1's metrics to the host, hand them to
    the tracker) with TensorBoard writing at every step against the same loop without a
    tracker, in alternating blocks of steps (so load from other processes hits both
    alike), total time of each;
and prints the ratios to the step time (the target: < 2%). Figures, not assertions.
(`trainer.train` end to end is not the reference: its time is mostly XLA compilation.)

    python benchmarks/tracking.py [--shape 576,4096,32,1024] [--repeats 2]

Measured (2-core CPU shared with other jobs, default shape): train step 854 ms (median);
tracker at every step 0.085 ms per call = 0.01% of a step; at log_every_steps=10 0.135 ms
per step = 0.02%; the loop with vs without it 66.6 s vs 70.3 s (-5%: the machine's noise,
larger than the effect). Before tensorboardX's queue was lengthened (max_queue 10 ->
4096) a profile showed add_scalar blocking ~2 ms per scalar on the writer thread, ~16% of
a 0.15 s step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from sae_jax import config
from sae_jax.training import optimizer, sharding, step, tracking


def _config(d_in, n_latents, k, B, n_steps, loggers, every):
  c = config.default_config()
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = n_latents, k, B
  c.data.n_train_tokens = n_steps * B
  c.train.batch_size, c.train.token_budget, c.train.n_devices = B, n_steps * B, 1
  c.train.n_eval_points, c.train.checkpoint_every_steps = 1, 10**9
  c.train.loggers, c.train.log_every_steps = loggers, every
  return config.resolve(c, d_in)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shape", default="576,4096,32,1024", help="d_in,n_latents,k,B")
  p.add_argument("--steps", type=int, default=64)
  p.add_argument("--repeats", type=int, default=2, help="passes of --steps steps per loop")
  a = p.parse_args()
  d_in, n_latents, k, B = map(int, a.shape.split(","))
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(B, d_in)).astype(np.float32)
  c = _config(d_in, n_latents, k, B, a.steps, ("tensorboard",), 1)

  # the step alone
  opt = optimizer.make(c.train.lr, eps=c.train.adam_eps, project_decoder=True)
  step_fn = step.make_train_step(sharding.make_mesh(1), step.StepConfig.from_config(c), opt)
  state = step.init_state(jax.random.PRNGKey(0), x_np, c, 1.0, opt)
  x = jax.device_put(x_np)
  for _ in range(3):
    state, m = step_fn(state, x)
  jax.block_until_ready(m)
  times = []
  for _ in range(a.steps):
    t = time.perf_counter()
    state, m = step_fn(state, x)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  t_step = float(np.median(times))
  host_m = jax.device_get(m)

  with tempfile.TemporaryDirectory() as tmp:
    # the tracker's call, writing at every step, then at the default schedule
    per = {}
    for every in (1, 10):
      ce = _config(d_in, n_latents, k, B, a.steps, ("tensorboard",), every)
      tr = tracking.Tracker(ce, os.path.join(tmp, f"every{every}"), d_in, {"run_id": "b"})
      calls = []
      for s in range(a.steps):
        t = time.perf_counter()
        tr.train_step(s, host_m)
        calls.append(time.perf_counter() - t)
      tr.close()
      per[every] = float(np.median(calls)) if every == 1 else float(np.mean(calls))

    # the trainer's loop, alternating blocks with and without the tracker
    tr = tracking.Tracker(c, os.path.join(tmp, "loop"), d_in, {"run_id": "b"})
    total = {"off": 0.0, "on": 0.0}
    block, s = 8, 0
    for _ in range(a.repeats * a.steps // (2 * block)):
      for name in ("off", "on"):
        pending = None
        t = time.perf_counter()
        for _ in range(block):
          state, m = step_fn(state, x)
          if pending is not None:
            host = jax.device_get(pending)
            if name == "on":
              tr.train_step(s, host)
            s += 1
          pending = m
        jax.block_until_ready(pending)
        total[name] += time.perf_counter() - t
    tr.close()

  off, on = total["off"], total["on"]
  print(f"shape d_in={d_in} n_latents={n_latents} k={k} B={B}, {jax.devices()[0].platform}, "
        f"{a.steps} steps")
  print(f"train step (median)                      {t_step * 1e3:9.3f} ms")
  print(f"tracker, log_every_steps=1 (median call) {per[1] * 1e3:9.3f} ms  "
        f"= {100 * per[1] / t_step:.2f}% of a step")
  print(f"tracker, log_every_steps=10 (per step)   {per[10] * 1e3:9.3f} ms  "
        f"= {100 * per[10] / t_step:.2f}% of a step")
  print(f"trainer loop, every step logged vs no tracker: {on:.2f} s vs {off:.2f} s = "
        f"{100 * (on / off - 1):+.2f}% (noise of a shared machine included)")


if __name__ == "__main__":
  main()
