"""A run's activations can come from the ground-truth generator instead of an LM, and its
records then carry the metrics against the true features."""

import pytest

from sae_jax import config, evals, overrides
from sae_jax.data import sources, synthetic
from sae_jax.training import trainer


def test_synthetic_source_runs_and_scores_against_truth(tmp_path):
  c = overrides.apply(config.default_config(), {
      "data.source": "synthetic", "data.n_train_tokens": 60_000, "data.n_eval_tokens": 2048,
      "data.generator.n_features": 128, "data.generator.d_in": 32,
      "sae.n_latents": 256, "sae.k": 5, "sae.input_norm": "none", "train.batch_size": 256,
      "train.lr": 5e-3, "train.n_devices": 1, "train.n_eval_points": 2})
  source = sources.get_source(c)
  assert isinstance(source, synthetic.SyntheticSource) and source.d_in == 32
  records = trainer.train(c, source, str(tmp_path), progress=False,
                          evaluators=evals.TRAINING_EVALUATORS)
  last = records[-1]
  for key in ("truth_mmcs", "truth_mcc", "truth_f1", "truth_uniqueness", "truth_explained_variance"):
    assert 0 <= last[key] <= 1, key
  assert last["truth_mmcs"] > records[0]["truth_mmcs"]


def test_unknown_source_and_generator_field_are_errors():
  with pytest.raises(config.ConfigError, match="data.source='web'"):
    sources.get_source(overrides.apply(config.default_config(), {"data.source": "web"}))
  with pytest.raises(config.ConfigError, match="unknown config key 'data.generator.n_feature'"):
    overrides.apply(config.default_config(), {"data.generator.n_feature": 3})
