"""Does OpenAI's definition of "fired" (z > 1e-3, `train.fired_threshold`) change the
quickstart's numbers against the old one (z != 0, threshold 0)?

Trains quickstart-style TopK SAEs (SmolLM2 layer 15, the quickstart's activation cache,
409,600 tokens, batch 512, lr 4x Gao et al.'s, dead after 100k tokens) at k = 8 for each
n_latents and each threshold, all in one data pass, and prints the held-out normalized
MSE and dead fraction per threshold and their ratios (1e-3 over 0). Figures, not
assertions. About 4 SAEs' worth of the quickstart's training time.

Measured (2-core CPU shared with other jobs, 853 s for the pass; quickstart config with
lr_scale 4): identical at both thresholds, n_latents 512: normalized MSE 0.3145, dead
0.0859 (eval) / 0.0195 (train); 2048: 0.2668, 0.3491 / 0.0874; L0 8.00.

    python benchmarks/fired_threshold.py [--n_latents 512 2048] [--tokens 409600]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sae_jax import overrides
from sae_jax.data import sources
from sae_jax.training import trainer
from sweeps import quickstart


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n_latents", type=int, nargs="+", default=[512, 2048])
  p.add_argument("--k", type=int, default=8)
  p.add_argument("--tokens", type=int, default=409_600)
  a = p.parse_args()
  base = quickstart.get_config()
  source = sources.get_source(base)
  grid = [(n, t) for n in a.n_latents for t in (0.0, 1e-3)]
  configs = [overrides.apply(base, {"sae.n_latents": n, "sae.k": a.k, "train.token_budget": a.tokens,
                                    "train.fired_threshold": t, "train.n_eval_points": 1})
             for n, t in grid]
  t0 = time.time()
  with tempfile.TemporaryDirectory() as tmp:
    records = trainer.train_many(configs, source, [f"{tmp}/{i}" for i in range(len(grid))],
                                 progress=False)
  print(f"{len(grid)} SAEs, one data pass: {time.time() - t0:.0f} s")
  final = {g: r[-1] for g, r in zip(grid, records)}
  print(f"{'n_latents':>9} {'threshold':>9} {'normalized MSE':>14} {'dead (eval)':>11} "
        f"{'dead (train)':>12} {'L0':>6}")
  for (n, t), r in final.items():
    print(f"{n:9d} {t:9.0e} {r['normalized_mse']:14.4f} {r['dead_fraction']:11.4f} "
          f"{r['train_dead_fraction']:12.4f} {r['l0']:6.2f}")
  for n in a.n_latents:
    old, new = final[(n, 0.0)], final[(n, 1e-3)]
    print(f"n_latents {n}: normalized MSE ratio (1e-3 / 0) {new['normalized_mse'] / old['normalized_mse']:.4f}; "
          f"dead fraction {old['dead_fraction']:.4f} -> {new['dead_fraction']:.4f}")


if __name__ == "__main__":
  main()
