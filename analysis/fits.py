"""Scaling-law fits: L(N) at convergence and L(C) on the compute-efficient frontier.

Laws (Gao et al. 2024, Sec. 3.1, Fig. 1; Kaplan et al. 2020; Hoffmann et al. 2022):

* ``L(N) = a * N^(-alpha)``          -- pure power law in n_latents N (or compute C);
* ``L(N) = a * N^(-alpha) + c``      -- with an irreducible loss c >= 0
  (Gao et al. 2024, Eq. 4 has the same form in n and k).

L is the normalized MSE (FVU). Every fit is done in log space, residual
``log L_pred - log L_obs``, so each point weighs by its relative error. The pure power
law is linear in (log a, alpha) and is solved exactly by least squares (it equals
`np.polyfit(log N, log L, 1)`); the law with c is non-linear and is fitted with
`scipy.optimize.least_squares` under a Huber loss (delta 1e-3, Hoffmann et al. 2022,
Sec. 3.3 / App. D.2) from a small grid of starting points, keeping the best.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize

from sae_jax.config import ConfigError

LOSS_KEY = "normalized_mse"
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, App. D.2
_ALPHA_GRID = (0.1, 0.3, 0.6, 1.0, 1.5)
_C_FRACTION_GRID = (0.01, 0.3, 0.6, 0.9)  # initial c as a fraction of min(L)
_C_ZERO = 1e-4  # c below this fraction of min(L): the irreducible term vanished
_C_AT_MIN = 0.99  # c above this fraction of min(L): the power-law part vanished


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """One fitted power law, ``L = a * x^(-alpha) [+ c]``.

  Attributes:
    law: the formula, e.g. "L(N) = a * N^(-alpha) + c".
    params: name -> value: "a", "alpha" and, with the irreducible term, "c".
    stderr: name -> standard error (None where the fit leaves it undetermined), from
      the Jacobian at the optimum: cov = s^2 (J^T J)^-1, s^2 = sum r^2 / (P - n_params);
      a and c by the delta method from log a, log c.
    n_points: P, the points fitted.
    residuals: (P,) log L_pred - log L_obs (natural log), in the order of x.
    x: (P,) the scale variable (n_latents, or compute in FLOPs).
    y: (P,) the observed loss (normalized MSE).
    x_name: what x is ("n_latents", "flops").
    irreducible: True if the law has the c term.
    method: "ols" (pure law) or "huber(delta=...)" (law with c).
    degenerate: True if the irreducible fit ran to an edge (c -> 0 or c -> min L).
    note: why it is degenerate, "" otherwise.
  """

  law: str
  params: dict[str, float]
  stderr: dict[str, float | None]
  n_points: int
  residuals: list[float]
  x: list[float]
  y: list[float]
  x_name: str = "n_latents"
  irreducible: bool = False
  method: str = "ols"
  degenerate: bool = False
  note: str = ""

  def predict(self, x: Any) -> np.ndarray:
    """L at x (any shape): a * x^(-alpha) [+ c]."""
    x = np.asarray(x, dtype=np.float64)
    y = self.params["a"] * x ** (-self.params["alpha"])
    return y + self.params.get("c", 0.0)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict (non-finite numbers become None)."""
    return _json_safe(dataclasses.asdict(self))


def _json_safe(obj: Any) -> Any:
  if isinstance(obj, Mapping):
    return {str(k): _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_safe(v) for v in obj]
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.ndarray):
    return _json_safe(obj.tolist())
  return obj


_SYMBOLS = {"n_latents": "N", "flops": "C", "tokens": "D"}


