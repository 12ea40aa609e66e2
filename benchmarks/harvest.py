"""Harvest throughput: our path vs a plain truncated transformers forward.

Ours: `lm.residual_stream` (forward pre-hook on block `layer`, stop by exception) over
real packed contexts of the embedded corpus, plus the float16 conversion and shard
writing of `activations`. Baseline: the same model with `model.model.layers` sliced to
`layer` blocks, called as `model.model(input_ids)` (which also applies the final norm)
on the same batches. Both in one process, alternating batch by batch.

  python benchmarks/harvest.py [--batches 8] [--batch-size 32] [--context-length 64]
                               [--device cuda] [--torch-dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
import transformers

from sae_jax import config
from sae_jax.data import cache, corpus, harvest, lm


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="smollm2")
  p.add_argument("--layer", type=int, default=None, help="default: the middle layer")
  p.add_argument("--batches", type=int, default=8)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--context-length", type=int, default=64)
  p.add_argument("--repeats", type=int, default=2, help="timed passes over the batches")
  p.add_argument("--device", default="cpu", help="torch device of the LM (data.device)")
  p.add_argument("--torch-dtype", default="float32",
                 help="dtype of the LM forward (data.torch_dtype): float32, bfloat16")
  args = p.parse_args()

  print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
  print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
  t0 = time.time()
  model, tokenizer, info = lm.load_lm(args.model, args.device, args.torch_dtype)
  layer = lm.middle_layer(info["n_layers"]) if args.layer is None else args.layer
  print(f"model {args.model}: {info['n_layers']} layers, d_model {info['d_model']}, "
        f"layer {layer}, loaded in {time.time() - t0:.1f} s; {args.device} {args.torch_dtype}")

  docs = corpus.load_documents("embedded", config.cache_root())
  train, _ = corpus.split_documents(docs, 0.1, seed=0)
  n_ctx = args.batches * args.batch_size
  t0 = time.time()
  tok_CxS = harvest.context_tokens(tokenizer, train, n_ctx * (args.context_length - 1),
                                       args.context_length, True, "train", "embedded")
  t_tok = time.time() - t0
  batches = [torch.from_numpy(tok_CxS[i:i + args.batch_size].astype(np.int64)).to(args.device)
             for i in range(0, n_ctx, args.batch_size)]
  print(f"{len(batches)} batches of {args.batch_size}x{args.context_length} tokens "
        f"(tokenizing + packing took {t_tok * 1e3:.0f} ms)")

  blocks = model.model.layers
  truncated = torch.nn.ModuleList(list(blocks)[:layer])

  def ours(ids_BxS, writer):
    x_BxSxD = lm.residual_stream(model, ids_BxS, layer)
    writer.add(x_BxSxD[:, 1:].float().cpu().numpy().reshape(-1, x_BxSxD.shape[-1]))

  def plain(ids_BxS):
    model.model.layers = truncated
    try:
      with torch.inference_mode():
        out = model.model(input_ids=ids_BxS, use_cache=False)
      if ids_BxS.is_cuda:
        torch.cuda.synchronize()  # ours waits for its copy to the host; so does this
      del out
    finally:
      model.model.layers = blocks

  with tempfile.TemporaryDirectory() as tmp:
    writer = cache.ShardWriter(tmp, "float16", 65_536, [])
    ours(batches[0], writer)  # warm up both paths
    plain(batches[0])
    t_ours, t_plain = [], []
    for _ in range(args.repeats):
      for ids_BxS in batches:
        t0 = time.perf_counter()
        ours(ids_BxS, writer)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain(ids_BxS)
        t_plain.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    writer.close()
    t_close = time.perf_counter() - t0

  tokens = args.batch_size * args.context_length
  ours_tps = tokens / statistics.median(t_ours)
  plain_tps = tokens / statistics.median(t_plain)
  total_ours = tokens * len(t_ours) / (sum(t_ours) + t_close)
  print(f"ours (residual_stream + fp16 + shard write): {ours_tps:8.0f} tokens/s median "
        f"({total_ours:.0f} overall incl. final shard write {t_close * 1e3:.0f} ms)")
  print(f"plain truncated forward (layers[:{layer}]):   {plain_tps:8.0f} tokens/s median")
  print(f"ratio ours / plain: {ours_tps / plain_tps:.3f}")


if __name__ == "__main__":
  main()
