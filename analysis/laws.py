"""The scaling laws, as data: each is log L = logsumexp_j (F_j(log inputs) @ theta).

Every law of the papers we reproduce is a sum of exponentials of forms that are linear in
its parameters once the inputs are logged, so one representation serves all of them:

* ``power_law``             L = a * x^(-alpha)                   (Kaplan et al. 2020, Eq. 1.5;
  Gao et al. 2024, Fig. 1: L(C) on the compute frontier; lr*(n) of Gao et al. 2024, Sec. 2.3)
* ``power_law_irreducible`` L = a * x^(-alpha) + c               (Hoffmann et al. 2022, Eq. 2;
  Gao et al. 2024, Sec. 3.1: L(N) at convergence)
* ``joint_nk``              L(n, k) = exp(alpha + beta_k log k + beta_n log n
                                      + gamma log k log n) + exp(zeta + eta log k)
                                                                  (Gao et al. 2024, Eq. 3)
* ``chinchilla``            L(N, D) = E + A * N^(-alpha) + B * D^(-beta)   (Hoffmann et al.
  2022, Eq. 2, their Approach 3: N = n_latents, D = training tokens)
* ``growth_power_law``      y = A * x^b                          (Templeton et al. 2024: the
  compute-optimal n_latents*(C) and token budget*(C); Hoffmann et al. 2022, Eq. 4)

A `Law` gives the design matrices F_j of its terms on *centred* log inputs (u = log x -
mean log x, for a well-conditioned fit), the matrix T that maps centred parameters back
(theta = T @ theta_c, exact), starting points for the optimiser, and which parameters
are stored as logs (a, c, A are fitted as log a, log c, log A so they stay positive).
`analysis.fitting.fit_law` fits any of them; `LAWS` is the registry by name.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping

import numpy as np

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Law:
  """One scaling law log L = logsumexp_j (F_j @ theta) (see the module docstring).

  Attributes:
    name: registry key, e.g. "power_law_irreducible".
    formula: the law as a reader writes it, e.g. "L = a * x^(-alpha) + c".
    params: names of the Q parameters, in theta order, as reported ("a", "alpha", ...).
    log_params: the names fitted through their logarithm (theta holds log a; `a` is
      reported); those must be > 0.
    inputs: names of the input variables, e.g. ("x",) or ("n", "k").
    min_distinct: per input, the fewest distinct values that identify the law.
    design: (u: dict input -> (P,) centred log input) -> list of (P, Q) term matrices.
    uncentre: (mu: dict input -> mean log input) -> (Q, Q) T with theta = T @ theta_c.
    inits: (u, log y: (P,)) -> list of (Q,) starting theta_c (the grid of starts).
    source: the paper and equation.
    linear_interval: log-fitted parameters whose interval is taken on the linear scale,
      clipped at 0 (a floor such as E that the data may put at 0: its log-scale interval
      can never reach 0 and is too narrow when the estimate is high).
  """

  name: str
  formula: str
  params: tuple[str, ...]
  log_params: frozenset[str]
  inputs: tuple[str, ...]
  min_distinct: tuple[int, ...]
  design: Callable[[Mapping[str, Array]], list[Array]]
  uncentre: Callable[[Mapping[str, float]], Array]
  inits: Callable[[Mapping[str, Array], Array], list[Array]]
  source: str
  linear_interval: frozenset[str] = frozenset()

  @property
  def n_params(self) -> int:
    return len(self.params)

  def log_predict(self, theta_Q: Array, logx: Mapping[str, Array]) -> Array:
    """log L at the (uncentred) log inputs, from the reported-space theta (logs for log_params)."""
    terms = np.stack([F @ theta_Q for F in self.design(logx)], axis=0)
    return np.logaddexp.reduce(terms, axis=0)

  def theta(self, params: Mapping[str, float]) -> Array:
    """The (Q,) theta of named parameters (log of the log_params)."""
    return np.array([np.log(params[p]) if p in self.log_params else params[p]
                     for p in self.params], dtype=np.float64)

  def named(self, theta_Q: Array) -> dict[str, float]:
    """Named parameters from theta (exp of the log_params)."""
    return {p: float(np.exp(t) if p in self.log_params else t)
            for p, t in zip(self.params, theta_Q)}


def _ols(F_PxQ: Array, target_P: Array) -> Array:
  return np.linalg.lstsq(F_PxQ, target_P, rcond=None)[0]


# --- power laws in one variable ------------------------------------------------------------

def _pl_design(u):
  x = u["x"]
  return [np.stack([np.ones_like(x), -x], axis=1)]


def _pl_uncentre(mu):
  return np.array([[1.0, mu["x"]], [0.0, 1.0]])  # log a = log b + alpha * mu


def _pl_inits(u, logy):
  (theta,) = [_ols(_pl_design(u)[0], logy)]
  return [theta] + [np.array([theta[0], a0]) for a0 in (0.1, 0.5, 1.0)]


POWER_LAW = Law(
    name="power_law", formula="L = a * x^(-alpha)", params=("a", "alpha"),
    log_params=frozenset({"a"}), inputs=("x",), min_distinct=(3,),
    design=_pl_design, uncentre=_pl_uncentre, inits=_pl_inits,
    source="Kaplan et al. 2020, Eq. 1.5; Gao et al. 2024, Sec. 3.1 / Fig. 1 (L(C))")


def _irr_design(u):
  x = u["x"]
  one, zero = np.ones_like(x), np.zeros_like(x)
  return [np.stack([one, -x, zero], axis=1), np.stack([zero, zero, one], axis=1)]


def _irr_uncentre(mu):
  return np.array([[1.0, mu["x"], 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


_ALPHA_GRID = (0.1, 0.3, 0.6, 1.0, 1.5)
_C_FRACTION_GRID = (0.01, 0.3, 0.6, 0.9)  # initial c as a fraction of min(L)


def _irr_inits(u, logy):
  y = np.exp(logy)
  out = []
  for alpha0, frac in itertools.product(_ALPHA_GRID, _C_FRACTION_GRID):
    c0 = frac * y.min()
    log_b0 = float(np.mean(np.log(y - c0) + alpha0 * u["x"]))
    out.append(np.array([log_b0, alpha0, np.log(c0)]))
  return out


POWER_LAW_IRREDUCIBLE = Law(
    name="power_law_irreducible", formula="L = a * x^(-alpha) + c", params=("a", "alpha", "c"),
    log_params=frozenset({"a", "c"}), inputs=("x",), min_distinct=(4,),
    design=_irr_design, uncentre=_irr_uncentre, inits=_irr_inits,
    source="Hoffmann et al. 2022, Eq. 2; Gao et al. 2024, Sec. 3.1 (L(N) at convergence)")


def _growth_design(u):
  x = u["x"]
  return [np.stack([np.ones_like(x), x], axis=1)]


def _growth_uncentre(mu):
  return np.array([[1.0, -mu["x"]], [0.0, 1.0]])  # log A = log B - b * mu


def _growth_inits(u, logy):
  theta = _ols(_growth_design(u)[0], logy)
  return [theta] + [np.array([theta[0], b0]) for b0 in (0.0, 0.5, 1.0)]


GROWTH_POWER_LAW = Law(
    name="growth_power_law", formula="y = A * x^b", params=("A", "b"),
    log_params=frozenset({"A"}), inputs=("x",), min_distinct=(3,),
    design=_growth_design, uncentre=_growth_uncentre, inits=_growth_inits,
    source="Templeton et al. 2024 (compute-optimal n_latents*(C), steps*(C)); "
           "Hoffmann et al. 2022, Eq. 4")


# --- Gao et al. 2024, Eq. 3 ------------------------------------------------------------------

def _nk_design(u):
  lk, ln = u["k"], u["n"]
  one, zero = np.ones_like(lk), np.zeros_like(lk)
  return [np.stack([one, lk, ln, lk * ln, zero, zero], axis=1),
          np.stack([zero, zero, zero, zero, one, lk], axis=1)]


def _nk_uncentre(mu):
  mk, mn = mu["k"], mu["n"]
  # theta_c = (alpha', beta_k', beta_n', gamma', zeta', eta') on u = log k - mk, v = log n - mn:
  # alpha' = alpha + beta_k mk + beta_n mn + gamma mk mn, beta_k' = beta_k + gamma mn,
  # beta_n' = beta_n + gamma mk, zeta' = zeta + eta mk. Inverted:
  return np.array([
      [1.0, -mk, -mn, mk * mn, 0.0, 0.0],
      [0.0, 1.0, 0.0, -mn, 0.0, 0.0],
      [0.0, 0.0, 1.0, -mk, 0.0, 0.0],
      [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0, 1.0, -mk],
      [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
  ])


def _nk_inits(u, logy):
  y = np.exp(logy)
  F1 = _nk_design(u)[0][:, :4]
  out = []
  for frac, eta0 in itertools.product((0.01, 0.3, 0.6, 0.9), (0.0, -0.2)):
    # irreducible term frac * min(L) at the mean k, slope eta0 in log k; the rest by OLS.
    zeta0 = np.log(frac * y.min())
    irr = np.exp(zeta0 + eta0 * u["k"])
    rest = np.log(np.clip(y - irr, 1e-3 * y, None))
    out.append(np.concatenate([_ols(F1, rest), [zeta0, eta0]]))
  return out


JOINT_NK = Law(
    name="joint_nk",
    formula="L(n, k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n) "
            "+ exp(zeta + eta log k)",
    params=("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta"), log_params=frozenset(),
    inputs=("n", "k"), min_distinct=(4, 2),
    design=_nk_design, uncentre=_nk_uncentre, inits=_nk_inits,
    source="Gao et al. 2024, Eq. 3")


# --- a power law in two variables: the optimal lr against n_latents and token budget ----

def _pl2_design(u):
  n, d = u["n"], u["D"]
  return [np.stack([np.ones_like(n), -n, -d], axis=1)]


def _pl2_uncentre(mu):
  return np.array([[1.0, mu["n"], mu["D"]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _pl2_inits(u, logy):
  theta = _ols(_pl2_design(u)[0], logy)
  return [theta, np.array([theta[0], 0.5, 0.0]), np.array([theta[0], 0.25, 0.25])]


POWER_LAW_2 = Law(
    name="power_law_2", formula="y = a * n^(-alpha) * D^(-beta)", params=("a", "alpha", "beta"),
    log_params=frozenset({"a"}), inputs=("n", "D"), min_distinct=(2, 2),
    design=_pl2_design, uncentre=_pl2_uncentre, inits=_pl2_inits,
    source="Gao et al. 2024, Sec. 2.3 (lr* ~ n^(-1/2)), extended by the token budget D "
           "(sweeps/lr_sweep.py)")


# --- Hoffmann et al. 2022, Eq. 2 (their Approach 3): loss against n_latents and tokens ----

def _chin_design(u):
  n, d = u["N"], u["D"]
  one, zero = np.ones_like(n), np.zeros_like(n)
  return [np.stack([one, zero, zero, zero, zero], axis=1),
          np.stack([zero, one, -n, zero, zero], axis=1),
          np.stack([zero, zero, zero, one, -d], axis=1)]


def _chin_uncentre(mu):
  T = np.eye(5)
  T[1, 2] = mu["N"]  # log A = log A' + alpha * mu_N
  T[3, 4] = mu["D"]  # log B = log B' + beta * mu_D
  return T


def _chin_inits(u, logy):
  y = np.exp(logy)
  out = []
  for frac, alpha0, beta0 in itertools.product((0.01, 0.5), (0.2, 0.5, 1.0), (0.2, 0.5, 1.0)):
    e0 = frac * y.min()
    half = np.log(max(float(np.exp(np.mean(logy))) - e0, 1e-12) / 2)
    out.append(np.array([np.log(e0), half, alpha0, half, beta0]))
  return out


CHINCHILLA = Law(
    name="chinchilla", formula="L(N, D) = E + A * N^(-alpha) + B * D^(-beta)",
    params=("E", "A", "alpha", "B", "beta"), log_params=frozenset({"E", "A", "B"}),
    linear_interval=frozenset({"E"}),
    inputs=("N", "D"), min_distinct=(3, 3),
    design=_chin_design, uncentre=_chin_uncentre, inits=_chin_inits,
    source="Hoffmann et al. 2022, Eq. 2 and Sec. 3.3 (Approach 3), with N = n_latents and "
           "D = training tokens")


LAWS: dict[str, Law] = {law.name: law for law in (
    POWER_LAW, POWER_LAW_IRREDUCIBLE, GROWTH_POWER_LAW, JOINT_NK, POWER_LAW_2, CHINCHILLA)}