def _check_points(x_P: np.ndarray, y_P: np.ndarray, n_params: int, x_name: str, law: str) -> None:
  """Raise ConfigError, in one line, for any input the fit cannot use."""
  if x_P.ndim != 1 or y_P.ndim != 1 or x_P.shape != y_P.shape:
    raise ConfigError(f"cannot fit {law}: {x_name} and loss must be 1-D of equal length, "
                      f"got shapes {x_P.shape} and {y_P.shape}")
  bad = ~np.isfinite(y_P) | (y_P <= 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise ConfigError(f"cannot fit {law}: loss must be finite and positive, got {y_P[i]!r} "
                      f"at {x_name}={x_P[i]:g} ({int(bad.sum())} bad of {len(y_P)}); "
                      f"drop diverged runs or filter them out")
  bad = ~np.isfinite(x_P) | (x_P <= 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise ConfigError(f"cannot fit {law}: {x_name} must be finite and positive, got {x_P[i]!r}")
  distinct = np.unique(x_P)
  if len(distinct) < n_params + 1:
    shown = ", ".join(f"{v:g}" for v in distinct[:8]) + (", ..." if len(distinct) > 8 else "")
    raise ConfigError(f"cannot fit {law}: need at least {n_params + 1} points with distinct "
                      f"{x_name}, got {len(distinct)} ({x_name}={shown})")


def _stderr(J_PxQ: np.ndarray, r_P: np.ndarray, T_QxQ: np.ndarray) -> np.ndarray:
  """Standard errors of T @ theta from the Jacobian J of the residuals at the optimum."""
  P, Q = J_PxQ.shape
  s2 = float(r_P @ r_P) / (P - Q)
  JtJ = J_PxQ.T @ J_PxQ
  if np.linalg.cond(JtJ) > 1e14:
    return np.full(Q, np.nan)
  cov = s2 * T_QxQ @ np.linalg.inv(JtJ) @ T_QxQ.T
  return np.sqrt(np.clip(np.diag(cov), 0, None))


def fit_power_law(n: Sequence[float] | np.ndarray, loss: Sequence[float] | np.ndarray,
                  irreducible: bool = False, *, x_name: str = "n_latents",
                  huber_delta: float = HUBER_DELTA) -> PowerLawFit:
  """Fit ``L = a * n^(-alpha)`` (+ ``c`` if `irreducible`) in log space.

  Kaplan et al. 2020, Eq. 1.5; Gao et al. 2024, Sec. 3.1 (L(N) at convergence, L(C) on
  the frontier); the c term as in Gao et al. 2024, Eq. 4 / Hoffmann et al. 2022, Eq. 2.

  Residuals are ``log L_pred - log L_obs``. Parametrised by (log a, alpha[, log c]) so
  a, c > 0. Without c the problem is linear and is solved by least squares (identical
  to `np.polyfit(log n, log L, 1)`: slope -alpha, intercept log a). With c it is solved
  by `scipy.optimize.least_squares` with a Huber loss (`huber_delta`, in log-loss
  units) from a grid of 20 starts; x is centred at its geometric mean internally.

  Args:
    n: (P,) the scale variable, > 0: n_latents for L(N), compute in FLOPs for L(C).
      Repeats (several seeds) are fine.
    loss: (P,) observed loss (normalized MSE), finite and > 0.
    irreducible: also fit the irreducible loss c >= 0.
    x_name: the name of `n` in messages and the record ("n_latents", "flops").
    huber_delta: the Huber threshold of the fit with c (Hoffmann et al. 2022: 1e-3).

  Returns:
    A `PowerLawFit`. If the fit with c is degenerate (c -> 0, or c -> min L so the
    power-law part vanishes) it warns (`UserWarning`) and sets `degenerate` and `note`.

  Raises:
    ConfigError: shapes differ; a loss or n is NaN, inf or <= 0; fewer than
      n_params + 1 distinct values of n (3 without c, 4 with c).
  """
  sym = _SYMBOLS.get(x_name, "x")
  law = f"L({sym}) = a * {sym}^(-alpha)" + (" + c" if irreducible else "")
  x_P = np.asarray(n, dtype=np.float64)
  y_P = np.asarray(loss, dtype=np.float64)
  _check_points(x_P, y_P, 3 if irreducible else 2, x_name, law)
  log_x0 = float(np.mean(np.log(x_P)))
  u_P = np.log(x_P) - log_x0  # centred log x
  logy_P = np.log(y_P)

  if not irreducible:
    # log L = log b - alpha * u, with log a = log b + alpha * log_x0.
    J_Px2 = np.stack([np.ones_like(u_P), -u_P], axis=1)
    (log_b, alpha), *_ = np.linalg.lstsq(J_Px2, logy_P, rcond=None)
    r_P = J_Px2 @ np.array([log_b, alpha]) - logy_P
    T = np.array([[1.0, log_x0], [0.0, 1.0]])  # (log_b, alpha) -> (log_a, alpha)
    se_log_a, se_alpha = _stderr(J_Px2, r_P, T)
    a = math.exp(log_b + alpha * log_x0)
    return PowerLawFit(law=law, params={"a": a, "alpha": float(alpha)},
                       stderr={"a": float(a * se_log_a), "alpha": float(se_alpha)},
                       n_points=len(x_P), residuals=r_P.tolist(), x=x_P.tolist(),
                       y=y_P.tolist(), x_name=x_name, irreducible=False, method="ols")

  y_min = float(y_P.min())

  def parts(theta):
    log_b, alpha, log_c = theta
    p_P = np.exp(log_b - alpha * u_P)
    c = math.exp(log_c)
    return p_P, c, p_P + c

  def residuals(theta):
    return np.log(parts(theta)[2]) - logy_P

  def jacobian(theta):
    p_P, c, pred_P = parts(theta)
    return np.stack([p_P / pred_P, -u_P * p_P / pred_P, c / pred_P], axis=1)

  lower = [-np.inf, -10.0, math.log(y_min) - 30.0]
  upper = [np.inf, 10.0, math.log(float(y_P.max())) + 1.0]
  best = None
  for alpha0, frac in itertools.product(_ALPHA_GRID, _C_FRACTION_GRID):
    c0 = frac * y_min
    log_b0 = float(np.mean(np.log(y_P - c0) + alpha0 * u_P))
    try:
      with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = scipy.optimize.least_squares(
            residuals, [log_b0, alpha0, math.log(c0)], jac=jacobian, bounds=(lower, upper),
            loss="huber", f_scale=huber_delta, method="trf", ftol=1e-12, xtol=1e-12,
            gtol=1e-12, max_nfev=2000)
    except (ValueError, FloatingPointError):
      continue
    if np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
      best = res
  if best is None:
    raise ConfigError(f"cannot fit {law}: the optimiser failed from every start; "
                      f"fit without the irreducible term")
  log_b, alpha, log_c = best.x
  r_P = residuals(best.x)
  T = np.array([[1.0, log_x0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  se_log_a, se_alpha, se_log_c = _stderr(jacobian(best.x), r_P, T)
  a, c = math.exp(log_b + alpha * log_x0), math.exp(log_c)

  note = ""
  if c < _C_ZERO * y_min:
    note = (f"c={c:.3g} ran to 0: no irreducible loss is resolved over {x_name} in "
            f"[{x_P.min():g}, {x_P.max():g}]; use the pure power law")
  elif c > _C_AT_MIN * y_min:
    note = (f"c={c:.3g} reaches the smallest loss {y_min:.3g}: the power-law part is not "
            f"resolved; widen the {x_name} range or use the pure power law")
  if note:
    warnings.warn(f"degenerate fit of {law}: {note}", stacklevel=2)
  return PowerLawFit(law=law, params={"a": a, "alpha": float(alpha), "c": c},
                     stderr={"a": float(a * se_log_a), "alpha": float(se_alpha),
                             "c": float(c * se_log_c)},
                     n_points=len(x_P), residuals=r_P.tolist(), x=x_P.tolist(),
                     y=y_P.tolist(), x_name=x_name, irreducible=True,
                     method=f"huber(delta={huber_delta:g})", degenerate=bool(note), note=note)


def compute_frontier(flops: Sequence[float] | np.ndarray,
                     loss: Sequence[float] | np.ndarray) -> np.ndarray:
  """Indices of the compute-efficient frontier (lower envelope), in increasing compute.

  A point is on the frontier if its loss is strictly lower than that of every point with
  less or equal compute (Gao et al. 2024, Fig. 1 left; Kaplan et al. 2020, Fig. 1).
  Of exact duplicates (same compute, same loss) the first is kept.

  Args:
    flops: (P,) training compute of each evaluation point, FLOPs.
    loss: (P,) its loss (normalized MSE).

  Returns:
    (F,) int indices into the inputs, sorted by compute (F = 0 for empty input).

  Raises:
    ConfigError: shapes differ, or a value is NaN or inf.
  """
  c_P = np.asarray(flops, dtype=np.float64)
  l_P = np.asarray(loss, dtype=np.float64)
  if c_P.ndim != 1 or c_P.shape != l_P.shape:
    raise ConfigError(f"compute_frontier: flops and loss must be 1-D of equal length, "
                      f"got shapes {c_P.shape} and {l_P.shape}")
  if not (np.all(np.isfinite(c_P)) and np.all(np.isfinite(l_P))):
    raise ConfigError("compute_frontier: flops and loss must be finite; drop NaN/inf "
                      "evaluation points (diverged runs) first")
  order = np.lexsort((np.arange(len(c_P)), l_P, c_P))  # by compute, then loss, then index
  keep, best = [], np.inf
  for i in order:
    if l_P[i] < best:
      keep.append(int(i))
      best = l_P[i]
  return np.asarray(keep, dtype=np.int64)


def group_key(record: Mapping[str, Any], multi_architecture: bool = False) -> str:
  """The key of a record's L(N) group: "k=32" (prefixed "topk, " if architectures mix)."""
  key = f"k={record.get('k')}"
  return f"{record.get('architecture')}, {key}" if multi_architecture else key


def _k_sort(key: str) -> tuple:
  value = key.rsplit("=", 1)[-1]
  try:
    return (key.rsplit("=", 1)[0], 0, float(value))
  except ValueError:
    return (key.rsplit("=", 1)[0], 1, 0.0)


def is_usable(record: Mapping[str, Any], *fields: str) -> bool:
  """True if every named field of the record is a finite number > 0 (not a bool)."""
  for f in fields:
    v = record.get(f)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
      return False
  return True


def _try_fit(x, y, irreducible: bool, x_name: str) -> dict[str, Any]:
  try:
    return fit_power_law(x, y, irreducible, x_name=x_name).to_dict()
  except ConfigError as e:
    return {"error": str(e)}


def fit_scaling_laws(records: Sequence[Mapping[str, Any]], *,
                     loss_key: str = LOSS_KEY) -> dict[str, Any]:
  """All scaling-law fits of a results table (Gao et al. 2024, Sec. 3.1, Fig. 1).

  * ``L_N``: per k, L(N) at convergence from the `final` records: the pure power law
    ("power_law") and the law with an irreducible term ("irreducible", needs 4 distinct
    n_latents). A fit that cannot be done holds {"error": "..."} instead.
  * ``L_C``: L(C) = a * C^(-alpha) on the compute-efficient frontier of ALL evaluation
    records (every run, every evaluation point), with the frontier points listed.

  Records whose loss or flops is missing, NaN, inf or <= 0 are left out (counted in
  "n_excluded", with a warning).

  Args:
    records: run records (see `analysis.results.load_results`).
    loss_key: the loss field to fit (default "normalized_mse").

  Returns:
    A JSON-serialisable dict: {"loss": loss_key, "L_N": {"k=32": {...}, ...},
    "L_C": {...fit..., "frontier": [...]}, "n_records", "n_runs", "n_excluded",
    "sweeps": [...]}.

  Raises:
    ConfigError: `records` is empty.
  """
  if not records:
    raise ConfigError("no records to fit; check the results file and the filters")
  usable = [r for r in records if is_usable(r, loss_key)]
  n_excluded = len(records) - len(usable)
  if n_excluded:
    warnings.warn(f"leaving out {n_excluded} of {len(records)} records with a missing, "
                  f"non-finite or non-positive {loss_key}", stacklevel=2)
  mixed = {(r.get("model"), r.get("layer"), r.get("d_in")) for r in records}
  if len(mixed) > 1:
    warnings.warn(f"records mix {len(mixed)} (model, layer, d_in) combinations; fits pool "
                  f"them -- filter with model=..., layer=... for one law each", stacklevel=2)
  multi_arch = len({r.get("architecture") for r in records}) > 1

  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in usable:
    if r.get("final") is True and is_usable(r, "n_latents"):
      groups.setdefault(group_key(r, multi_arch), []).append(r)
  L_N = {}
  for key in sorted(groups, key=_k_sort):
    group = sorted(groups[key], key=lambda r: r["n_latents"])
    x = [float(r["n_latents"]) for r in group]
    y = [float(r[loss_key]) for r in group]
    L_N[key] = {"k": group[0].get("k"), "architecture": group[0].get("architecture"),
                "n_runs": len(group),
                "power_law": _try_fit(x, y, False, "n_latents"),
                "irreducible": _try_fit(x, y, True, "n_latents")}
  if not L_N:
    L_N["all"] = {"error": "no final records (final=true) with a usable loss; "
                           "has any run finished its token budget?"}

  evals = [r for r in usable if is_usable(r, "flops")]
  idx = compute_frontier([r["flops"] for r in evals], [r[loss_key] for r in evals])
  frontier = [evals[i] for i in idx]
  L_C = _try_fit([r["flops"] for r in frontier], [r[loss_key] for r in frontier], False, "flops")
  fields = ("run_id", "n_latents", "k", "tokens", "step", "flops", loss_key)
  L_C["frontier"] = [{f: r.get(f) for f in fields} for r in frontier]
  L_C["n_eval_points"] = len(evals)

  return _json_safe({
      "loss": loss_key,
      "L_N": L_N,
      "L_C": L_C,
      "n_records": len(records),
      "n_runs": len({(r.get("sweep"), r.get("run_id")) for r in records}),
      "n_excluded": n_excluded,
      "sweeps": sorted({str(r.get("sweep")) for r in records}),
  })
