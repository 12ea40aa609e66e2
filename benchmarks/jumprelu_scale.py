"""Issue 19's situation: does JumpReLU's sparsity knob act on raw activations?

A researcher's setting: activations of RMS token norm ~3.8 (the ground-truth generator,
`sae_jax.data.synthetic`, d_in 128, 1024 true features, true L0 13), used raw
(`sae.input_norm = "none"`), a JumpReLU SAE with n_latents 1024 trained at lambda = 0.003
and 0.3, twice:

  * "scale-aware": the defaults (bandwidth and initial threshold in units of the
    measured input scale s = sqrt(E||x||^2), `sae.input_scale` = None);
  * "pre-issue": the old absolute settings forced (sae.input_scale = 1, bandwidth 1e-3,
    initial_threshold 1e-3), under which the two lambdas gave the same L0.

All four SAEs train in one pass over the data (`trainer.train_many`). It prints, per run,
the held-out L0 and normalized MSE, the final thresholds' quantiles (in units of s) and the
run's warnings (`sae_jax.training.diagnostics.KnobCheck`). Figures, not assertions.

    python benchmarks/jumprelu_scale.py [--tokens 2048000] [--n-train 262144]

The issue trained on 2M samples; the default budget is the same 2,048,000 tokens (2000
steps of 1024), drawn from a 262,144-token training split (about 8 epochs), since the
generator keeps its true activations dense (4.6 KB per token). Measured (user 184 s +
system 178 s of CPU; 24 min wall on a shared 2-core machine):

    settings      lambda      s      L0    nMSE  threshold / s at quantiles 5, 25, 50, 75, 95%
    scale-aware    0.003  3.756    67.4  0.1537  0.04862 0.05009 0.05234 0.05417 0.05587
    scale-aware    0.300  3.756     9.7  0.5741  0.1014 0.117 0.1249 0.1322 0.1411
    pre-issue      0.003  1.000   358.1  0.0111  0.003659 0.004204 0.004668 0.005252 0.006624
    pre-issue      0.300  1.000   358.1  0.0111  0.003653 0.004211 0.004671 0.005256 0.006599

and both pre-issue runs warn ("... is silent in the first 200 steps: the thresholds are
~105x below the mean activation of the latents they gate ... likely cause:
sae.input_scale=1 but the inputs' RMS norm is 3.72 ...").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

from sae_jax import config
from sae_jax.data import synthetic
from sae_jax.training import checkpoint, trainer

LAMBDAS = (0.003, 0.3)
PRE_ISSUE = {"input_scale": 1.0, "bandwidth": 1e-3, "initial_threshold": 1e-3}


def _config(lam: float, old: bool, tokens: int) -> config.ml_collections.ConfigDict:
  c = config.default_config()
  c.sae.architecture, c.sae.n_latents, c.sae.input_norm = "jumprelu", 1024, "none"
  c.sae.sparsity_coefficient = lam
  for key, value in (PRE_ISSUE if old else {}).items():
    c.sae[key] = value
  c.train.batch_size, c.train.token_budget = 1024, tokens
  c.train.n_eval_points, c.train.checkpoint_every_steps, c.train.n_devices = 1, 10**6, 1
  return c


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--tokens", type=int, default=2_048_000, help="token budget per SAE")
  ap.add_argument("--n-train", type=int, default=262_144, help="training split (tokens)")
  args = ap.parse_args()
  t0 = time.time()
  gen = synthetic.GeneratorConfig(d_in=128, n_features=1024, mean_active=13)
  source = synthetic.SyntheticSource(gen, n_train=args.n_train, n_eval=16_384)
  rms = float(np.sqrt(source.stats["mean_sq_norm"]))
  print(f"inputs: d_in 128, RMS token norm {rms:.3f}, true L0 13; JumpReLU n_latents 1024, "
        f"{args.tokens:,} tokens of a {args.n_train:,}-token split")
  runs = [(old, lam) for old in (False, True) for lam in LAMBDAS]
  configs = [_config(lam, old, args.tokens) for old, lam in runs]
  with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dirs = [os.path.join(tmp, f"{'old' if old else 'new'}_{lam}") for old, lam in runs]
    infos = [{"run_id": os.path.basename(d)} for d in dirs]
    records = trainer.train_many(configs, source, dirs, infos, progress=False)
    thetas = []
    for d in dirs:
      state, _ = checkpoint.Checkpointer(os.path.join(d, "checkpoints")).restore_untyped()
      thetas.append(np.exp(np.asarray(state["params"]["log_threshold"])))
  print(f"\n{'settings':12s} {'lambda':>7s} {'s':>6s} {'L0':>7s} {'nMSE':>7s}  "
        f"threshold / s at quantiles 5, 25, 50, 75, 95%")
  for (old, lam), recs, theta in zip(runs, records, thetas):
    r = recs[-1]
    s = r["config"]["sae"]["input_scale"]
    q = np.quantile(theta / s, [0.05, 0.25, 0.5, 0.75, 0.95])
    print(f"{'pre-issue' if old else 'scale-aware':12s} {lam:7.3f} {s:6.3f} {r['l0']:7.1f} "
          f"{r['normalized_mse']:7.4f}  " + " ".join(f"{v:.4g}" for v in q))
  for (old, lam), recs in zip(runs, records):
    for w in recs[-1]["run_warnings"]:
      print(f"warning ({'pre-issue' if old else 'scale-aware'}, lambda {lam}): {w}")
  print(f"\n{len(caught)} warning(s) issued during training; {time.time() - t0:.0f} s")


if __name__ == "__main__":
  main()
