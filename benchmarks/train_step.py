"""Train-step throughput against the encoder matmul alone, in one process.

For each shape (d_in, n_latents, k, B) it times, on the default JAX backend:
  * our jitted TopK train step (`sae_jax.train.make_train_step`, AuxK on, 1 device),
  * the encoder matmul alone, [B x d_in] @ [d_in x n_latents] (2·B·d_in·n_latents FLOPs),
  * our step fed by the prefetching data stream from an in-memory source, against the
    same step on a resident batch (does data loading stall the step?),
and prints tokens/s and the ratios. Figures, not assertions.

    python benchmarks/train_step.py [--shapes 576,4096,32,1024 ...] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from sae_jax import config, data, optimizer, train

DEFAULT_SHAPES = ["576,1024,32,1024", "576,4096,32,1024", "576,16384,32,1024"]


def _time(fn, repeats):
  fn()  # compile and warm up
  t = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / repeats


def bench(d_in, n_latents, k, B, repeats, dead_tokens):
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(B, d_in)).astype(np.float32)
  c = config.default_config()
  c.sae.n_latents, c.sae.k, c.train.batch_size = n_latents, k, B
  c.train.n_devices = 1
  c.train.dead_tokens = dead_tokens
  c = config.resolve(c, d_in)
  mesh = train.make_mesh(1)
  opt = optimizer.make(c.train.lr, eps=c.train.adam_eps)
  step_fn = train.make_train_step(mesh, train.StepConfig.from_config(c), opt)
  state = train.init_state(jax.random.PRNGKey(0), x_np, c, 1.0, opt)
  x = jax.device_put(x_np)
  holder = {"state": state}

  def step():
    holder["state"], m = step_fn(holder["state"], x)
    return m["loss"]

  t_step = _time(step, repeats)

  W = jax.device_put(rng.normal(size=(d_in, n_latents)).astype(np.float32))
  matmul = jax.jit(lambda a, b: a @ b)
  t_mm = _time(lambda: matmul(x, W), repeats)

  source = data.ArraySource({"train": rng.normal(size=(B * 8, d_in)).astype(np.float32)})
  def streamed():
    out = None
    for _, xb in data.stream(source, B, 0, 0, repeats):
      holder["state"], m = step_fn(holder["state"], xb)
      out = m["loss"]
    return out
  streamed()
  t = time.perf_counter()
  jax.block_until_ready(streamed())
  t_stream = (time.perf_counter() - t) / repeats
  return t_step, t_mm, t_stream


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="d_in,n_latents,k,B")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--dead-tokens", type=int, default=10_000_000,
                 help="dead-latent window; set it to B to time the AuxK path on every step")
  args = p.parse_args()
  dev = jax.devices()[0]
  print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus; "
        f"backend {dev.platform} ({dev.device_kind}); jax {jax.__version__}; float32")
  head = (f"{'d_in':>5} {'n_latents':>9} {'k':>4} {'B':>5} | {'step tok/s':>11} "
          f"{'matmul tok/s':>12} {'step/matmul':>11} {'GFLOP/s mm':>10} | "
          f"{'streamed tok/s':>14} {'stream/resident':>15}")
  print(head)
  print("-" * len(head))
  for shape in args.shapes:
    d_in, n_latents, k, B = map(int, shape.split(","))
    t_step, t_mm, t_stream = bench(d_in, n_latents, k, B, args.repeats, args.dead_tokens)
    print(f"{d_in:>5} {n_latents:>9} {k:>4} {B:>5} | {B / t_step:>11,.0f} {B / t_mm:>12,.0f} "
          f"{t_mm / t_step:>11.2%} {2 * B * d_in * n_latents / t_mm / 1e9:>10.1f} | "
          f"{B / t_stream:>14,.0f} {t_step / t_stream:>15.2%}")


if __name__ == "__main__":
  main()
