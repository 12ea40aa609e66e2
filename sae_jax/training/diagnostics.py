"""Checks of a run in progress that catch a setting which trains without error but does
nothing: a sparsity knob that is silent (issue 19).

`KnobCheck` watches the first `WINDOW_FRACTION` of a penalty architecture's steps after
its lambda warm-up, if any (knob = sae.sparsity_coefficient, lambda > 0), probing `N_PROBES` of them: on that step's
batch it takes the gradient of the sparsity term alone (`Output.sparsity_loss`) and, for
an architecture with learned thresholds (params["log_threshold"], JumpReLU), where the
thresholds sit relative to the activations they gate. At the end of the window it
returns one warning, or None, when

* no gradient: the sparsity term passed no gradient to any parameter at every probe (for
  JumpReLU: no pre-activation within bandwidth / 2 of its threshold, the only place the
  straight-through estimator of Rajamanoharan et al. 2024b, Eq. 12 reaches a threshold);
* thresholds out of reach: at every probe the median firing latent's mean activation is
  more than `FAR_RATIO` times its threshold (the jump gates nothing: the latent is a
  ReLU), and Adam, which moves log_threshold by at most about lr per step whatever the
  gradient's size, cannot close that gap in the steps left. Then every lambda trains the
  same thresholds, so the same L0 (measured: JumpReLU on raw inputs of RMS norm 3.8 with
  the pre-issue-19 absolute bandwidth and threshold 1e-3: median gap e^4.7 ~ 110x, L0
  identical at lambda 0.003 and 0.3; with the scale-aware defaults the gap is ~e^0.5);
* L0 frozen: L0 stayed within `L0_FROZEN_TOL` (relative) at every probe of the window
  although the penalty is on.

The warning names the knob and the likely cause: an input scale that disagrees with the
inputs (sae.input_scale set by hand), or a bandwidth / initial threshold too small for
it. The trainer issues it once (`warnings.warn`) and writes it into every later record
(`run_warnings`), so the sweep summary and `sae-jax fit` (fits["run_warnings"]) repeat it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sae_jax.data import batches
from sae_jax.saes import base
from sae_jax.training.step import StepConfig, TrainState

WINDOW_FRACTION = 0.1  # the check watches the first 10% of the steps
N_PROBES = 8  # probes spread over the window (each: one extra forward + backward pass)
FAR_RATIO = 30.0  # mean activation / threshold above which a threshold gates nothing
L0_FROZEN_TOL = 0.01  # relative spread of L0 over the probes below which it is frozen
SCALE_MISMATCH = 2.0  # input_scale off from the inputs' RMS norm by more than this factor


def _probe(params, extras, x_BxD, variance, norm_scale, *, sc: StepConfig) -> dict:
  """Scalars of one batch: the norm of the sparsity term's gradient, L0, the inputs' RMS
  norm and, with thresholds, the median over firing latents of log(mean activation /
  threshold)."""
  x = batches.normalize(x_BxD, sc.input_norm, norm_scale)
  dead_N = jnp.zeros((sc.hp.n_latents,), bool)

  def sparsity(p):
    out = sc.arch.loss(p, x, extras, sc.hp, variance=variance, dead_N=dead_N)
    return out.sparsity_loss, out

  g_sp, out = jax.grad(sparsity, has_aux=True)(params)
  result = {"sparsity_grad_norm": optax.tree.norm(g_sp), "l0": out.l0,
            "input_rms": jnp.sqrt(jnp.mean(jnp.sum(x**2, axis=-1)))}
  if "log_threshold" in params:
    z_BxN = sc.arch.encode(params, x, extras, sc.hp)
    n_N = jnp.sum(z_BxN != 0, axis=0)
    mean_active_N = jnp.sum(jnp.abs(z_BxN), axis=0) / jnp.maximum(n_N, 1)
    gap_N = jnp.log(jnp.maximum(mean_active_N, 1e-30)) - params["log_threshold"]
    result["threshold_log_gap"] = jnp.nanmedian(jnp.where(n_N > 0, gap_N, jnp.nan))
  return result


@functools.lru_cache(maxsize=16)
def _probe_fn(sc: StepConfig):
  return jax.jit(functools.partial(_probe, sc=sc))


class KnobCheck:
  """Detects a silent sparsity knob during the first `fraction` of a run's steps
  (module docstring). One per run; `observe` after every train step.

  Args:
    sc: the run's step config (its architecture and Hyper).
    n_steps: the run's total steps; lr: its (peak) learning rate, Adam's step bound in
      log-threshold space.
    start_step: the step the run starts (or resumes) from; a resumed run past step 0 is
      not checked again (its warnings are in its checkpoint's records).
  """

  def __init__(self, sc: StepConfig, n_steps: int, lr: float, start_step: int = 0,
               fraction: float = WINDOW_FRACTION, n_probes: int = N_PROBES):
    self.sc, self.n_steps, self.lr = sc, n_steps, lr
    lam = getattr(sc.hp, "sparsity_coefficient", 0.0)
    self.active = sc.arch.knob == "sparsity_coefficient" and lam > 0 and start_step == 0
    self.window = max(1, math.ceil(fraction * n_steps))
    # with a lambda warm-up (`train.sparsity_warmup_steps`) the window starts once lambda
    # is at full strength: while it ramps, a still L0 is what the warm-up is for
    offset = int(getattr(sc, "sparsity_warmup_steps", 0) or 0)
    self.active = self.active and offset + self.window <= n_steps
    self.probe_steps = sorted({offset + int(s)
                               for s in np.rint(np.linspace(1, self.window, n_probes))})
    self.probes: list[dict] = []

  def observe(self, done: int, state: TrainState, x_BxD) -> str | None:
    """After train step `done` (1-based) on batch x_BxD (raw): probe if scheduled; at
    the window's last probe return the warning (or None). Later calls return None."""
    if not self.active or done not in self.probe_steps:
      return None
    p = jax.device_get(_probe_fn(self.sc)(state.params, state.extras, x_BxD, state.variance,
                                          state.norm_scale))
    self.probes.append({k: float(v) for k, v in p.items()})
    if done != self.probe_steps[-1]:
      return None
    self.active = False
    return self.verdict(done)

  def verdict(self, done: int) -> str | None:
    """The warning the probes so far call for, or None (module docstring)."""
    hp, probes = self.sc.hp, self.probes
    knob = (f"sae.sparsity_coefficient={hp.sparsity_coefficient:g} ({self.sc.architecture}) "
            f"is silent in the first {done} steps")
    s, rms = base.scale(hp), probes[-1]["input_rms"]
    if max(s / rms, rms / s) > SCALE_MISMATCH:
      cause = (f"sae.input_scale={s:.3g} but the inputs' RMS norm is {rms:.3g}: the penalty's "
               f"units (and JumpReLU's bandwidth and initial_threshold) are set for another "
               f"input scale; leave sae.input_scale unset (None: measured)")
    elif "threshold_log_gap" in probes[-1]:
      cause = (f"sae.bandwidth={hp.bandwidth:g} and sae.initial_threshold="
               f"{hp.initial_threshold:g} (units of s={s:.3g}) are too small for these "
               f"inputs; raise sae.initial_threshold (default 0.05)")
    else:
      cause = "the penalty's scale does not match the inputs' (sae.input_scale, sae.input_norm)"
    if all(p["sparsity_grad_norm"] == 0 for p in probes):
      what = "the sparsity term passes no gradient to any parameter"
      if "threshold_log_gap" in probes[-1]:
        what += (f" (no pre-activation within bandwidth / 2 = "
                 f"{hp.bandwidth * s / 2:.3g} of its threshold)")
      return f"{knob}: {what}; likely cause: {cause}"
    gaps = [p.get("threshold_log_gap", float("nan")) for p in probes]
    reach = self.lr * (self.n_steps - done)
    if all(g > math.log(FAR_RATIO) for g in gaps) and gaps[-1] > reach:
      what = (f"the thresholds are ~{math.exp(gaps[-1]):.0f}x below the mean activation of "
              f"the latents they gate, which Adam (<= lr={self.lr:.3g} per step in log space) "
              f"cannot close in the {self.n_steps - done} steps left, so every lambda trains "
              f"the same thresholds and L0")
      return f"{knob}: {what}; likely cause: {cause}"
    l0s = [p["l0"] for p in probes]
    if len(l0s) > 1 and max(l0s) - min(l0s) <= L0_FROZEN_TOL * max(max(l0s), 1e-12):
      return (f"{knob}: L0 stayed at {l0s[-1]:.4g} although the penalty is on; likely "
              f"cause: {cause}")
    return None
