"""Synthetic activations with known features: the ground truth an SAE should recover.

A token's activation is a sparse, non-negative combination of F fixed unit directions in
R^d_in, with F > d_in (superposition; Elhage et al. 2022, "Toy models of superposition";
Sharkey et al. 2022, "Taking features out of superposition with sparse autoencoders"):

    x_BxD = acts_BxF @ directions_FxD + noise_std * N(0, I)

Structure of the firing (which entries of acts_BxF are non-zero), all seeded by
`GeneratorConfig.seed`:

* Zipf frequencies. Feature i (0-based) is the feature of frequency rank r = i + 1 and
  fires on a fraction p_i = p_1 * r^(-zipf_exponent) of tokens, p_1 chosen so that the
  expected number of active features per token, sum_i p_i, is `mean_active`. This is the
  marginal of every feature, hierarchy and correlation included.
* Hierarchy (as in Chanin et al. 2024, "A is for absorption"). The `n_parents` most
  frequent features are parents; each has `children_per_parent` children, taken from the
  rarest features. A child fires only on tokens where its parent fires, and at most one
  child of a parent fires on a token (siblings exclude each other): given its parent, a
  token picks child c with probability p_c / p_parent, or none. Children's directions
  are random like all others (not tied to the parent's).
* Correlated firing. The other features ("roots", parents included) are split at random
  into groups of `group_size`; within a group, firing is driven by a Gaussian copula
  with correlation `correlation`: feature i fires iff
  sqrt(rho) g_group + sqrt(1 - rho) e_i > Phi^-1(1 - p_i), with g and e standard normal.
  rho = 0 makes every root independent; the marginals p_i do not depend on rho.
* Magnitudes. An active feature's coefficient is magnitude_min + magnitude_scale * U with
  U ~ Uniform(0, 1) ("uniform") or U ~ Exponential(1) ("exponential"), independently per
  token and feature (directions have unit norm, so the coefficient is the feature's
  contribution to ||x||).

Samples are generated in chunks of `CHUNK_TOKENS` rows, chunk c of sample seed s drawn
from its own random stream (seeded by cfg.seed, s and c; a whole chunk is drawn even when
fewer rows are needed), so a sample is reproducible from (cfg, seed) and a longer sample
extends a shorter one with the same seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from scipy.special import ndtri

from sae_jax.data import batches
from sae_jax.errors import ConfigError

CHUNK_TOKENS = 16_384
SPLIT_SEEDS = {"train": 0, "eval": 1}  # sample seeds of SyntheticSource's splits
_MAGNITUDES = ("uniform", "exponential")
_DIRECTIONS, _GROUPS, _SAMPLES = 0, 1, 2  # independent random streams per purpose


def _rng(seed: int, *key: int) -> np.random.Generator:
  """A generator for (seed, key). Keys go in the SeedSequence spawn key: a plain list
  seed would make [s, 0] and s the same stream (trailing zeros are dropped)."""
  return np.random.Generator(np.random.PCG64(
      np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key))))


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Settings of the synthetic generator (see the module docstring for the model).

  Attributes:
    d_in: activation width D.
    n_features: number of true features F (superposition when F > d_in).
    mean_active: expected number of active features per token (the true L0).
    zipf_exponent: a in p_r ~ r^-a, the decay of firing probability with rank r.
    n_parents: parents in the hierarchy (the most frequent features); 0 disables it.
    children_per_parent: children of each parent (taken from the rarest features).
    correlation: rho in [0, 1), the Gaussian-copula correlation of firing within a group.
    group_size: features per correlation group.
    magnitude: "uniform" or "exponential", the law of an active coefficient.
    magnitude_min: smallest coefficient of an active feature (> 0).
    magnitude_scale: width (uniform) or mean excess (exponential) of the coefficient.
    noise_std: standard deviation of the isotropic Gaussian noise added to x, per dim.
    seed: seeds the structure (directions, hierarchy, groups) and, with the sample
      seed, every sample.
  """
  d_in: int = 64
  n_features: int = 256
  mean_active: float = 5.0
  zipf_exponent: float = 0.5
  n_parents: int = 8
  children_per_parent: int = 3
  correlation: float = 0.3
  group_size: int = 4
  magnitude: str = "uniform"
  magnitude_min: float = 0.5
  magnitude_scale: float = 1.0
  noise_std: float = 0.01
  seed: int = 0

  def __post_init__(self):
    self.validate()

  @classmethod
  def from_config(cls, c: Mapping[str, Any] | Any | None = None, **overrides
                  ) -> "GeneratorConfig":
    """From a dict or `ml_collections.ConfigDict` (fields as above; missing ones keep
    their defaults), then keyword overrides. Raises ConfigError on an unknown field."""
    values = dict(c.to_dict() if hasattr(c, "to_dict") else (c or {}))
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"unknown generator field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return cls(**values)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def validate(self) -> None:
    """Raise ConfigError with a one-line fix for an impossible setting."""

    def need(ok, msg):
      if not ok:
        raise ConfigError(msg)

    for name in ("d_in", "n_features", "group_size"):
      v = getattr(self, name)
      need(isinstance(v, (int, np.integer)) and v > 0, f"{name}={v} must be a positive integer")
    for name in ("n_parents", "children_per_parent", "seed"):
      v = getattr(self, name)
      need(isinstance(v, (int, np.integer)) and v >= 0,
           f"{name}={v} must be a non-negative integer")
    need(self.mean_active > 0, f"mean_active={self.mean_active} must be positive")
    need(self.zipf_exponent >= 0, f"zipf_exponent={self.zipf_exponent} must be >= 0")
    need(0 <= self.correlation < 1, f"correlation={self.correlation} must be in [0, 1)")
    need(self.magnitude in _MAGNITUDES,
         f"magnitude={self.magnitude!r} is not one of {', '.join(_MAGNITUDES)}")
    need(self.magnitude_min > 0, f"magnitude_min={self.magnitude_min} must be positive")
    need(self.magnitude_scale >= 0, f"magnitude_scale={self.magnitude_scale} must be >= 0")
    need(self.noise_std >= 0, f"noise_std={self.noise_std} must be >= 0")
    n_hier = self.n_parents * (1 + self.children_per_parent)
    need(n_hier <= self.n_features,
         f"n_parents={self.n_parents} x (1 + children_per_parent={self.children_per_parent}) = "
         f"{n_hier} exceeds n_features={self.n_features}; lower them or raise n_features")
    p_F = firing_probabilities(self)
    need(p_F[0] <= 1, f"mean_active={self.mean_active} needs the most frequent feature to fire "
         f"with probability {p_F[0]:.3g} > 1; lower mean_active or zipf_exponent")
    if self.n_parents and self.children_per_parent:
      parent_F = parents(self)
      child_mass_P = np.bincount(parent_F[parent_F >= 0], p_F[parent_F >= 0],
                                 minlength=self.n_parents)
      worst = int(np.argmax(child_mass_P / p_F[:self.n_parents]))
      need(child_mass_P[worst] <= p_F[worst],
           f"the children of parent {worst} would fire on {child_mass_P[worst]:.3g} of tokens, "
           f"more than the parent ({p_F[worst]:.3g}); raise zipf_exponent or lower "
           f"children_per_parent / n_parents")


