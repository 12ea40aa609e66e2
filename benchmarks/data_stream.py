"""Does the activation stream keep the train step fed? Data-stream tokens/s from an
activation cache on disk against the TopK train step's tokens/s, in one process.

Writes a float16 cache of random activations (--rows x --d-in) to a temporary directory,
drops its pages from the OS page cache (posix_fadvise DONTNEED, so the first epoch reads
from the disk, as a cache larger than memory would), then times:
  * the batch stream alone (`sae_jax.data.batches.stream`, its reader thread, plus
    `prefetch_to_device` with jax.device_put), random rows and shuffled blocks,
  * our jitted TopK train step on a resident batch at (d_in, --n-latents, --k, --batch),
and prints tokens/s and the ratio stream / step (>= 1: the step never waits on data).
Figures, not assertions.

    python benchmarks/data_stream.py [--rows 262144] [--d-in 576] [--batch 4096] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import numpy as np

from sae_jax import config
from sae_jax.data import batches, cache
from sae_jax.training import optimizer, sharding, step


def _drop_page_cache(path: str) -> None:
  for root, _, names in os.walk(path):
    for name in names:
      fd = os.open(os.path.join(root, name), os.O_RDONLY)
      try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
      finally:
        os.close(fd)


def stream_tokens_per_s(source, batch: int, steps: int, order) -> float:
  """Tokens/s of `steps` batches through the stream and onto the device."""
  t = time.perf_counter()
  last = None
  for _, x in batches.prefetch_to_device(
      batches.stream(source, batch, 0, 0, steps, order=order), jax.device_put):
    last = x
  jax.block_until_ready(last)
  return steps * batch / (time.perf_counter() - t)


def step_tokens_per_s(d_in: int, n_latents: int, k: int, batch: int, repeats: int) -> float:
  c = config.default_config()
  c.sae.n_latents, c.sae.k, c.train.batch_size = n_latents, k, batch
  c.sae.geometric_median_samples, c.train.n_devices = batch, 1
  c = config.resolve(c, d_in)
  x_np = np.random.default_rng(0).normal(size=(batch, d_in)).astype(np.float32)
  opt = optimizer.make(c.train.lr, eps=c.train.adam_eps)
  fn = step.make_train_step(sharding.make_mesh(1), step.StepConfig.from_config(c), opt)
  state = step.init_state(jax.random.PRNGKey(0), x_np, c, 1.0, opt)
  x = jax.device_put(x_np)
  for _ in range(2):  # compile, warm up
    state, m = fn(state, x)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, m = fn(state, x)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return batch / float(np.median(times))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=262_144, help="cache rows (float16)")
  p.add_argument("--d-in", type=int, default=576)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--n-latents", type=int, default=16384)
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--block-rows", type=int, default=4096)
  p.add_argument("--buffer-blocks", type=int, default=16)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run: gpu.sh --dry)")
  args = p.parse_args()
  if args.quick:
    args.rows, args.d_in, args.batch, args.n_latents, args.k = 8192, 64, 512, 1024, 8
    args.block_rows, args.buffer_blocks, args.repeats = 256, 4, 2
  dev = jax.devices()[0]
  print(f"machine: {platform.machine()} {os.cpu_count()} cpus; backend {dev.platform} "
        f"({dev.device_kind}); cache {args.rows} rows x d_in {args.d_in} float16 "
        f"({args.rows * args.d_in * 2 / 2**20:.0f} MiB) on disk; batch {args.batch}")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.rows, args.d_in)).astype(np.float32)
  steps = args.rows // args.batch  # one epoch
  with tempfile.TemporaryDirectory() as tmp:
    src = cache.write_cache(os.path.join(tmp, "cache"), {"train": x, "eval": x[:1024]}, {},
                            shard_tokens=65_536)
    del x
    orders = {"random rows": None,
              f"blocks {args.block_rows} x {args.buffer_blocks}":
                  batches.BlockOrder(args.block_rows, args.buffer_blocks)}
    stream = {}
    for name, order in orders.items():
      _drop_page_cache(tmp)
      cold = stream_tokens_per_s(src, args.batch, steps, order)
      warm = stream_tokens_per_s(src, args.batch, steps, order)  # pages now cached
      stream[name] = (cold, warm)
  ours = step_tokens_per_s(args.d_in, args.n_latents, args.k, args.batch, args.repeats)
  print(f"train step ({args.d_in}, {args.n_latents}, {args.k}, {args.batch}): {ours:,.0f} tokens/s")
  head = f"{'order':>22} | {'cold tok/s':>11} {'warm tok/s':>11} | {'cold/step':>9} {'warm/step':>9}"
  print(head)
  print("-" * len(head))
  for name, (cold, warm) in stream.items():
    print(f"{name:>22} | {cold:>11,.0f} {warm:>11,.0f} | {cold / ours:>8.1f}x {warm / ours:>8.1f}x")


if __name__ == "__main__":
  main()
