"""TopK train-step throughput against the encoder matmul alone, in one process.

For each shape (d_in, n_latents, k, B) it times, on the default JAX backend (1 device):
  * our jitted TopK train step (`sae_jax.training.trainer.make_train_step`, trainer.topk_step =
    "sparse": `sae_jax.saes.sparse`, the C++ kernels on a CPU),
  * the plain dense autodiff step (trainer.topk_step = "dense": the same loss through
    `jax.value_and_grad`, decoder on the dense code),
  * the encoder matmul alone, [B x d_in] @ [d_in x n_latents] (2·B·d_in·n_latents FLOPs),
  * our step fed by the prefetching data stream from an in-memory source, against the
    same step on a resident batch (does data loading stall the step?),
and prints tokens/s and the ratios. On a GPU it repeats the table with bfloat16 matmul
inputs (trainer.compute_dtype) and prints the matmul's share of the device's peak: the
peak measured in the same run with --peak-size (an N x N x N bfloat16 matmul), else the
vendor's dense bf16 figure. Figures, not assertions.

    python benchmarks/train_step.py [--shapes 768,16384,32,4096 ...] [--repeats 5]
        [--dtypes bfloat16] [--dead-tokens 1] [--peak-size 8192] [--sparse-impl xla]

--compare topk batchtopk instead times only those architectures' steps, interleaved
(A B, B A, A B, ...: load on a shared machine hits both alike) and prints each one's
tokens/s and its throughput relative to the first (the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax import config
from sae_jax.data import batches
from sae_jax.saes import sparse
from sae_jax.training import host_memory, optimizer, sharding, step

# (d_in, n_latents, k, B) of the issue: SmolLM2-135M's width, GPT-2 small's width, and a
# wide dictionary at a smaller batch.
DEFAULT_SHAPES = ["576,16384,32,4096", "768,16384,32,4096", "768,65536,32,1024"]
# Dense bf16 matmul peaks (TFLOP/s) for the matmul's share on GPUs; others print "-".
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _time(fn, repeats):
  """Median seconds of `repeats` calls, each run to completion, after two warm-up calls
  (compilation): the median, because other work on a shared machine only adds time."""
  jax.block_until_ready(fn())
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _step(c, x_np, mesh):
  opt = optimizer.make(c.train.lr, eps=c.train.adam_eps)
  step_fn = step.make_train_step(mesh, step.StepConfig.from_config(c), opt)
  state = step.init_state(jax.random.PRNGKey(0), x_np, c, 1.0, opt)
  holder = {"state": state}

  def run(x):
    holder["state"], m = step_fn(holder["state"], x)
    return m["loss"]
  return run


def measured_peak_tflops(n: int, repeats: int) -> float:
  """TFLOP/s of an n x n x n bfloat16 matmul with float32 accumulation (the device's
  practical dense peak)."""
  a = jax.device_put(jnp.ones((n, n), jnp.bfloat16))
  matmul = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
  return 2 * n**3 / _time(lambda: matmul(a, a), repeats) / 1e12


def bench(d_in, n_latents, k, B, repeats, dead_tokens, compute_dtype, sparse_impl=None,
          architecture="topk", dense=True, stream=True):
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(B, d_in)).astype(np.float32)
  mesh = sharding.make_mesh(1)
  configs = {}
  for kind in ("sparse", "dense") if dense else ("sparse",):
    c = config.default_config()
    c.sae.n_latents, c.sae.k, c.train.batch_size = n_latents, k, B
    c.sae.geometric_median_samples = B
    c.train.n_devices, c.train.dead_tokens = 1, dead_tokens
    c.train.topk_step, c.train.compute_dtype = kind, compute_dtype
    c.train.sparse_impl, c.sae.architecture = sparse_impl, architecture
    configs[kind] = config.resolve(c, d_in)
  x = jax.device_put(x_np)
  times = {}
  sparse_step = _step(configs["sparse"], x_np, mesh)
  times["sparse"] = _time(lambda: sparse_step(x), repeats)
  times["dense"] = float("nan")
  if dense:
    dense_step = _step(configs["dense"], x_np, mesh)
    times["dense"] = _time(lambda: dense_step(x), repeats)
    del dense_step

  dt = jnp.dtype(compute_dtype)
  W = jax.device_put(rng.normal(size=(d_in, n_latents)).astype(dt))
  xm = x.astype(dt)
  matmul = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
  times["matmul"] = _time(lambda: matmul(xm, W), repeats)

  source = batches.ArraySource({"train": rng.normal(size=(B * 8, d_in)).astype(np.float32)})

  stream_steps = 8

  def streamed():  # 8 steps, each batch read by the prefetching stream
    out = None
    for _, xb in batches.stream(source, B, 0, 0, stream_steps):
      out = sparse_step(xb)
    return out
  times["stream"] = _time(streamed, max(1, repeats // 2)) / stream_steps if stream else float("nan")
  return times


def compare(d_in, n_latents, k, B, architectures, repeats, dead_tokens, compute_dtype,
            sparse_impl=None):
  """{arch: median seconds per step}, and {arch: median over rounds of t_first / t_arch}:
  the steps are timed in alternating order, one call each per round."""
  x_np = np.random.default_rng(0).normal(size=(B, d_in)).astype(np.float32)
  mesh = sharding.make_mesh(1)
  steps = {}
  for arch in architectures:
    c = config.default_config()
    c.sae.n_latents, c.sae.k, c.train.batch_size = n_latents, k, B
    c.sae.geometric_median_samples = B
    c.train.n_devices, c.train.dead_tokens = 1, dead_tokens
    c.train.compute_dtype, c.train.sparse_impl, c.sae.architecture = (compute_dtype, sparse_impl,
                                                                      arch)
    steps[arch] = _step(config.resolve(c, d_in), x_np, mesh)
  x = jax.device_put(x_np)
  for fn in steps.values():  # compile and warm up
    jax.block_until_ready(fn(x))
    jax.block_until_ready(fn(x))
  times = {a: [] for a in architectures}
  for r in range(repeats):
    for arch in architectures if r % 2 == 0 else architectures[::-1]:
      t = time.perf_counter()
      jax.block_until_ready(steps[arch](x))
      times[arch].append(time.perf_counter() - t)
  first = np.asarray(times[architectures[0]])
  return ({a: float(np.median(t)) for a, t in times.items()},
          {a: float(np.median(first / np.asarray(t))) for a, t in times.items()})


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="d_in,n_latents,k,B")
  p.add_argument("--repeats", type=int, default=7, help="timed calls per figure (median)")
  p.add_argument("--dead-tokens", type=int, default=10_000_000,
                 help="dead-latent window; set it to B to time the AuxK path on every step")
  p.add_argument("--dtypes", nargs="*", default=None,
                 help="matmul input dtypes (default: float32, plus bfloat16 on a GPU)")
  p.add_argument("--peak-size", type=int, default=0,
                 help="measure the bf16 peak with an N x N x N matmul (0: vendor figure)")
  p.add_argument("--sparse-impl", default=None, help="train.sparse_impl (default: by backend)")
  p.add_argument("--no-dense", action="store_true", help="skip the dense autodiff step")
  p.add_argument("--no-stream", action="store_true", help="skip the streamed-vs-resident figure")
  p.add_argument("--architectures", nargs="*", default=["topk"],
                 help="e.g. topk batchtopk: one table row per architecture and shape")
  p.add_argument("--compare", nargs="*", default=None,
                 help="e.g. topk batchtopk: time only these steps, interleaved; print each one's "
                      "throughput relative to the first")
  args = p.parse_args()
  dev = jax.devices()[0]
  dtypes = args.dtypes or (["float32", "bfloat16"] if dev.platform == "gpu" else ["float32"])
  impl = sparse.impl_for(sharding.make_mesh(1), args.sparse_impl)
  print(f"machine: {platform.machine()} {_cpu_name()} {os.cpu_count()} cpus; backend "
        f"{dev.platform} ({dev.device_kind}); jax {jax.__version__}; sparse ops: {impl}; "
        f"freed host memory retained: {host_memory.retain_freed_memory()}")
  peak = next((v for name, v in GPU_PEAK_TFLOPS.items() if name in dev.device_kind), None)
  if args.peak_size:
    peak = measured_peak_tflops(args.peak_size, args.repeats)
    print(f"measured bf16 peak ({args.peak_size}^3 matmul, float32 accumulation): "
          f"{peak:.1f} TFLOP/s")
  if args.compare:
    first = args.compare[0]
    for dtype in dtypes:
      print(f"\nmatmul inputs {dtype}; tokens/s, alternating order, median of {args.repeats} "
            f"rounds; rel = tokens/s over {first}'s (median of per-round ratios)")
      head = f"{'d_in':>5} {'n_latents':>9} {'k':>3} {'B':>5} | " + " | ".join(
          f"{a:>12} {'rel':>6}" for a in args.compare)
      print(head)
      print("-" * len(head))
      for shape in args.shapes:
        d_in, n_latents, k, B = map(int, shape.split(","))
        t, rel = compare(d_in, n_latents, k, B, args.compare, args.repeats, args.dead_tokens,
                         dtype, args.sparse_impl)
        print(f"{d_in:>5} {n_latents:>9} {k:>3} {B:>5} | " + " | ".join(
            f"{B / t[a]:>12,.0f} {rel[a]:>6.1%}" for a in args.compare), flush=True)
    return
  for dtype in dtypes:
    print(f"\nmatmul inputs {dtype}; tokens/s (higher is better) and their ratios")
    head = (f"{'arch':>9} {'d_in':>5} {'n_latents':>9} {'k':>3} {'B':>5} | {'ours':>9} {'dense':>9} "
            f"{'matmul':>9} | {'ours/matmul':>11} {'ours/dense':>10} {'mm TFLOP/s':>10} "
            f"{'mm % peak':>9} | {'streamed':>9} {'streamed/resident':>17}")
    print(head)
    print("-" * len(head))
    for shape, arch in [(s, a) for s in args.shapes for a in args.architectures]:
      d_in, n_latents, k, B = map(int, shape.split(","))
      t = bench(d_in, n_latents, k, B, args.repeats, args.dead_tokens, dtype, args.sparse_impl,
                arch, dense=not args.no_dense, stream=not args.no_stream)
      tflops = 2 * B * d_in * n_latents / t["matmul"] / 1e12
      share = f"{tflops / peak:.0%}" if peak and dtype == "bfloat16" else "-"
      print(f"{arch:>9} {d_in:>5} {n_latents:>9} {k:>3} {B:>5} | {B / t['sparse']:>9,.0f} "
            f"{B / t['dense']:>9,.0f} {B / t['matmul']:>9,.0f} | "
            f"{t['matmul'] / t['sparse']:>11.0%} {t['dense'] / t['sparse']:>9.2f}x "
            f"{tflops:>10.3f} {share:>9} | {B / t['stream']:>9,.0f} "
            f"{t['sparse'] / t['stream']:>17.1%}", flush=True)


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    return platform.processor()


if __name__ == "__main__":
  main()
