"""Config validation: every bad value is a one-line ConfigError that says what to change."""

import pytest

from sae_jax import config, overrides
from sae_jax.training import step


def _cfg(**kv):
  return overrides.apply(config.default_config(), kv)


@pytest.mark.parametrize("kv, message", [
    ({"sae.k": 64, "sae.n_latents": 32}, "k=64 exceeds n_latents=32"),
    ({"sae.architecture": "nope"}, "unknown architecture 'nope'; known: .*topk"),
    ({"sae.sparsity_coefficient": 5.0}, "sparsity_coefficient=5.0 does not apply to topk"),
    ({"sae.input_norm": "zscore"}, "input_norm='zscore' is not one of"),
    ({"train.token_budget": 10}, "smaller than one batch"),
    ({"data.dtype": "float32"}, "data.dtype='float32' is not one of"),
    ({"train.lr_warmup_steps": 10**6}, "lr_warmup_steps=1000000 is longer than the run"),
    ({"train.sparsity_warmup_fraction": 2.0}, "sparsity_warmup_fraction=2.0 must be in"),
])
def test_bad_values_are_one_line_errors(kv, message):
  with pytest.raises(config.ConfigError, match=message) as e:
    config.resolve(_cfg(**kv), d_in=576)
  assert "\n" not in str(e.value)


def test_unknown_key_is_an_error():
  with pytest.raises(config.ConfigError, match="unknown config key 'sae.kk'"):
    _cfg(**{"sae.kk": 3})


def test_derived_fields_follow_the_formulas():
  c = config.resolve(_cfg(**{"sae.n_latents": 4096}), d_in=576)
  assert c.sae.k == 32  # the TopK default
  # the measured rule lr*(n, D) = 1.386 n^-0.281 D^-0.348 (sweeps/lr_sweep.py)
  assert c.train.lr == pytest.approx(1.386 * 4096**-0.281 * c.data.n_train_tokens**-0.348)
  assert config.default_lr(4096, 10**6) < config.default_lr(1024, 10**6)  # falls with n
  assert config.default_lr(1024, 10**7) < config.default_lr(1024, 10**6)  # and with D
  assert config.resolve(_cfg(**{"sae.n_latents": 4096, "train.lr_scale": 2.0}),
                        d_in=576).train.lr == pytest.approx(2 * c.train.lr)
  assert c.train.k_aux == 256  # power of two near d_in / 2
  assert step.hyper(c).encoder_init_scale == pytest.approx(3**-0.5)  # nn.Linear's row norm
  assert c.train.token_budget == c.data.n_train_tokens
  assert config.default_k_aux(768) == 512


def test_overrides_parse_literals():
  assert overrides.parse(["sae.k=8", "train.lr=1e-3", "data.corpus=a.txt"]) == {
      "sae.k": 8, "train.lr": 1e-3, "data.corpus": "a.txt"}
  with pytest.raises(config.ConfigError, match="not key=value"):
    overrides.parse(["sae.k"])


def test_a_recipe_fills_what_the_config_leaves_unset_and_overrides_win():
  c = config.resolve(_cfg(**{"sae.architecture": "jumprelu", "sae.recipe": "gemmascope2024",
                             "sae.input_norm": "unit_norm", "train.adam_eps": 1e-6}), d_in=576)
  assert c.train.adam_b1 == 0.0 and c.train.adam_b2 == 0.999  # Gemma Scope's Adam
  assert c.train.lr_schedule == "warmup_cosine" and c.train.sparsity_warmup_fraction == 0.01
  assert c.sae.input_norm == "unit_norm" and c.train.adam_eps == 1e-6  # the user's values
  # no recipe: the defaults, the architecture's own included
  d = config.resolve(_cfg(**{"sae.architecture": "jumprelu"}), d_in=576)
  assert (d.train.adam_b1, d.train.lr_schedule, d.sae.input_norm) == (0.9, "constant", "unit_norm")
  assert d.sae.initial_threshold == 0.05 and d.sae.penalty == "l0"  # issue 19: units of s
  # the recipe changes the step's hyperparameters
  t = config.resolve(_cfg(**{"sae.architecture": "jumprelu", "sae.recipe": "conerly2025"}))
  assert step.hyper(t).penalty == "tanh" and step.hyper(t).tanh_c == 4.0
  assert t.train.max_grad_norm == 1.0


def test_every_recipe_resolves_for_its_architecture():
  for name in config.saes.recipe_names():
    arch, settings = config.saes.recipe(name)
    c = config.resolve(_cfg(**{"sae.architecture": arch, "sae.recipe": name}), d_in=576)
    for key, value in settings.items():
      group, field = key.split(".")
      assert c[group][field] == (tuple(value) if isinstance(value, list) else value), (name, key)


@pytest.mark.parametrize("kv, message", [
    ({"sae.recipe": "gao2025"}, "unknown recipe 'gao2025'; known: bricken2023, .*gao2024, gemmascope2024, .*templeton2024"),
    ({"sae.recipe": "templeton2024"}, "is a recipe for relu_l1, not topk; set sae.architecture=relu_l1"),
])
def test_bad_recipes_are_one_line_errors(kv, message):
  with pytest.raises(config.ConfigError, match=message) as e:
    config.resolve(_cfg(**kv))
  assert "\n" not in str(e.value)
