"""Training without a cache: tokens/s of training on the fly (data.cache="none") vs
training from the activation cache vs the LM forward alone, in one run, on the same
settings (SmolLM2's middle layer over the embedded corpus by default).

  1. LM forward alone: `lm.activations` over the training contexts, batch by batch, to
     float32 on the host (what the harvest and the on-the-fly source compute).
  2. From the cache: the harvest into a temporary cache (timed, reported apart), then
     `train_many` over it with the same shuffle-buffer order as 3.
  3. On the fly: `OnTheFlySource` (model load, tokenizing, the eval split and the first
     buffer: reported apart), then `train_many` over it.
Training tokens/s count train_many's wall time, which includes its fixed costs
(initialisation, the final evaluation and checkpoint); a first train_many of 2 steps warms
up the process and is reported apart. The cache
lives in a temporary directory (the corpus is linked from the usual cache directory; no
cache there is read or written). Figures, not assertions.

  python benchmarks/on_the_fly.py [--lm-batches 16] [--n-latents 4096] [--k 32]
                                  [--batch 1024] [--device cpu] [--model smollm2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import numpy as np
import torch

from sae_jax import config, files
from sae_jax.data import batches, harvest, lm, on_the_fly
from sae_jax.training import trainer


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="smollm2")
  p.add_argument("--lm-batches", type=int, default=16,
                 help="training tokens: this many LM batches of 32 contexts of 64 tokens")
  p.add_argument("--buffer", type=int, default=4, help="data.shuffle_buffer_blocks")
  p.add_argument("--n-latents", type=int, default=4096)
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--device", default="cpu", help="torch device of the LM (data.device)")
  args = p.parse_args()

  print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, torch {torch.__version__} ({args.device}); load average "
        f"{os.getloadavg()[0]:.1f}")
  tmp = tempfile.mkdtemp(prefix="sae_jax_on_the_fly_")
  corpus_dir = os.path.join(files.cache_root(None), "corpus")
  if os.path.isdir(corpus_dir):
    os.symlink(corpus_dir, os.path.join(tmp, "corpus"))
  c = config.default_config()
  c.data.model, c.data.device, c.data.cache_dir = args.model, args.device, tmp
  c.data.lm_batch_size, c.data.context_length = 32, 64
  c.data.n_train_tokens = args.lm_batches * 32 * 63
  c.data.n_eval_tokens = 2016
  c.data.shard_tokens = 65_536
  c.data.shuffle_buffer_blocks = args.buffer
  c.sae.n_latents, c.sae.k = args.n_latents, args.k
  c.sae.geometric_median_samples = 2048
  c.train.batch_size = args.batch
  c.train.n_devices = 1
  c.train.n_eval_points = 1
  c.train.checkpoint_every_steps = 10**9
  c.train.loggers = ()
  n_tok = c.data.n_train_tokens // args.batch * args.batch
  c.train.token_budget = n_tok
  print(f"{n_tok:,} training tokens; SAE {args.n_latents} latents, k {args.k}, batch "
        f"{args.batch}; shuffle buffer {args.buffer} LM batches of 32x64")

  # 3 first for the model's hash memo and the corpus; its source is also the LM for 1
  t0 = time.perf_counter()
  src = on_the_fly.OnTheFlySource(c, progress=False)
  t_src = time.perf_counter() - t0
  layer = src.meta["layer"]

  # 1. the LM forward alone, over the same contexts
  tok_CxS = src.tokens("train")
  lm.activations(src.model, torch.from_numpy(tok_CxS[:2].astype(np.int64)), [src.target])
  t0 = time.perf_counter()
  for b in range(0, len(tok_CxS), 32):
    ids = torch.from_numpy(tok_CxS[b:b + 32].astype(np.int64)).to(args.device)
    lm.activations(src.model, ids, [src.target])[src.target].float().cpu().numpy()
  t_lm = time.perf_counter() - t0
  lm_tps = len(tok_CxS) * 63 / t_lm

  # 2. from the cache (same order: the on-the-fly source's shuffle buffers)
  disk = c.copy_and_resolve_references()
  disk.data.cache = "disk"
  t0 = time.perf_counter()
  cache = harvest.get_or_harvest(disk, progress=False)
  t_harvest = time.perf_counter() - t0

  # fixed costs of a train_many: 2 steps from an in-memory source
  warm = c.copy_and_resolve_references()
  warm.train.token_budget = 2 * args.batch
  x = batches.ArraySource({"train": cache.read("train", np.arange(4 * args.batch)),
                           "eval": cache.read("eval", np.arange(2016))})
  t0 = time.perf_counter()
  trainer.train_many([warm], x, [os.path.join(tmp, "warm")], progress=False)
  t_fixed = time.perf_counter() - t0

  cache.order = src.order  # the trainer streams in a source's own order
  cache.sample_rows = src.sample_rows
  t0 = time.perf_counter()
  rec_disk = trainer.train_many([disk], cache, [os.path.join(tmp, "disk")], progress=False)[0]
  t_disk = time.perf_counter() - t0

  # 3. on the fly; its first buffer was computed at set-up (stats, b_pre sample) and is
  # charged here at the LM's rate
  n0 = src.n_forward_contexts
  t0 = time.perf_counter()
  rec_fly = trainer.train_many([c], src, [os.path.join(tmp, "fly")], progress=False)[0]
  t_first = src.order.window_rows / lm_tps
  t_fly = time.perf_counter() - t0 + t_first

  def tps(t):  # noqa: E306
    return f"{n_tok / t:8.0f} tokens/s ({t:.1f} s)"

  print(f"model {args.model} layer {layer}: source set up in {t_src:.1f} s (load, tokenize, "
        f"eval split, first buffer); harvest into the cache {t_harvest:.1f} s; a 2-step "
        f"train_many (warm-up: compilation, init, evaluation, save) {t_fixed:.1f} s")
  print(f"LM forward alone:          {lm_tps:8.0f} tokens/s")
  print(f"train from the cache:      {tps(t_disk)}")
  print(f"train on the fly:          {tps(t_fly)}; LM ran on "
        f"{src.n_forward_contexts - n0} contexts during it (+ the first buffer's "
        f"{src.order.window_rows // 63} at set-up, charged {t_first:.1f} s)")
  serial = 1 / (1 / lm_tps + t_disk / n_tok)
  print(f"on the fly / from the cache: {t_disk / t_fly:.3f}; the LM then the training, in "
        f"series, would give {serial:.0f} tokens/s")
  print(f"final held-out normalized MSE: from the cache {rec_disk[-1]['normalized_mse']:.4f}, on "
        f"the fly {rec_fly[-1]['normalized_mse']:.4f} (same rows and order)")


if __name__ == "__main__":
  main()
