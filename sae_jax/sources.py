"""Where a run's activations come from: a language model's (harvested into the on-disk
cache, `sae_jax.activations`) or the ground-truth generator's (`sae_jax.synthetic`)."""

from __future__ import annotations

import ml_collections

from sae_jax import config as config_lib


def get_source(cfg: ml_collections.ConfigDict, progress: bool = True):
  """The activation source of a config (`data.source`).

  Returns an object with the `sae_jax.data.ActivationSource` interface and a `meta`
  dict (model, layer, ...). Raises ConfigError as `activations.get_or_harvest` does, or
  for an invalid generator setting.
  """
  config_lib.validate(cfg)
  if cfg.data.source == "synthetic":
    from sae_jax import synthetic
    gen = synthetic.GeneratorConfig.from_config(cfg.data.generator)
    return synthetic.SyntheticSource(gen, int(cfg.data.n_train_tokens), int(cfg.data.n_eval_tokens))
  from sae_jax import activations
  return activations.get_or_harvest(cfg, progress=progress)
