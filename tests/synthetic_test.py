"""The synthetic generator: reproducible, superposed, Zipf-ranked, hierarchical, correlated."""

import ml_collections
import numpy as np
import pytest
import scipy.stats

from sae_jax.data import batches, synthetic
from sae_jax.errors import ConfigError


def test_same_seed_same_samples_and_prefix_stable():
  cfg = synthetic.GeneratorConfig()
  x1, a1 = synthetic.sample(cfg, 20_000, seed=0)
  x2, a2 = synthetic.sample(cfg, 20_000, seed=0)
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(a1, a2)
  x3, _ = synthetic.sample(cfg, 5_000, seed=0)  # a shorter sample is a prefix
  np.testing.assert_array_equal(x3, x1[:5_000])
  x4, _ = synthetic.sample(cfg, 20_000, seed=1)
  assert not np.allclose(x1, x4)
  x5, _ = synthetic.sample(synthetic.GeneratorConfig(seed=1), 20_000, seed=0)
  assert not np.allclose(x1, x5)
  assert x1.dtype == a1.dtype == np.float32
  assert x1.shape == (20_000, 64) and a1.shape == (20_000, 256)


def test_superposition_and_x_is_acts_times_directions():
  cfg = synthetic.GeneratorConfig(noise_std=0.0)
  dirs = synthetic.feature_directions(cfg)
  assert dirs.shape == (cfg.n_features, cfg.d_in) and cfg.n_features > cfg.d_in
  np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1, atol=1e-5)
  x, acts = synthetic.sample(cfg, 2_000, seed=0)
  np.testing.assert_allclose(x, acts @ dirs, atol=1e-4)
  assert acts.min() >= 0
  active = acts[acts > 0]
  assert active.min() >= cfg.magnitude_min
  assert active.max() <= cfg.magnitude_min + cfg.magnitude_scale


def test_noise_has_planted_std():
  cfg = synthetic.GeneratorConfig(noise_std=0.05)
  x, acts = synthetic.sample(cfg, 20_000, seed=0)
  resid = x - acts @ synthetic.feature_directions(cfg)
  assert abs(resid.std() - 0.05) < 0.002


@pytest.mark.parametrize("exponent", [0.5, 1.0])
def test_firing_frequencies_follow_the_planted_zipf_law(exponent):
  cfg = synthetic.GeneratorConfig(zipf_exponent=exponent)
  _, acts = synthetic.sample(cfg, 200_000, seed=0)
  p_hat = (acts > 0).mean(0)
  rank = np.arange(1, cfg.n_features + 1)
  assert abs((acts > 0).sum(1).mean() - cfg.mean_active) < 0.05  # the true L0
  assert scipy.stats.spearmanr(rank, p_hat).statistic < -0.97
  slope = np.polyfit(np.log(rank), np.log(p_hat), 1)[0]
  assert abs(slope + exponent) < 0.05, slope
  np.testing.assert_allclose(p_hat, synthetic.firing_probabilities(cfg), rtol=0.25)


def test_children_fire_only_with_their_parent_and_exclude_siblings():
  cfg = synthetic.GeneratorConfig(n_parents=8, children_per_parent=3)
  parent_F = synthetic.parents(cfg)
  assert (parent_F >= 0).sum() == 24 and set(parent_F[parent_F >= 0]) == set(range(8))
  _, acts = synthetic.sample(cfg, 100_000, seed=0)
  fires = acts > 0
  for j in range(cfg.n_parents):
    kids = np.flatnonzero(parent_F == j)
    assert len(kids) == 3
    assert not np.any(fires[:, kids] & ~fires[:, [j]])  # only with the parent
    assert fires[:, kids].sum(1).max() == 1  # at most one sibling, and some fire
    # each child fires on the planted fraction of its parent's tokens
    q_hat = fires[fires[:, j]][:, kids].mean(0)
    q = synthetic.firing_probabilities(cfg)[kids] / synthetic.firing_probabilities(cfg)[j]
    np.testing.assert_allclose(q_hat, q, atol=0.02)