def firing_probabilities(cfg: GeneratorConfig) -> np.ndarray:
  """p_F float64 [n_features]: each feature's marginal firing probability per token,
  p_i = p_1 (i + 1)^-zipf_exponent, summing to mean_active (feature 0 most frequent)."""
  r_F = np.arange(1, cfg.n_features + 1, dtype=np.float64)
  w_F = r_F ** -float(cfg.zipf_exponent)
  return cfg.mean_active * w_F / w_F.sum()


def parents(cfg: GeneratorConfig) -> np.ndarray:
  """parent_F int64 [n_features]: the parent of each child, -1 for roots. Parents are
  features [0, n_parents); the children are the last n_parents * children_per_parent
  features, child n of them belonging to parent n % n_parents (so the most frequent
  parent gets the most frequent children)."""
  parent_F = np.full(cfg.n_features, -1, np.int64)
  n_children = cfg.n_parents * cfg.children_per_parent
  if n_children:
    parent_F[cfg.n_features - n_children:] = np.arange(n_children) % cfg.n_parents
  return parent_F


def groups(cfg: GeneratorConfig) -> np.ndarray:
  """group_F int64 [n_features]: the correlation group of each root feature, -1 for
  children (which follow their parent instead). Groups are a seeded random partition of
  the roots into chunks of `group_size` (the last may be smaller)."""
  roots = np.flatnonzero(parents(cfg) < 0)
  rng = _rng(cfg.seed, _GROUPS)
  group_F = np.full(cfg.n_features, -1, np.int64)
  group_F[rng.permutation(roots)] = np.arange(len(roots)) // cfg.group_size
  return group_F


