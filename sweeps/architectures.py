"""The SAE zoo on SmolLM2-135M: every architecture at several sparsities, compared on the
sparsity–fidelity frontier (normalized MSE vs L0, one curve per architecture).

Same activations as sweeps/quickstart.py (residual stream of SmolLM2-135M-Instruct at
layer 15, 409,600 training tokens of Shakespeare + KJV, 16,384 held-out tokens), so the
activation cache is shared with it. Every SAE has n_latents = 512 and sees half the
cache (204,800 tokens, batch 512, the quickstart's lr: 4 x 2e-4 / sqrt(n_latents / 2^14)),
so the whole comparison runs in minutes; scale it up with, e.g.,
`--set sae.n_latents=2048 train.token_budget=409600` (about 8x the time). The sparsity knob is k for the TopK family (topk, batchtopk,
matryoshka_batchtopk) and the penalty coefficient lambda for the others (relu_l1,
relu_l1_unit_norm, kl, jumprelu, gated); every record holds the measured L0, the axis the
curves share.

Input normalisation. The papers normalise differently (`Architecture.input_norm`:
"unit_norm" per token for the TopK family, one "mean_norm" constant for Anthropic's and
DeepMind's recipes), but a normalized MSE is only comparable between runs that share it:
in SmolLM2's raw (or mean_norm-scaled) residual stream one direction (the massive-
activation dimensions) carries 92% of the variance, so a mean_norm SAE reaches a
normalized MSE of ~0.02 that a unit_norm SAE of the same quality would report as ~0.2.
So by default every point uses COMMON_INPUT_NORM ("unit_norm", Gao et al.'s, where the
normalized MSE measures the structure beyond that direction); set it to None to give each
architecture its paper's normalisation instead (and then compare curves within one
normalisation only).

The lambda grids are chosen so that L0 spans roughly the range of k in {8, 16, 32, 64};
they come from short calibration runs (n_latents 1024, 300 steps, on the first 65k tokens
of the cache), so the L0 of the full runs can be off by a factor of ~2; widen a grid if its
curve does not cover the range.

Run time on a 2-core CPU, measured with the quickstart's cache present: 4 min 40 s for
the 32 SAEs (8 per pass over the data), fits and the frontier plot included; add ~5 min
of harvesting if the cache is absent. At n_latents 2048 and the whole cache, expect ~35 min.
The plot lands in runs/architectures/plots/sparsity_fidelity.{png,pdf} (`sae-jax fit`
draws it for any table that mixes architectures).

    sae-jax sweep sweeps/architectures.py
"""

from sae_jax import sae
from sweeps import quickstart

N_LATENTS = 512
COMMON_INPUT_NORM = "unit_norm"  # None: each architecture's paper's (Architecture.input_norm)
K_GRID = (8, 16, 32, 64)
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka_batchtopk")
# lambda grids (this codebase's units: the reconstruction term is the normalized MSE; see
# each module's docstring for the conversion to its paper's), from high to low sparsity,
# for unit_norm inputs ...
LAMBDA_GRIDS = {  # calibration: lambda 0.05 gave L0 ~210-300 (jumprelu 1e-2: L0 16)
    "relu_l1": (0.4, 0.2, 0.1, 0.05),
    "relu_l1_unit_norm": (0.4, 0.2, 0.1, 0.05),
    "kl": (0.4, 0.2, 0.1, 0.05),
    "jumprelu": (1e-2, 3e-3, 1e-3, 3e-4),
    "gated": (0.6, 0.3, 0.15, 0.075),
}
# ... and for mean_norm inputs (COMMON_INPUT_NORM = None); calibration: relu_l1 1e-2 ->
# L0 47, 3e-3 -> 216; relu_l1_unit_norm 1e-2 -> 37; gated 1e-2 -> 90; jumprelu 1e-3 -> 122.
LAMBDA_GRIDS_MEAN_NORM = {
    "relu_l1": (4e-2, 2e-2, 1e-2, 5e-3),
    "relu_l1_unit_norm": (4e-2, 2e-2, 1e-2, 5e-3),
    "kl": (3.0, 1.5, 0.7, 0.3),  # kl's paper normalisation is unit_norm
    "jumprelu": (2e-2, 8e-3, 3e-3, 1e-3),
    "gated": (8e-2, 4e-2, 2e-2, 1e-2),
}
# Settings a short run needs beyond the knob (see each module's docstring): KL's target
# mean activation for ReLU latents, and JumpReLU's starting threshold near the scale of the
# activations (the paper's 1e-3 needs far more than 800 Adam steps to climb in log space).
EXTRA = {"kl": {"sae.target_activation": 1e-3}}
JUMPRELU_INITIAL_THRESHOLD = {"unit_norm": 0.05, "mean_norm": 0.5}


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "architectures"
  c.sae.n_latents = N_LATENTS
  c.train.token_budget = 204_800
  return c


def get_sweep():
  points = []
  for name in TOPK_FAMILY:
    norm = COMMON_INPUT_NORM or sae.get(name).input_norm
    for k in K_GRID:
      points.append({"sae.architecture": name, "sae.input_norm": norm, "sae.k": k})
  for name in LAMBDA_GRIDS:
    norm = COMMON_INPUT_NORM or sae.get(name).input_norm
    grid = (LAMBDA_GRIDS if norm == "unit_norm" else LAMBDA_GRIDS_MEAN_NORM)[name]
    extra = dict(EXTRA.get(name, {}))
    if name == "jumprelu":
      extra["sae.initial_threshold"] = JUMPRELU_INITIAL_THRESHOLD[norm]
    for lam in grid:
      points.append({"sae.architecture": name, "sae.input_norm": norm,
                     "sae.sparsity_coefficient": lam, **extra})
  return points
