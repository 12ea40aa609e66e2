"""Where a run's activations come from: a language model's (harvested into the on-disk
cache, `sae_jax.data.harvest`, or with data.cache="none" computed as training reads them,
`sae_jax.data.on_the_fly`) or the ground-truth generator's (`sae_jax.data.synthetic`)."""

from __future__ import annotations

import ml_collections

from sae_jax.data import harvest, on_the_fly, settings, synthetic


def get_source(cfg: ml_collections.ConfigDict, progress: bool = True):
  """The activation source of a validated config (`data.source`).

  Returns an object with the `sae_jax.data.batches.ActivationSource` interface and a
  `meta` dict (model, layer, ...): an `ActivationCache`, an `OnTheFlySource`
  (data.cache="none": loads the LM, writes no activations) or a `SyntheticSource`.
  Raises ConfigError as `harvest.get_or_harvest` does, or for an invalid data or
  generator setting.
  """
  settings.validate(cfg.data)
  if cfg.data.source == "synthetic":
    gen = synthetic.GeneratorConfig.from_config(cfg.data.generator)
    return synthetic.SyntheticSource(gen, int(cfg.data.n_train_tokens), int(cfg.data.n_eval_tokens))
  if cfg.data.get("cache", "disk") == "none":
    return on_the_fly.OnTheFlySource(cfg, progress=progress)
  return harvest.get_or_harvest(cfg, progress=progress)
