"""`key=value` overrides of a config, from the command line or a sweep point."""

from __future__ import annotations

import ast
from typing import Any, Iterable, Mapping

import ml_collections

from sae_jax.errors import ConfigError


def parse(pairs: Iterable[str]) -> dict[str, Any]:
  """["sae.k=32", "data.corpus=foo.txt"] -> {"sae.k": 32, "data.corpus": "foo.txt"}.

  Values are Python literals when they parse as one, else strings."""
  out = {}
  for pair in pairs:
    if "=" not in pair:
      raise ConfigError(f"override {pair!r} is not key=value (for example sae.k=32)")
    key, value = pair.split("=", 1)
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value
  return out


def apply(c: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of c with dotted keys set. Raises ConfigError for an unknown key."""
  c = ml_collections.ConfigDict(c.to_dict())
  for key, value in overrides.items():
    node, *path, leaf = [c] + key.split(".")
    for part in path:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key {key!r}")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
      raise ConfigError(f"unknown config key {key!r}; known here: {known}")
    current = node[leaf]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(current, int) and isinstance(value, float) and value.is_integer():
      value = int(value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"{key}={value!r}: {e}") from None
  return c