def feature_directions(cfg: GeneratorConfig) -> np.ndarray:
  """directions_FxD float32 [n_features, d_in]: seeded random unit vectors (uniform on
  the sphere), the true feature directions."""
  rng = _rng(cfg.seed, _DIRECTIONS)
  d_FxD = rng.standard_normal((cfg.n_features, cfg.d_in))
  return (d_FxD / np.linalg.norm(d_FxD, axis=1, keepdims=True)).astype(np.float32)


class _Plan:
  """Per-config constants of the sampler. Roots are features [0, n_roots) and children
  [n_roots, n_features) (see `parents`), so both are written as column slices."""

  def __init__(self, cfg: GeneratorConfig):
    p_F = firing_probabilities(cfg)
    P, C = cfg.n_parents, cfg.children_per_parent
    self.n_roots = cfg.n_features - P * C
    self.p_R = p_F[:self.n_roots].astype(np.float32)
    self.threshold_R = ndtri(1 - p_F[:self.n_roots]).astype(np.float32)
    self.group_R = groups(cfg)[:self.n_roots]
    self.n_groups = int(self.group_R.max()) + 1 if self.n_roots else 0
    # Child n (feature n_roots + n) has parent j = n % P and slot c = n // P. It fires iff
    # its parent fires and u_j in [lo_cj, hi_cj), one uniform u_j per token and parent:
    # the intervals of siblings are disjoint, so at most one of them fires.
    q_CxP = np.zeros((C, P))
    if P and C:
      q_CxP = p_F[self.n_roots:].reshape(C, P) / p_F[None, :P]  # P(child | parent)
    hi_CxP = np.cumsum(q_CxP, axis=0)
    self.hi_CxP = hi_CxP.astype(np.float32)
    self.lo_CxP = (hi_CxP - q_CxP).astype(np.float32)
    self.directions_FxD = feature_directions(cfg)