def _within_group_correlation(correlation):
  cfg = synthetic.GeneratorConfig(correlation=correlation, n_parents=0, group_size=4)
  _, acts = synthetic.sample(cfg, 50_000, seed=0)
  c_FxF = np.corrcoef((acts > 0).T)
  group_F = synthetic.groups(cfg)
  same = (group_F[:, None] == group_F[None, :]) & ~np.eye(cfg.n_features, dtype=bool)
  other = group_F[:, None] != group_F[None, :]
  return c_FxF[same].mean(), c_FxF[other].mean()


def test_correlation_knob_correlates_firing_within_groups_only():
  within_on, across_on = _within_group_correlation(0.5)
  within_off, across_off = _within_group_correlation(0.0)
  assert within_on > 0.05, within_on
  assert abs(across_on) < 0.005 and abs(within_off) < 0.005 and abs(across_off) < 0.005


def test_groups_partition_the_roots():
  cfg = synthetic.GeneratorConfig(group_size=4)
  group_F = synthetic.groups(cfg)
  roots = synthetic.parents(cfg) < 0
  assert np.all(group_F[~roots] == -1)
  assert np.all(np.bincount(group_F[roots]) <= 4)


def test_exponential_magnitudes():
  cfg = synthetic.GeneratorConfig(magnitude="exponential", magnitude_min=1.0, magnitude_scale=0.5)
  _, acts = synthetic.sample(cfg, 20_000, seed=0)
  active = acts[acts > 0]
  assert active.min() >= 1.0 and abs(active.mean() - 1.5) < 0.02


def test_from_config_and_validation():
  c = ml_collections.ConfigDict({"d_in": 32, "n_features": 128, "correlation": 0.0})
  cfg = synthetic.GeneratorConfig.from_config(c, seed=3)
  assert (cfg.d_in, cfg.n_features, cfg.seed) == (32, 128, 3)
  assert synthetic.GeneratorConfig.from_config(cfg.to_dict()) == cfg
  bad = [dict(d_in=0), dict(mean_active=0), dict(correlation=1.0), dict(magnitude="gamma"),
         dict(mean_active=300),  # the most frequent feature would fire with p > 1
         dict(zipf_exponent=0.0),  # children would out-fire their parent
         dict(n_parents=100), dict(noise_std=-1), dict(magnitude_min=0)]
  for kw in bad:
    with pytest.raises(ConfigError):
      synthetic.GeneratorConfig(**kw)
  with pytest.raises(ConfigError, match="unknown generator field"):
    synthetic.GeneratorConfig.from_config({"n_feature": 10})


def test_source_has_the_array_source_interface():
  cfg = synthetic.GeneratorConfig()
  src = synthetic.SyntheticSource(cfg, n_train=4096, n_eval=1024)
  assert isinstance(src, batches.ArraySource)
  assert src.d_in == 64 and src.n_tokens("train") == 4096 and src.n_tokens("eval") == 1024
  assert src.meta["model"] == "synthetic" and src.meta["layer"] is None
  assert src.meta["generator"] == cfg.to_dict()
  assert set(src.stats) >= {"mean", "mean_norm", "mean_sq_norm", "total_variance"}
  x_train, a_train = synthetic.sample(cfg, 4096, synthetic.SPLIT_SEEDS["train"])
  rows = np.array([3, 10, 4000])
  np.testing.assert_array_equal(src.read("train", rows), x_train[rows])
  np.testing.assert_array_equal(src.true_acts("train", rows), a_train[rows])
  assert not np.allclose(src.read("eval", rows[:2]), x_train[rows[:2]])  # eval is a different draw
  np.testing.assert_array_equal(src.true_directions_FxD, synthetic.feature_directions(cfg))
