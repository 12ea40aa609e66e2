"""Which activation-cache layout reads faster: the local .npy shards or the tensorstore
zarr3 array behind a ``file://`` URL (what ``gs://`` / ``s3://`` caches use), in one run.

Writes the same float16 cache of random activations (--rows x --d-in, shards of
--shard-tokens rows) in both layouts to a temporary directory, then for each times
  * the write (`cache.write_cache`),
  * one epoch of the batch stream (`sae_jax.data.batches.stream`, its reader thread):
    random rows, and shuffled blocks (`BlockOrder`), each cold (pages dropped from the
    OS page cache with posix_fadvise DONTNEED, as a cache larger than memory) and warm,
  * a host's share of each batch in a 2-host run (rows [0, batch/2) of every batch);
and prints tokens/s and the ratio zarr / npy (> 1: zarr faster). Figures, not assertions.

    python benchmarks/cache_backends.py [--rows 131072] [--d-in 576] [--batch 4096]
                                        [--read-chunk-rows 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from sae_jax.data import batches, cache

from data_stream import _drop_page_cache  # this directory: both benchmarks read from disk cold


def stream_tokens_per_s(source, batch: int, steps: int, order, rows=None) -> float:
  """Tokens/s of `steps` batches (or of each batch's `rows` share) through the stream."""
  t = time.perf_counter()
  n = 0
  for _, x in batches.stream(source, batch, 0, 0, steps, order=order, rows=rows):
    n += len(x)
  return n / (time.perf_counter() - t)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=131_072, help="cache rows (float16)")
  p.add_argument("--d-in", type=int, default=576)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--shard-tokens", type=int, default=65_536)
  p.add_argument("--block-rows", type=int, default=4096)
  p.add_argument("--buffer-blocks", type=int, default=8)
  p.add_argument("--read-chunk-rows", type=int, default=cache.READ_CHUNK_ROWS,
                 help="rows of a zarr inner chunk (cache.READ_CHUNK_ROWS)")
  args = p.parse_args()
  cache.READ_CHUNK_ROWS = args.read_chunk_rows
  print(f"machine: {platform.machine()} {os.cpu_count()} cpus; cache {args.rows} rows x "
        f"d_in {args.d_in} float16 ({args.rows * args.d_in * 2 / 2**20:.0f} MiB), shards of "
        f"{args.shard_tokens} rows, zarr inner chunks of {cache.READ_CHUNK_ROWS} rows; "
        f"batch {args.batch}")
  x = np.random.default_rng(0).normal(size=(args.rows, args.d_in)).astype(np.float32)
  steps = args.rows // args.batch  # one epoch
  orders = {"random rows": None,
            f"blocks {args.block_rows}x{args.buffer_blocks}":
                batches.BlockOrder(args.block_rows, args.buffer_blocks)}
  results: dict = {}
  with tempfile.TemporaryDirectory() as tmp:
    for layout, where in (("npy", os.path.join(tmp, "npy")),
                          ("zarr", "file://" + os.path.join(tmp, "zarr"))):
      t = time.perf_counter()
      src = cache.write_cache(where, {"train": x, "eval": x[:1024]}, {},
                              shard_tokens=args.shard_tokens)
      results[("write", "")] = results.get(("write", ""), {})
      results[("write", "")][layout] = (args.rows / (time.perf_counter() - t),) * 2
      for name, order in orders.items():
        for share, rows in (("all", None), ("1 of 2 hosts", (0, args.batch // 2))):
          _drop_page_cache(tmp)
          cold = stream_tokens_per_s(src, args.batch, steps, order, rows)
          warm = stream_tokens_per_s(src, args.batch, steps, order, rows)
          results.setdefault((name, share), {})[layout] = (cold, warm)
      del src
  head = (f"{'read':>14} {'share':>12} | {'npy cold':>10} {'zarr cold':>10} {'zarr/npy':>8} | "
          f"{'npy warm':>10} {'zarr warm':>10} {'zarr/npy':>8}   (tokens/s)")
  print(head)
  print("-" * len(head))
  for (name, share), r in results.items():
    (nc, nw), (zc, zw) = r["npy"], r["zarr"]
    print(f"{name:>14} {share:>12} | {nc:>10,.0f} {zc:>10,.0f} {zc / nc:>7.2f}x | "
          f"{nw:>10,.0f} {zw:>10,.0f} {zw / nw:>7.2f}x")


if __name__ == "__main__":
  main()
