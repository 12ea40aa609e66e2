"""The measures of the evaluation suite for one SAE (Gao et al. 2024, Sec. 4): basics
(normalized MSE, L0, dead / dense latents, the density histogram), probe loss,
explainability, ablation sparsity and, for several SAEs at once, downstream loss. Each
takes the SAE (`sae_jax.evals.runs.SAEOnRaw`) and the cache's `Shared`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sae_jax.evals import explain, probes
from sae_jax.evals.runs import SAEOnRaw
from sae_jax.evals.shared import Shared
from sae_jax.training import metrics

FLAT_KEYS = {
    "basics": ("normalized_mse", "mse", "l0", "dead_fraction", "dense_fraction"),
    "downstream": ("ce_clean", "ce_sae", "delta_ce", "kl", "ce_zero", "ce_mean",
                   "loss_recovered_zero", "loss_recovered_mean"),
    "probes": ("probe_loss", "probe_loss_reference"),
    "ablation": ("ablation_sparsity", "ablation_sparsity_fraction"),
    "explain": ("explain_precision", "explain_recall", "explain_f1"),
}


def density_histogram(fires_N: np.ndarray, n_tokens: int, lo: float = -5.0,
                      step: float = 0.5) -> dict:
  """Histogram of log10(firing frequency) of the latents that fire; dead ones counted
  apart. edges: bin edges in log10 units, from `lo` (anything rarer goes in the first
  bin) to 0."""
  freq = np.asarray(fires_N, np.float64) / max(n_tokens, 1)
  alive = freq > 0
  edges = np.arange(lo, 0 + step / 2, step)
  counts, _ = np.histogram(np.clip(np.log10(freq[alive]), lo, 0), bins=edges)
  return {"edges": edges.tolist(), "counts": counts.tolist(), "dead": int((~alive).sum())}


def encode_eval(sae: SAEOnRaw, shared: Shared, latents: np.ndarray | None,
                 batch: int = 4096) -> tuple[np.ndarray, np.ndarray | None]:
  """Firing counts [N] (z > the SAE's fired_threshold, as in training) over every held-out
  row, and the activations [rows, M] of `latents` (None: not kept)."""
  n = shared.cache.n_tokens("eval")
  fires = np.zeros(sae.n_latents, np.int64)
  cols = []
  for lo in range(0, n, batch):
    z, _ = sae.encode(shared.cache.read("eval", np.arange(lo, min(n, lo + batch))))
    fires += (z > sae.hp.fired_threshold).sum(0)  # the training's "fired" (saes.Hyper)
    if latents is not None:
      cols.append(z[:, latents])
  return fires, (np.concatenate(cols) if latents is not None else None)


def basics(cfg, sae: SAEOnRaw, shared: Shared) -> dict:
  state = dataclasses.make_dataclass("S", ["params", "extras", "norm_scale"])(
      sae.params, sae.extras, sae.norm_scale)
  return metrics.evaluate(state, shared.cache, cfg)


def probe_loss(sae: SAEOnRaw, shared: Shared) -> dict:
  tasks = {}
  for name, t in shared.probe_tasks().items():
    z0, _ = sae.encode(t["x_train"])
    z1, _ = sae.encode(t["x_test"])
    best = probes.best_latent_probe(z0, t["y_train"], z1, t["y_test"])
    tasks[name] = dict(best, reference_loss=t["reference"]["loss"], n_train=t["n_train"],
                       n_test=t["n_test"], positive_rate=t["positive_rate"])
  if not tasks:
    return {"tasks": {}, "probe_loss": float("nan"), "probe_loss_reference": float("nan")}
  return {"tasks": tasks, "n_tasks": len(tasks), "chance": probes.LOG2,
          "probe_loss": float(np.mean([t["loss"] for t in tasks.values()])),
          "probe_loss_reference": float(np.mean([t["reference_loss"] for t in tasks.values()]))}


def sample_latents(fires_N: np.ndarray, m: int, seed: int) -> np.ndarray:
  alive = np.flatnonzero(fires_N > 0)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(alive, min(m, len(alive)), replace=False)) if len(alive) else alive


def acts_grid(shared: Shared, acts_RxM: np.ndarray) -> np.ndarray:
  """Cache-row activations -> [C, S, M] (0 at positions without a row)."""
  C, S = shared.tokens.shape
  valid = shared.valid()
  grid = np.zeros((C, S, acts_RxM.shape[1]), np.float32)
  c, p = np.nonzero(valid)
  grid[c, p] = acts_RxM[shared.rows(c, p)]
  return grid


def explainability(shared: Shared, latents: np.ndarray, grid_CxSxM: np.ndarray) -> dict:
  res = explain.explain_latents(shared.tokens, grid_CxSxM, shared.valid())
  scored = [(int(j), r) for j, r in zip(latents, res) if r is not None]
  texts = None
  try:
    tz = shared.tokenizer
    texts = lambda g: tz.decode(list(g))  # noqa: E731
  except Exception:  # pylint: disable=broad-except
    pass
  per = [dict(latent=j, **r, text=texts(r["ngram"]) if texts else None) for j, r in scored]
  if not per:
    return {"latents": [], "n_scored": 0, "explain_precision": float("nan"),
            "explain_recall": float("nan"), "explain_f1": float("nan")}
  return {"n_sampled": int(len(latents)), "n_scored": len(per),
          "explain_precision": float(np.mean([r["precision"] for r in per])),
          "explain_recall": float(np.mean([r["recall"] for r in per])),
          "explain_f1": float(np.mean([r["f1"] for r in per])),
          "latents": [{**r, "ngram": list(r["ngram"])} for r in per]}


def ablation(sae: SAEOnRaw, shared: Shared, latents: np.ndarray, grid_CxSxM: np.ndarray) -> dict:
  from sae_jax.evals import splice  # torch: imported only when an LM measure runs
  S = grid_CxSxM.shape[1]
  T = shared.options.n_future
  occ = []
  for m, j in enumerate(latents):
    a = grid_CxSxM[..., m].copy()
    a[:, S - T + 1:] *= 1e-9 if S - T + 1 > shared.start else 1.0  # prefer T full positions
    c, p = np.unravel_index(np.argmax(a), a.shape)
    if grid_CxSxM[c, p, m] > 0:
      occ.append((int(j), int(c), int(p)))
  res = splice.ablation_sparsity(shared.lm, shared.tokens, shared.layer, shared.start, sae, occ,
                                 n_future=T, batch_size=shared.options.batch_size)
  good = [r for r in res if math.isfinite(r["effective_logits"])]
  return {"n_latents": len(good), "n_future": T,
          "ablation_sparsity": float(np.mean([r["effective_logits"] for r in good])) if good else float("nan"),
          "ablation_sparsity_fraction": float(np.mean([r["fraction"] for r in good])) if good else float("nan"),
          "latents": res}


def downstream(saes: dict[str, SAEOnRaw], shared: Shared) -> dict:
  from sae_jax.evals import splice  # torch: imported only when an LM measure runs
  tok = shared.tokens[:shared.options.max_contexts]
  mean = shared.cache.stats.get("mean") if hasattr(shared.cache, "stats") else None
  return splice.downstream_loss(shared.lm, tok, shared.layer, shared.start,
                                {name: s.reconstruct_torch for name, s in saes.items()},
                                mean, batch_size=shared.options.batch_size)
