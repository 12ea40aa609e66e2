"""`key=value` overrides of a config, from the command line or a sweep point.

The boundary is typed once, here: every field keeps the type its config declares (a plain
value's own type, or a `FieldReference`'s `field_type`, where None also means "derive
it"), and a value of another type is a one-line `ConfigError` naming the key, the value
and the type wanted -- never a `TypeError` further down.
"""

from __future__ import annotations

import ast
import copy
import math
import numbers
from typing import Any, Iterable, Mapping

import ml_collections

from sae_jax.errors import ConfigError

_TYPE_WORDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
               tuple: "a tuple, e.g. ('a', 'b')"}


def parse(pairs: Iterable[str]) -> dict[str, Any]:
  """["sae.k=32", "data.corpus=foo.txt"] -> {"sae.k": 32, "data.corpus": "foo.txt"}.

  Values are Python literals when they parse as one, else strings.

  Raises:
    ConfigError: a pair without "=" or with an empty key.
  """
  out = {}
  for pair in pairs:
    if "=" not in pair:
      raise ConfigError(f"override {pair!r} is not key=value (for example sae.k=32)")
    key, value = pair.split("=", 1)
    if not key.strip():
      raise ConfigError(f"override {pair!r} has no key (for example sae.k=32)")
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
      out[key.strip()] = value
  return out


def declared_type(node: ml_collections.ConfigDict, leaf: str) -> tuple[type | None, bool]:
  """(declared type, None allowed) of field `leaf` of `node`: a FieldReference's
  field_type (None allowed: it means "derived"), else the type of the current value
  (None for a nested group; a field whose value is None takes anything)."""
  field = node._fields[leaf]  # pylint: disable=protected-access  # the declared field itself
  if isinstance(field, ml_collections.FieldReference):
    return field.get_type(), True
  if field is None:
    return None, True
  return type(field), False


def coerce(key: str, value: Any, kind: type | None, optional: bool) -> Any:
  """`value` as the declared type `kind` of config key `key` (ints are numbers, integral
  floats are integers, lists are tuples).

  Raises:
    ConfigError: a value of another type, or a non-finite number; the message names the
      key, the value and the type wanted.
  """
  if value is None:
    if optional:
      return None
    raise ConfigError(f"{key}=None: give {_TYPE_WORDS.get(kind, kind.__name__)}")
  if kind is None:
    return value
  if issubclass(kind, ml_collections.ConfigDict):
    raise ConfigError(f"{key} is a group of settings; set its fields, e.g. "
                      f"{key}.<field>=..., not {key}={value!r}")
  want = _TYPE_WORDS.get(kind, kind.__name__)
  bad = ConfigError(f"{key}={value!r} is not {want}; give {want}")
  if kind is bool:
    if isinstance(value, bool):
      return value
    raise bad
  if isinstance(value, bool):
    raise bad
  if kind is int:
    if isinstance(value, numbers.Integral):
      return int(value)
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise bad
  if kind is float:
    if not isinstance(value, numbers.Real):
      raise bad
    if not math.isfinite(value):
      raise ConfigError(f"{key}={value!r} is not a finite number; give a finite value")
    return float(value)
  if kind is tuple:
    if isinstance(value, (tuple, list)):
      return tuple(value)
    raise bad
  if kind is str:
    if not isinstance(value, str):
      raise ConfigError(f"{key}={value!r} is not a string; quote it, e.g. {key}='{value}'")
    if "\x00" in value:
      raise ConfigError(f"{key}={value!r} contains a NUL character; remove it")
    return value
  if isinstance(value, kind):
    return value
  raise bad


def apply(c: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of c with dotted keys set, each value checked against its field's declared
  type (`coerce`). The copy is deep and keeps every `FieldReference`, so declared types
  and any formulas between fields survive.

  Raises:
    ConfigError: an unknown key, or a value of the wrong type.
  """
  c = copy.deepcopy(c)
  for key, value in overrides.items():
    if not isinstance(key, str) or not key:
      raise ConfigError(f"config key {key!r} is not a dotted name such as sae.k")
    node, *path, leaf = [c] + key.split(".")
    for part in path:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key {key!r}")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
      raise ConfigError(f"unknown config key {key!r}; known here: {known}")
    kind, optional = declared_type(node, leaf)
    value = coerce(key, value, kind, optional)
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"{key}={value!r}: {e}") from None
  return c
