"""The scaling-law fitting engine: `fit_law` for any law of `analysis.laws`, the
compute-efficient frontier, and the older `fit_power_law`. (`analysis.sweep_fits` fits
every law a results table supports with it.)

Laws (registry in `analysis.laws`; Gao et al. 2024, Sec. 3, Fig. 1; Kaplan et al. 2020;
Hoffmann et al. 2022; Templeton et al. 2024):

* ``L(N) = a * N^(-alpha) + c``   -- L(N) at convergence with an irreducible loss c
  (and without c), per k;
* ``L(C) = a * C^(-alpha)``       -- of the compute-efficient frontier (the lower envelope
  of every evaluation point of every run vs training compute), fitted through each run's
  compute-efficient point, where its curve touches the envelope (`fit_frontier_law`);
* ``L(n, k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n)
  + exp(zeta + eta log k)``        -- Gao et al. 2024, Eq. 3;
* ``n*(C) = A C^a, D*(C) = B C^b`` -- compute-optimal allocation (`analysis.optimal`);
* ``lr*(n) = a n^(-alpha)``       -- the optimal learning rate (`analysis.optimal`).

L is the normalized MSE (FVU). **How every law is fitted** (`fit_law`): in log space,
residual ``r = log L_pred - log L_obs`` (each point weighs by its relative error), the
mean Huber loss of r (delta 1e-3, Hoffmann et al. 2022, Sec. 3.3 / App. D.2) minimised
by L-BFGS-B (scipy) from a grid of starting values, keeping the best. Uncertainty:
standard errors from the Jacobian at the optimum (Gauss-Newton), and percentile 95%
intervals from a seeded bootstrap over points (resample with replacement, refit).
`fit_power_law` is the older two-law interface: its pure power law is exact least
squares (= `np.polyfit` in log-log), its law with c goes through `fit_law`.

Convergence of runs is judged by the rule of `analysis.convergence`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats

_LOG_MAX = math.log(np.finfo(np.float64).max)  # exp overflows above this

try:  # BLAS threads only slow down these tiny problems (10x on 2 cores): use one while fitting
  from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
  _threadpool_limits = None

from analysis import laws as laws_lib
from analysis._warn import warn_caller
from sae_jax.errors import ConfigError
from sae_jax.files import json_safe

LOSS_KEY = "normalized_mse"
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, App. D.2
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
    return json_safe(dataclasses.asdict(self))




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
  to `np.polyfit(log n, log L, 1)`: slope -alpha, intercept log a). With c it is
  `fit_law("power_law_irreducible", ...)` without bootstrap: Huber loss (`huber_delta`,
  in log-loss units), L-BFGS-B from a grid of 20 starts. Prefer `fit_law` for new code:
  it also gives bootstrap intervals.

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

  fit = fit_law(laws_lib.POWER_LAW_IRREDUCIBLE, x_P, y_P, variables={"x": x_name},
                huber_delta=huber_delta, n_bootstrap=0, warn=False)
  if fit.note:
    warn_caller(f"degenerate fit of {law}: {fit.note}")
  return PowerLawFit(law=law, params=fit.params, stderr=fit.stderr, n_points=fit.n_points,
                     residuals=fit.residuals, x=x_P.tolist(), y=y_P.tolist(), x_name=x_name,
                     irreducible=True, method=f"huber(delta={huber_delta:g})",
                     degenerate=fit.degenerate, note=fit.note)

# --- the general engine: any law of `analysis.laws`, Huber in log space, L-BFGS-B -------------

N_BOOTSTRAP = 1000
MIN_DOF = 2  # P - Q below this: no interval (the noise is not estimable)
MIN_CLUSTERS = 4  # runs below this: no cluster-bootstrap interval
_COND_MAX = 1e12  # cond(J^T J) above this: the design does not identify the parameters


@dataclasses.dataclass(frozen=True)
class LawFit:
  """A fitted law of `analysis.laws` with its uncertainty.

  Attributes:
    law: the registry name ("power_law", "power_law_irreducible", "joint_nk",
      "growth_power_law").
    formula: the law as written, e.g. "L = a * x^(-alpha) + c".
    params: name -> value (e.g. "a", "alpha", "c"; Eq. 3: "alpha", "beta_k", ...).
    stderr: name -> standard error, or None where the design does not determine it:
      the sandwich covariance of the Huber M-estimator (`_sandwich_cov`); a, c, A by
      the delta method.
    ci95: name -> [lo, hi], the reported 95% interval (`ci95_method` says which), or
      None where the data cannot support one (`no_interval` says why).
    n_points: P, the points fitted.
    residuals: (P,) log L_pred - log L_obs (natural log), in input order.
    x: law input name -> (P,) values (e.g. {"x": [...]}, or {"n": [...], "k": [...]}).
    variables: law input name -> the record field it came from (e.g. {"x": "n_latents"}).
    y: (P,) the observed values (normalized MSE, or n_latents*, lr*, ...).
    objective: the Huber objective at the optimum (mean over points, in units of delta).
    huber_delta: the Huber threshold, in natural-log units (Hoffmann et al. 2022: 1e-3).
    n_starts: starting points tried (the grid of `Law.inits`).
    bootstrap: (B, Q) the refitted parameters of each bootstrap resample (named order).
    seed: the bootstrap seed.
    n_bootstrap_excluded: refits left out of the intervals and bands because they ran
      to a degenerate point (a parameter fitted through its log, a or c, under- or
      overflowed to 0 or inf; or the optimiser failed).
    degenerate: True if the fit ran to an edge or the parameters are not identified.
    note: why it is degenerate, or why there are no bands (too few points for a
      bootstrap: every resample that can be fitted is nearly the data itself); "".
    ci95_method: how `ci95` was computed: "t (P-Q dof) x sandwich standard error",
      or a cluster bootstrap over runs; "" without an interval.
    no_interval: "no interval: <why>", or "".
    dof: the degrees of freedom of the t quantile: P - Q, or G - 1 over G runs.
    cov: (Q, Q) the sandwich covariance of theta (the log of the log-fitted parameters,
      in `params` order): what `ci95` and `predict_interval` use.
    fitted_on: which points were fitted where that is a choice (L(C): each run's
      compute-efficient point, or the whole frontier; `fit_frontier_law`); "" otherwise.
  """

  law: str
  formula: str
  params: dict[str, float]
  stderr: dict[str, float | None]
  ci95: dict[str, list[float] | None]
  n_points: int
  residuals: list[float]
  x: dict[str, list[float]]
  variables: dict[str, str]
  y: list[float]
  objective: float
  huber_delta: float
  n_starts: int
  bootstrap: list[list[float]] = dataclasses.field(default_factory=list)
  seed: int = 0
  n_bootstrap_excluded: int = 0
  degenerate: bool = False
  note: str = ""
  ci95_method: str = ""
  no_interval: str = ""
  dof: int = 0
  cov: list[list[float]] = dataclasses.field(default_factory=list)
  fitted_on: str = ""

  @property
  def spec(self) -> laws_lib.Law:
    return laws_lib.LAWS[self.law]

  def predict(self, x: Any, params: Mapping[str, float] | None = None) -> np.ndarray:
    """The law at x: an array (one-input laws) or a mapping input name -> array (Eq. 3: n, k).

    Raises:
      ConfigError: x lacks an input of the law.
    """
    logx = _log_inputs(self.spec, x)
    theta = self.spec.theta(self.params if params is None else params)
    return np.exp(self.spec.log_predict(theta, logx))

  def predict_interval(self, x: Any, level: float = 0.95, *, new_observation: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The `level` interval of the law at x from its sandwich covariance (delta method in
    log L, t quantile on `dof`): of the law itself, or, with `new_observation`, a
    prediction interval for one new measurement (adds the residual variance
    s^2 = sum r^2 / (P - Q) in log L).

    Raises:
      ConfigError: the fit has no covariance (no interval: see `no_interval`).
    """
    cov = np.array([[np.nan if v is None else v for v in row] for row in self.cov],
                   dtype=np.float64)
    if cov.size == 0 or not np.all(np.isfinite(cov)) or self.dof < 1:
      raise ConfigError(f"the {self.law} fit has no interval "
                        f"({self.no_interval or 'no covariance'}); add points")
    logx = _log_inputs(self.spec, x)
    theta = self.spec.theta(self.params)
    shape = np.broadcast_shapes(*(v.shape for v in logx.values()))
    flat = {k: np.broadcast_to(v, shape).reshape(-1) for k, v in logx.items()}
    log_pred, g = _pred_and_jac(self.spec.design(flat), theta)
    var = np.einsum("pq,qr,pr->p", g, cov, g)
    if new_observation:
      r = np.asarray(self.residuals, dtype=np.float64)
      var = var + float(r @ r) / max(len(r) - self.spec.n_params, 1)
    t = float(scipy.stats.t.ppf((1 + level) / 2, self.dof))
    half = t * np.sqrt(var)
    return (np.exp(log_pred - half).reshape(shape), np.exp(log_pred + half).reshape(shape))

  def predict_band(self, x: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of the law at x: the (1-level)/2 and (1+level)/2 quantiles
    of the predictions of the bootstrap refits (the extrapolation uncertainty).

    A refit whose parameters cannot be evaluated (a log-fitted a or c stored as 0 or
    inf, or None from JSON: fits.json files written before such refits were excluded)
    is left out.

    Raises:
      ConfigError: the fit has no usable bootstrap samples (fit with n_bootstrap > 0).
    """
    thetas = _bootstrap_thetas(self.spec, self.bootstrap)
    if not len(thetas):
      raise ConfigError(f"the {self.law} fit has no usable bootstrap samples; refit with "
                        f"n_bootstrap > 0")
    logx = _log_inputs(self.spec, x)
    with np.errstate(over="ignore", invalid="ignore"):
      preds = np.stack([self.spec.log_predict(theta, logx) for theta in thetas])
    q = np.quantile(preds, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return np.exp(q[0]), np.exp(q[1])

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict (non-finite numbers become None); `from_dict` inverts it."""
    return json_safe(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "LawFit":
    """The LawFit of a `to_dict` (e.g. read back from fits.json).

    Raises:
      ConfigError: `d` is not a LawFit dict (an {"error": ...} entry, say).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    if "law" not in d or d["law"] not in laws_lib.LAWS:
      raise ConfigError(f"not a fitted law: {str(d.get('error', d))[:200]}")
    return cls(**{k: v for k, v in d.items() if k in names})


def _bootstrap_thetas(law: laws_lib.Law, rows: Sequence[Sequence[Any]]) -> np.ndarray:
  """(B', Q) thetas (logs of the log_params) of the bootstrap rows that have finite ones."""
  B = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
  if B.size == 0:
    return B.reshape(0, law.n_params)
  is_log = np.array([p in law.log_params for p in law.params])
  with np.errstate(divide="ignore", invalid="ignore"):
    theta = np.where(is_log, np.log(np.where(is_log, B, 1.0)), B)
  return theta[np.all(np.isfinite(theta), axis=1)]


def _log_inputs(law: laws_lib.Law, x: Any) -> dict[str, np.ndarray]:
  if not isinstance(x, Mapping):
    if len(law.inputs) != 1:
      raise ConfigError(f"law {law.name} takes inputs {', '.join(law.inputs)}: pass a dict")
    x = {law.inputs[0]: x}
  missing = [i for i in law.inputs if i not in x]
  if missing:
    raise ConfigError(f"law {law.name} needs input(s) {', '.join(missing)}; got {', '.join(x)}")
  with np.errstate(divide="ignore", invalid="ignore"):
    return {i: np.log(np.asarray(x[i], dtype=np.float64)) for i in law.inputs}


def _pred_and_jac(Fs: list[np.ndarray], theta_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """log L_pred (P,) = logsumexp_j F_j @ theta_c and its Jacobian (P, Q)."""
  F_JxPxQ = np.stack(Fs)
  t_JxP = F_JxPxQ @ theta_c
  m_P = t_JxP.max(axis=0)
  e_JxP = np.exp(t_JxP - m_P)
  s_P = e_JxP.sum(axis=0)
  return m_P + np.log(s_P), np.einsum("jp,jpq->pq", e_JxP / s_P, F_JxPxQ)


def _minimise(Fs, logy, starts, delta, ftol=1e-15):
  """Best L-BFGS-B solution over the starts of the mean Huber loss (in units of delta) of
  r = log L_pred - log y: (theta_c, objective), or (None, inf) if every start failed."""
  F_JxPxQ = np.stack(Fs)
  P = len(logy)

  def fun(theta_c):
    t_JxP = F_JxPxQ @ theta_c
    m_P = t_JxP.max(axis=0)
    e_JxP = np.exp(t_JxP - m_P)
    s_P = e_JxP.sum(axis=0)
    r_P = m_P + np.log(s_P) - logy
    a_P = np.abs(r_P)
    f = float(np.where(a_P <= delta, 0.5 * r_P * r_P / delta, a_P - 0.5 * delta).sum()) / P
    if not math.isfinite(f):
      return 1e30, np.zeros_like(theta_c)
    psi_P = np.clip(r_P / delta, -1.0, 1.0) / P
    return f, np.einsum("jpq,jp->q", F_JxPxQ, e_JxP * (psi_P / s_P))

  best, best_f = None, np.inf
  with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
    for theta0 in starts:
      if not np.all(np.isfinite(theta0)):
        continue
      res = scipy.optimize.minimize(fun, theta0, jac=True, method="L-BFGS-B",
                                    options={"maxiter": 3000, "ftol": ftol, "gtol": 1e-11,
                                             "maxcor": 20})
      if np.isfinite(res.fun) and res.fun < best_f and np.all(np.isfinite(res.x)):
        best, best_f = res.x, float(res.fun)
  return best, best_f


def _check_law_inputs(law, x, y_P, variables):
  """Validated (P,) arrays per input and y; ConfigError in one line for anything unusable."""
  name = f"{law.name} ({law.formula})"
  if not isinstance(x, Mapping):
    if len(law.inputs) != 1:
      raise ConfigError(f"cannot fit {name}: pass a dict with inputs {', '.join(law.inputs)}")
    x = {law.inputs[0]: x}
  missing = [i for i in law.inputs if i not in x]
  if missing:
    raise ConfigError(f"cannot fit {name}: missing input(s) {', '.join(missing)}")
  y_P = np.asarray(y_P, dtype=np.float64)
  if y_P.size == 0:
    raise ConfigError(f"cannot fit {name}: no points (check the records and the filters)")
  xs = {i: np.asarray(x[i], dtype=np.float64) for i in law.inputs}
  for i, v in xs.items():
    if v.ndim != 1 or y_P.ndim != 1 or v.shape != y_P.shape:
      raise ConfigError(f"cannot fit {name}: {variables[i]} and the loss must be 1-D of equal "
                        f"length, got shapes {v.shape} and {y_P.shape}")
  bad = ~np.isfinite(y_P) | (y_P <= 0)
  if bad.any():
    j = int(np.argmax(bad))
    raise ConfigError(f"cannot fit {name}: values must be finite and positive, got {y_P[j]!r} "
                      f"({int(bad.sum())} bad of {len(y_P)}); drop diverged runs or filter them out")
  for i, v in xs.items():
    bad = ~np.isfinite(v) | (v <= 0)
    if bad.any():
      raise ConfigError(f"cannot fit {name}: {variables[i]} must be finite and positive, "
                        f"got {v[int(np.argmax(bad))]!r}")
  for (i, v), need in zip(xs.items(), law.min_distinct):
    distinct = np.unique(v)
    if len(distinct) < need:
      shown = ", ".join(f"{d:g}" for d in distinct[:8]) + (", ..." if len(distinct) > 8 else "")
      raise ConfigError(f"cannot fit {name}: need at least {need} points with distinct "
                        f"{variables[i]}, got {len(distinct)} ({variables[i]}={shown})")
  if len(y_P) < law.n_params + 1:
    raise ConfigError(f"cannot fit {name}: need at least {law.n_params + 1} points for "
                      f"{law.n_params} parameters, got {len(y_P)}")
  return xs, y_P


def _enough_distinct(law, xs, idx):
  return all(len(np.unique(xs[i][idx])) >= need for i, need in zip(law.inputs, law.min_distinct))


def fit_law(law: str | laws_lib.Law, x: Any, y: Sequence[float] | np.ndarray, *,
            variables: Mapping[str, str] | None = None, huber_delta: float = HUBER_DELTA,
            n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, warn: bool = True,
            clusters: Sequence[Any] | None = None) -> LawFit:
  """Fit a scaling law in log space: Huber loss, L-BFGS-B from a grid of starts, bootstrap.

  The objective is the mean Huber loss (threshold `huber_delta`) of the log residuals
  r = log L_pred - log L_obs, minimised with `scipy.optimize.minimize(method="L-BFGS-B")`
  from every start of the law's grid, keeping the best (Hoffmann et al. 2022, Sec. 3.3 /
  App. D.2). Inputs are centred in log space for conditioning; the parameters are mapped
  back exactly. The bootstrap resamples the P points with replacement (numpy Generator
  seeded by `seed`; a resample that no longer has the law's minimum distinct values is
  redrawn), refits from the optimum, and takes the 2.5% and 97.5% percentiles per
  parameter.

  Args:
    law: a name in `analysis.laws.LAWS` ("power_law", "power_law_irreducible",
      "joint_nk", "growth_power_law") or a `Law`.
    x: (P,) inputs of a one-input law, or a mapping input name -> (P,) (Eq. 3: "n", "k"),
      all finite and > 0.
    y: (P,) observed values, finite and > 0 (normalized MSE, or n_latents*, lr*, ...).
    variables: law input name -> the field name used in messages (default: the input name).
    huber_delta: Huber threshold in natural-log units (Hoffmann et al. 2022: 1e-3).
    n_bootstrap: bootstrap resamples (0: no intervals, no bands).
    seed: the bootstrap seed.
    warn: warn (UserWarning) when the fit is degenerate.
    clusters: (P,) the run of each point, when points share a run's noise (several
      evaluations of one run): the standard errors are then, per parameter, the larger
      of the cluster-robust sandwich (scores summed per run) and the delete-one-run
      jackknife (Cameron & Miller 2015, Sec. VI; with 5-6 runs neither alone covered),
      `ci95` uses t on G - 1 dof (G runs), and the bootstrap behind the bands draws
      whole runs. Without, points are independent: t on P - Q dof.
      (A cluster-bootstrap percentile interval covered far less than 95% in
      benchmarks/fit_coverage.py; the t x sandwich intervals are what it validates.)

  Returns:
    A `LawFit`. A degenerate fit (an irreducible term c -> 0 or -> min L, or parameters
    the design does not identify) has `degenerate` set, a `note`, and warns. Where the
    data cannot support an interval (fewer than `MIN_DOF` degrees of freedom or too few
    distinct x; fewer than `MIN_CLUSTERS` runs) `ci95` is None throughout and
    `no_interval` says why in one line. Which interval each law reports was chosen by
    its measured coverage (benchmarks/fit_coverage.py).

  Raises:
    ConfigError: unknown law; shapes differ; a value is NaN, inf or <= 0; too few
      distinct values of an input (`Law.min_distinct`: e.g. a single value of n); fewer
      than Q + 1 points; the optimiser fails from every start.
  """
  if isinstance(law, str):
    if law not in laws_lib.LAWS:
      raise ConfigError(f"unknown law {law!r}; known: {', '.join(laws_lib.LAWS)}")
    law = laws_lib.LAWS[law]
  variables = {i: (variables or {}).get(i, i) for i in law.inputs}
  xs, y_P = _check_law_inputs(law, x, y, variables)
  if huber_delta <= 0:
    raise ConfigError(f"huber_delta={huber_delta} must be positive (Hoffmann et al. use 1e-3)")
  if clusters is not None and len(clusters) != len(y_P):
    raise ConfigError(f"cannot fit {law.name}: {len(clusters)} cluster labels for "
                      f"{len(y_P)} points")
  logx = {i: np.log(v) for i, v in xs.items()}
  mu = {i: float(v.mean()) for i, v in logx.items()}
  u = {i: v - mu[i] for i, v in logx.items()}
  logy = np.log(y_P)
  starts = law.inits(u, logy)
  with _one_blas_thread():
    return _fit_law(law, xs, y_P, u, mu, logy, starts, variables, huber_delta, n_bootstrap,
                    seed, warn, clusters)


def _one_blas_thread():
  return _threadpool_limits(1, user_api="blas") if _threadpool_limits else contextlib.nullcontext()


def _fit_law(law, xs, y_P, u, mu, logy, starts, variables, huber_delta, n_bootstrap, seed, warn,
             clusters=None):
  Fs = law.design(u)
  theta_c, objective = _minimise(Fs, logy, starts, huber_delta)
  if theta_c is None:
    raise ConfigError(f"cannot fit {law.name}: the optimiser failed from every start; "
                      f"check the data or use a simpler law")
  T = law.uncentre(mu)
  theta = T @ theta_c
  params = law.named(theta)
  log_pred, J = _pred_and_jac(Fs, theta_c)
  r_P = log_pred - logy
  P, Q = J.shape

  notes = []
  JtJ = J.T @ J
  cond = np.linalg.cond(JtJ)
  se_theta = np.full(Q, np.nan)
  cov = np.full((Q, Q), np.nan)
  identified = bool(np.isfinite(cond) and cond <= _COND_MAX)
  G = len(set(clusters)) if clusters is not None else P
  if not identified:
    notes.append(f"the design does not identify all {Q} parameters (cond(J^T J) = {cond:.2g}); "
                 f"add distinct values of {', '.join(variables.values())}")
  elif P > Q:
    cov = T @ _sandwich_cov(J, r_P, huber_delta, clusters) @ T.T
    if clusters is not None:  # few runs: neither estimate alone covers (fit_coverage.py)
      cov_j = _jackknife_cov(Fs, logy, theta_c, huber_delta, clusters, T)
      if cov_j is not None:
        cov = _larger_errors(cov, cov_j)
    se_theta = np.sqrt(np.clip(np.diag(cov), 0, None))
  stderr = {p: float(params[p] * s if p in law.log_params else s)
            for p, s in zip(law.params, se_theta)}
  stderr = {p: (s if math.isfinite(s) else None) for p, s in stderr.items()}
  notes += _edge_notes(law, params, y_P, xs, variables)

  # The reported 95% interval: t around the sandwich standard error, on P - Q dof (points
  # independent) or G - 1 (clusters: G runs whose points share the run's noise; the
  # cluster-robust sandwich); None, with the reason in `no_interval`, where the data
  # cannot support one. Chosen by measured coverage (benchmarks/fit_coverage.py). A
  # log-fitted parameter's interval is exp of the interval of its log, except those in
  # `law.linear_interval` (E of L(N, D)): E +- t SE(E), clipped at 0 -- the log-scale one
  # covered 89.8% (all misses too high), this one 91.8%, on the same 147 planted tables.
  n_distinct = len(np.unique(np.stack(list(xs.values()), axis=1), axis=0))  # distinct inputs
  ci95, method, no_interval = {p: None for p in law.params}, "", ""
  dof = P - Q if clusters is None else G - 1
  if not identified:
    no_interval = "the parameters are not identified"
  elif clusters is not None and G < MIN_CLUSTERS:
    no_interval = f"only {G} runs; an interval over runs needs {MIN_CLUSTERS}"
  elif clusters is None and (P - Q < MIN_DOF or n_distinct < law.n_params + MIN_DOF):
    no_interval = (f"{P} points at {n_distinct} distinct {', '.join(variables.values())} for "
                   f"{Q} parameters leave {P - Q} degrees of freedom; an interval needs "
                   f"{MIN_DOF} (and {law.n_params + MIN_DOF} distinct values)")
  else:
    t = float(scipy.stats.t.ppf(0.975, dof))
    method = (f"t ({dof} dof) x sandwich standard error" if clusters is None else
              f"t ({dof} dof) x the larger of the cluster-robust sandwich and the "
              f"delete-one-run jackknife standard errors ({G} runs)")
    for p, v, s in zip(law.params, theta, se_theta):
      if not math.isfinite(s):
        continue
      lo, hi = v - t * s, v + t * s
      if p in law.linear_interval:  # E of L(N, D): on the linear scale, clipped at 0
        e = math.exp(v)
        ci95[p] = [max(0.0, e - t * e * s), e + t * e * s]
      elif p in law.log_params:  # an interval beyond exp's range bounds nothing: none
        ci95[p] = [math.exp(lo), math.exp(hi)] if max(lo, hi) < _LOG_MAX else None
      else:
        ci95[p] = [float(lo), float(hi)]
  if no_interval:
    no_interval = f"no interval: {no_interval}"

  boots, boot_note, n_excluded = [], "", 0
  if n_bootstrap > 0:
    rng = np.random.default_rng(seed)
    groups = _cluster_index(clusters) if clusters is not None else None
    for _ in range(n_bootstrap):
      for _attempt in range(100):
        if groups is None:
          idx = rng.integers(0, P, P)
        else:
          idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        if _enough_distinct(law, xs, idx):
          break
      else:
        continue
      tb, _ = _minimise([F[idx] for F in Fs], logy[idx], [theta_c], huber_delta, ftol=1e-12)
      with np.errstate(over="ignore", under="ignore"):
        row = list(law.named(T @ tb).values()) if tb is not None else []
      if _usable_refit(law, row):
        boots.append(row)
      else:  # e.g. log c ran to -inf: c underflows to 0.0 and its log is undefined
        n_excluded += 1
    distinct = len(np.unique(np.round(np.array(boots), 10), axis=0)) if boots else 0
    if distinct < max(10, min(n_bootstrap, 1000) // 10):
      boot_note = (f"the bootstrap gave only {distinct} distinct refits of {n_bootstrap} "
                   f"({P} points; the law needs {', '.join(map(str, law.min_distinct))} distinct "
                   f"{', '.join(variables.values())}): no bands; add points")
      boots = []
    if n_excluded:
      boot_note = "; ".join(filter(None, [boot_note, (
          f"{n_excluded} of {n_bootstrap} bootstrap refits ran to a degenerate point (a "
          f"parameter fitted through its log reached 0 or inf) and were left out")]))

  degenerate = bool(notes)
  note = "; ".join(notes + ([boot_note] if boot_note else []))
  if note and warn:
    warn_caller(f"{'degenerate' if degenerate else 'uncertain'} fit of {law.name}: {note}")
  return LawFit(law=law.name, formula=law.formula, params=params, stderr=stderr, ci95=ci95,
                n_points=P, residuals=r_P.tolist(), x={i: v.tolist() for i, v in xs.items()},
                variables=variables, y=y_P.tolist(), objective=objective,
                huber_delta=float(huber_delta), n_starts=len(starts), bootstrap=boots,
                seed=int(seed), n_bootstrap_excluded=n_excluded, degenerate=degenerate,
                note=note, ci95_method=method, no_interval=no_interval, dof=dof,
                cov=[[float(v) for v in row] for row in cov])


def _larger_errors(cov_a: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
  """The covariance with, per parameter, the larger of the two standard errors and the
  correlations of `cov_b` (a diagonal rescaling of a covariance: still positive
  semi-definite)."""
  sa, sb = np.sqrt(np.clip(np.diag(cov_a), 0, None)), np.sqrt(np.clip(np.diag(cov_b), 0, None))
  with np.errstate(divide="ignore", invalid="ignore"):
    corr = np.where(np.outer(sb, sb) > 0, cov_b / np.outer(sb, sb), np.eye(len(sb)))
  se = np.maximum(sa, sb)
  return corr * np.outer(se, se)


def _jackknife_cov(Fs, logy, theta_c, delta, clusters, T) -> np.ndarray | None:
  """Delete-one-run jackknife covariance of theta (CR3-like; Cameron & Miller 2015, Sec.
  VI.B): (G-1)/G sum_g (theta_(g) - mean)(...)^T over the G refits without run g."""
  groups = _cluster_index(clusters)
  G = len(groups)
  if G < 3:
    return None
  P = len(logy)
  thetas = []
  for g in groups:
    keep = np.setdiff1d(np.arange(P), g)
    tb, _ = _minimise([F[keep] for F in Fs], logy[keep], [theta_c], delta, ftol=1e-12)
    if tb is None:
      return None
    thetas.append(T @ tb)
  D = np.array(thetas) - np.mean(thetas, axis=0)
  return (G - 1) / G * D.T @ D


def _cluster_index(clusters) -> list[np.ndarray]:
  """Point indices of each cluster (run), in first-seen order."""
  order: dict[Any, list[int]] = {}
  for i, c in enumerate(clusters):
    order.setdefault(c, []).append(i)
  return [np.asarray(v) for v in order.values()]


def _sandwich_cov(J_PxQ: np.ndarray, r_P: np.ndarray, delta: float,
                  clusters: Sequence[Any] | None = None) -> np.ndarray:
  """The sandwich covariance A^-1 B A^-1 of a Huber M-estimator (Huber 1967; Huber &
  Ronchetti 2009, Sec. 7.6) on the centred parameters, from the Jacobian J of log L_pred
  and the residuals r at the optimum.

  B = sum psi(r_i)^2 J_i J_i^T with psi(r) = clip(r/delta, -1, 1). A = sum E[psi']
  J_i J_i^T, where E[psi'] = (F(delta) - F(-delta)) / delta with F the residuals'
  distribution. Counting the points inside +-delta is useless at delta = 1e-3 (close to
  least absolute deviations: a handful of points, most of them interpolated), and a
  kernel estimate of the density at 0 from 6-40 residuals was too noisy to cover
  (benchmarks/fit_coverage.py), so F is the normal of scale s, s^2 = sum r^2 / (P - Q)
  (a normal-reference density: 2 f(0) = 2 / (sqrt(2 pi) s) when delta << s, the LAD
  sparsity of Koenker 2005, Sec. 3.4; 1/delta, the least-squares case, when delta >> s).
  The t quantile on P - Q dof then accounts for the noise in s.
  With `clusters` (the run of each point), B sums the scores within each run first (the
  cluster-robust meat, with the G/(G-1) correction; Cameron & Miller 2015, Sec. II.C).
  """
  P, Q = J_PxQ.shape
  psi = np.clip(r_P / delta, -1.0, 1.0)
  if clusters is None:
    B = (J_PxQ.T * psi ** 2) @ J_PxQ  # the dof correction is in s (A), once
  else:
    S_GxQ = np.stack([J_PxQ[g].T @ psi[g] for g in _cluster_index(clusters)])
    G = len(S_GxQ)
    B = S_GxQ.T @ S_GxQ * (G / max(G - 1, 1))
  sigma = math.sqrt(float(r_P @ r_P) / (P - Q)) if P > Q else 0.0
  if sigma > 0:  # E[psi'] under a normal reference of scale sigma
    e_dpsi = float(scipy.stats.norm.cdf(delta / sigma) - scipy.stats.norm.cdf(-delta / sigma)) / delta
  else:
    e_dpsi = 1.0 / delta
  A = e_dpsi * (J_PxQ.T @ J_PxQ)
  A_inv = np.linalg.inv(A)
  return A_inv @ B @ A_inv


def _usable_refit(law, row) -> bool:
  """A refit is usable if every parameter is finite and each log-fitted one is > 0."""
  return bool(row) and all(math.isfinite(v) and (v > 0 or p not in law.log_params)
                           for p, v in zip(law.params, row))


def _edge_notes(law, params, y_P, xs, variables) -> list[str]:
  """Law-specific degeneracies: an irreducible term that ran to 0 or swallowed the law."""
  if law.name != "power_law_irreducible":
    return []
  c, y_min = params["c"], float(y_P.min())
  x, name = xs["x"], variables["x"]
  if params["alpha"] <= 0:
    return [f"alpha={params['alpha']:.3g} <= 0: the loss does not fall with {name} "
            f"(undertrained runs?); the law with an irreducible term does not apply"]
  if c < _C_ZERO * y_min:
    return [f"c={c:.3g} ran to 0: no irreducible loss is resolved over {name} in "
            f"[{x.min():g}, {x.max():g}]; use the pure power law"]
  if c > _C_AT_MIN * y_min:
    return [f"c={c:.3g} reaches the smallest loss {y_min:.3g}: the power-law part is not "
            f"resolved; widen the {name} range or use the pure power law"]
  return []


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


MAX_TANGENT_ITERATIONS = 20


def frontier_tangent_points(flops: Sequence[float] | np.ndarray,
                            loss: Sequence[float] | np.ndarray, runs: Sequence[Any],
                            alpha: float) -> np.ndarray:
  """Each run's compute-efficient point at envelope slope `alpha`: indices, by compute.

  The compute-efficient frontier of a few discrete runs is the lower envelope of their
  loss-vs-compute curves; it touches the continuous compute-optimal curve L(C) only where
  a run's curve is tangent to it, and lies above it elsewhere -- most at its ends, where
  one run is alone (the smallest run before the next one catches up, the largest run past
  its optimum). For L(C) = a C^(-alpha) the tangent point of a run is where its curve
  touches a line of slope -alpha in (log C, log L): the evaluation minimising
  log L + alpha log C (Kaplan et al. 2020, Sec. 6: L(C_min) from the envelope of the
  training curves). A run whose minimum is its first or last evaluation does not reach
  its tangent point inside its evaluations, and gives none.

  Args:
    flops: (P,) training compute of every evaluation point, FLOPs, > 0.
    loss: (P,) its loss, > 0.
    runs: (P,) the run of each point.
    alpha: the envelope's exponent (the slope is -alpha).

  Returns:
    (R,) int indices into the inputs, one per run that has a tangent point, by compute.
  """
  c_P = np.asarray(flops, dtype=np.float64)
  score_P = np.log(np.asarray(loss, dtype=np.float64)) + alpha * np.log(c_P)
  out = []
  for g in _cluster_index(list(runs)):
    j = g[np.argmin(score_P[g])]
    if c_P[g].min() < c_P[j] < c_P[g].max():
      out.append(int(j))
  return np.asarray(sorted(out, key=lambda i: c_P[i]), dtype=np.int64)


def fit_frontier_law(flops: Sequence[float] | np.ndarray, loss: Sequence[float] | np.ndarray,
                     runs: Sequence[Any], *, n_bootstrap: int = 200, seed: int = 0,
                     huber_delta: float = HUBER_DELTA, warn: bool = True
                     ) -> tuple[LawFit, np.ndarray, dict[str, list[float] | None]]:
  """L(C) = a * C^(-alpha), the compute-efficient frontier's law, fitted through each
  run's compute-efficient point (where its curve touches the frontier's envelope).

  The frontier (`compute_frontier`: the lower envelope of every evaluation point vs
  compute; Gao et al. 2024, Fig. 1 left) of a few discrete runs lies above the continuous
  L(C) except at each run's tangent point, and most at its ends (only the smallest run
  exists at the lowest compute; the largest run's tail flattens past its optimum): a power
  law fitted to all of it came out 0.7 standard errors too steep on 6 planted runs, and
  fitting only where two runs compete still 0.5 (benchmarks/fit_coverage.py). So L(C) is
  fitted through the runs' tangent points (`frontier_tangent_points`): starting from the
  slope of the whole frontier, pick each run's tangent point at the current slope, refit,
  and repeat until the set of points repeats (at most `MAX_TANGENT_ITERATIONS` times).
  Each point is one run, so the points are independent: `ci95` is t on P - 2 dof around
  the sandwich standard error, as for any law (`fit_law`), and the bootstrap behind the
  bands resamples runs. `fitted_on` says so.

  Where fewer than 3 runs reach their tangent point inside their evaluations (runs
  evaluated over too narrow a token range), the whole frontier is fitted instead, as
  before: t on G - 1 dof around the larger of the cluster-robust sandwich and the
  delete-one-run jackknife standard errors (G runs on it), the bands from a cluster
  bootstrap over runs with the frontier recomputed; `fitted_on` and `note` say so, and it
  warns.

  Args:
    flops: (P,) training compute of every evaluation point, FLOPs, > 0.
    loss: (P,) its loss, > 0.
    runs: (P,) the run of each point (any hashable: (sweep, run_id)).
    n_bootstrap, seed, huber_delta, warn: as in `fit_law`.

  Returns:
    (fit, frontier indices into the inputs (by compute), the bootstrap percentile interval
    per parameter (None without one)). The fitted points are `fit.x["x"]`, `fit.y`.

  Raises:
    ConfigError: as `fit_law` on the frontier points (fewer than 3 distinct compute).
  """
  c_P = np.asarray(flops, dtype=np.float64)
  l_P = np.asarray(loss, dtype=np.float64)
  run_P = [runs[i] for i in range(len(c_P))]
  idx = compute_frontier(c_P, l_P)
  f_runs = [run_P[i] for i in idx]
  whole = fit_law("power_law", c_P[idx], l_P[idx], variables={"x": "flops"}, n_bootstrap=0,
                  huber_delta=huber_delta, warn=False, clusters=f_runs)
  picked, seen = None, []
  if not whole.degenerate:
    alpha = whole.params["alpha"]
    for _ in range(MAX_TANGENT_ITERATIONS):
      t_idx = frontier_tangent_points(c_P, l_P, run_P, alpha)
      if len(np.unique(c_P[t_idx])) < laws_lib.POWER_LAW.min_distinct[0] or any(
          np.array_equal(t_idx, s) for s in seen):
        break
      seen.append(t_idx)
      picked = fit_law("power_law", c_P[t_idx], l_P[t_idx], variables={"x": "flops"},
                       n_bootstrap=0, huber_delta=huber_delta, warn=False)
      alpha = picked.params["alpha"]
  if picked is not None:
    t_idx = seen[-1]
    fit = fit_law("power_law", c_P[t_idx], l_P[t_idx], variables={"x": "flops"},
                  n_bootstrap=n_bootstrap, seed=seed, huber_delta=huber_delta, warn=warn)
    fit = dataclasses.replace(fit, fitted_on=(
        f"the compute-efficient point of each of {len(t_idx)} runs (where its loss-vs-compute "
        f"curve touches the frontier's envelope; {len(idx)} frontier points)"))
    ci_boot = {p: None for p in fit.params}
    if len(fit.bootstrap) >= n_bootstrap // 2 > 0:
      lo, hi = np.percentile(np.array(fit.bootstrap), [2.5, 97.5], axis=0)
      ci_boot = {p: [float(a), float(b)] for p, a, b in zip(fit.params, lo, hi)}
    return fit, idx, ci_boot

  n_tangent = len(seen[-1]) if seen else len(frontier_tangent_points(
      c_P, l_P, run_P, whole.params["alpha"]))
  why = (f"only {n_tangent} runs reach their compute-efficient point inside their evaluations "
         f"(3 needed); L(C) is fitted on the whole frontier, whose ends make the exponent "
         f"too steep (by 0.7 standard errors on 6 planted runs); evaluate each run over a "
         f"wider token range")
  fit = fit_law("power_law", c_P[idx], l_P[idx], variables={"x": "flops"}, n_bootstrap=0,
                huber_delta=huber_delta, warn=warn, clusters=f_runs)
  if warn:
    warn_caller(f"L(C): {why}")
  fit = dataclasses.replace(fit, note="; ".join(filter(None, [fit.note, why])),
                            fitted_on=f"the whole compute-efficient frontier ({len(idx)} points)")
  groups = _cluster_index(run_P)
  n_runs = len(groups)
  boots, n_failed, ci_boot = [], 0, {p: None for p in fit.params}
  if not fit.degenerate and n_runs >= MIN_CLUSTERS and n_bootstrap > 0:
    rng = np.random.default_rng(seed)
    law = laws_lib.POWER_LAW
    for _ in range(n_bootstrap):
      pick = np.concatenate([groups[g] for g in np.unique(rng.integers(0, n_runs, n_runs))])
      f_idx = pick[compute_frontier(c_P[pick], l_P[pick])]
      if len(np.unique(c_P[f_idx])) < law.min_distinct[0]:
        n_failed += 1
        continue
      u = np.log(c_P[f_idx])
      mu = float(u.mean())
      Fs = law.design({"x": u - mu})
      start = np.linalg.solve(law.uncentre({"x": mu}), law.theta(fit.params))
      tb, _ = _minimise(Fs, np.log(l_P[f_idx]), [start], huber_delta, ftol=1e-12)
      row = list(law.named(law.uncentre({"x": mu}) @ tb).values()) if tb is not None else []
      if _usable_refit(law, row):
        boots.append(row)
      else:
        n_failed += 1
    if len(boots) >= n_bootstrap // 2:
      lo, hi = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
      ci_boot = {p: [float(a), float(b)] for p, a, b in zip(fit.params, lo, hi)}
    else:
      boots = []
  fit = dataclasses.replace(fit, bootstrap=boots, seed=int(seed), n_bootstrap_excluded=n_failed)
  return fit, idx, ci_boot