def _sample_chunk(cfg: GeneratorConfig, plan: _Plan, n: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
  F, R = cfg.n_features, plan.n_roots
  fires_BxF = np.empty((n, F), bool)
  rho = float(cfg.correlation)
  if rho == 0:
    np.less(rng.random((n, R), np.float32), plan.p_R, out=fires_BxF[:, :R])
  else:
    z_BxR = rng.standard_normal((n, R), np.float32)
    z_BxR *= np.float32(np.sqrt(1 - rho))
    g_BxG = rng.standard_normal((n, plan.n_groups), np.float32)
    g_BxG *= np.float32(np.sqrt(rho))
    z_BxR += np.take(g_BxG, plan.group_R, axis=1)
    np.greater(z_BxR, plan.threshold_R, out=fires_BxF[:, :R])
  P, C = cfg.n_parents, cfg.children_per_parent
  if P and C:
    u_Bx1xP = rng.random((n, 1, P), np.float32)
    pick_BxCxP = (u_Bx1xP >= plan.lo_CxP) & (u_Bx1xP < plan.hi_CxP)
    pick_BxCxP &= fires_BxF[:, None, :P]
    fires_BxF[:, R:] = pick_BxCxP.reshape(n, C * P)
  rows, cols = np.nonzero(fires_BxF)
  if cfg.magnitude == "uniform":
    u = rng.random(len(rows), np.float32)
  else:
    u = rng.standard_exponential(len(rows), np.float32)
  acts_BxF = np.zeros((n, F), np.float32)
  acts_BxF[rows, cols] = np.float32(cfg.magnitude_min) + np.float32(cfg.magnitude_scale) * u
  x_BxD = acts_BxF @ plan.directions_FxD
  if cfg.noise_std:
    x_BxD += np.float32(cfg.noise_std) * rng.standard_normal(x_BxD.shape, np.float32)
  return x_BxD, acts_BxF


def sample(cfg: GeneratorConfig, n_tokens: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Draw n_tokens synthetic activations.

  Args:
    cfg: generator settings.
    n_tokens: rows B to draw.
    seed: sample seed (use different seeds for train and eval, see `SPLIT_SEEDS`).

  Returns:
    (x_BxD float32 [n_tokens, d_in], acts_BxF float32 [n_tokens, n_features]) with
    x = acts @ feature_directions(cfg) + noise. Identical for identical (cfg, seed); the
    first m rows do not depend on n_tokens.

  Raises:
    ConfigError: n_tokens or seed is negative.
  """
  if n_tokens < 0 or seed < 0:
    raise ConfigError(f"n_tokens={n_tokens} and seed={seed} must be non-negative")
  plan = _Plan(cfg)
  x_BxD = np.empty((n_tokens, cfg.d_in), np.float32)
  acts_BxF = np.empty((n_tokens, cfg.n_features), np.float32)
  for c, start in enumerate(range(0, n_tokens, CHUNK_TOKENS)):
    rng = _rng(cfg.seed, _SAMPLES, seed, c)
    stop = min(n_tokens, start + CHUNK_TOKENS)
    x, acts = _sample_chunk(cfg, plan, CHUNK_TOKENS, rng)  # whole chunks: prefix-stable
    x_BxD[start:stop], acts_BxF[start:stop] = x[:stop - start], acts[:stop - start]
  return x_BxD, acts_BxF


class SyntheticSource(batches.ArraySource):
  """An activation source (the interface of `sae_jax.data.batches.ArraySource`) drawn from the
  generator, holding the true features for `sae_jax.evals.ground_truth`.

  The "train" split is `sample(cfg, n_train, SPLIT_SEEDS["train"])`, "eval" is
  `sample(cfg, n_eval, SPLIT_SEEDS["eval"])`. Memory: 4 (d_in + n_features) bytes per
  token (the true activations are kept dense).

  Attributes:
    cfg: the GeneratorConfig.
    true_directions_FxD: float32 [n_features, d_in], unit rows.
    d_in, stats, meta: as for ArraySource; meta has model "synthetic", layer None and the
      generator settings under "generator".
  """

  def __init__(self, cfg: GeneratorConfig, n_train: int = 262_144, n_eval: int = 16_384):
    if n_train <= 0 or n_eval <= 0:
      raise ConfigError(f"n_train={n_train} and n_eval={n_eval} must be positive")
    self.cfg = cfg
    x_train, a_train = sample(cfg, n_train, SPLIT_SEEDS["train"])
    x_eval, a_eval = sample(cfg, n_eval, SPLIT_SEEDS["eval"])
    super().__init__({"train": x_train, "eval": x_eval})
    self._acts = {"train": a_train, "eval": a_eval}
    self.true_directions_FxD = feature_directions(cfg)
    self.meta = {"d_in": self.d_in, "model": "synthetic", "layer": None, "site": "synthetic",
                 "generator": cfg.to_dict(), "n_train_tokens": int(n_train),
                 "n_eval_tokens": int(n_eval)}

  def true_acts(self, split: str, rows: np.ndarray) -> np.ndarray:
    """acts_BxF float32 [len(rows), n_features]: the true feature activations of `rows`."""
    return self._acts[split][rows]
