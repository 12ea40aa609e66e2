"""The registry of architectures: name -> `Architecture`.

Adding an architecture is one module in this package (its functions, its `Hyper`
subclass and its ARCH; CONTRIBUTING.md) plus one entry in BUILTIN below. Code outside the
package (a test, a notebook, a plug-in) can add one at run time with `register`.
"""

from __future__ import annotations

from typing import Any

from sae_jax.errors import ConfigError
from sae_jax.saes import base, batchtopk, gated, jumprelu, kl, matryoshka, relu_l1, relu_l1_unit_norm, topk

BUILTIN: tuple[base.Architecture, ...] = (
    topk.ARCH,
    batchtopk.ARCH,
    matryoshka.ARCH,
    relu_l1.ARCH,
    relu_l1_unit_norm.ARCH,
    kl.ARCH,
    jumprelu.ARCH,
    gated.ARCH,
)

_REGISTRY: dict[str, base.Architecture] = {a.name: a for a in BUILTIN}


def register(arch: base.Architecture) -> base.Architecture:
  """Add `arch` under its name (replacing one of the same name). Its hyperparameters join
  the config's `sae` block the next time `sae_jax.config.default_config` is called.

  Raises ConfigError if it declares a hyperparameter that another architecture declares
  with a different type, or the base `Hyper` fields are not its base.
  """
  if not issubclass(arch.hyper, base.Hyper):
    raise ConfigError(f"architecture {arch.name!r}: its hyper class must subclass "
                      "sae_jax.saes.base.Hyper")
  others = {f.name: (f.type, a.name) for a in _REGISTRY.values() if a.name != arch.name
            for f in a.fields()}
  taken = {r: a.name for a in _REGISTRY.values() if a.name != arch.name for r in a.recipes}
  for r in arch.recipes:
    if r in taken:
      raise ConfigError(f"architecture {arch.name!r} declares recipe {r!r}, already "
                        f"{taken[r]!r}'s; rename it")
  for f in arch.fields():
    if f.name in others and others[f.name][0] is not f.type:
      raise ConfigError(f"architecture {arch.name!r} declares sae.{f.name} as "
                        f"{f.type.__name__}, but {others[f.name][1]!r} as "
                        f"{others[f.name][0].__name__}; rename it")
  _REGISTRY[arch.name] = arch
  return arch


def unregister(name: str) -> None:
  """Remove an architecture added by `register` (a test's toy); built-ins stay.

  Raises ConfigError for a built-in or unknown name."""
  if name not in _REGISTRY or any(a.name == name for a in BUILTIN):
    raise ConfigError(f"{name!r} is not a registered plug-in architecture")
  del _REGISTRY[name]


def names() -> list[str]:
  """The registered names, sorted."""
  return sorted(_REGISTRY)


def architectures() -> list[base.Architecture]:
  """The registered architectures in registration order (BUILTIN's, then `register`'s)."""
  return list(_REGISTRY.values())


def get(name: str) -> base.Architecture:
  """The architecture called `name`. Raises ConfigError listing the known ones."""
  if name not in _REGISTRY:
    raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(names())}")
  return _REGISTRY[name]


def recipe_names(architecture: str | None = None) -> list[str]:
  """The recipes of every architecture (or of `architecture`), sorted."""
  return sorted(r for a in _REGISTRY.values() if architecture in (None, a.name) for r in a.recipes)


def recipe(name: str) -> tuple[str, dict[str, Any]]:
  """(architecture name, {dotted config key: value}) of the recipe called `name`.

  Raises ConfigError listing the known recipes."""
  for arch in _REGISTRY.values():
    if name in arch.recipes:
      return arch.name, dict(arch.recipes[name])
  raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")


def default_recipe(architecture: str) -> str | None:
  """The architecture's first declared recipe (its paper's; the zoo sweep's), or None."""
  return next(iter(get(architecture).recipes), None)


def config_fields() -> dict[str, tuple[Any, type]]:
  """The config's architecture fields: name -> (default, type), the union over every
  registered architecture of the hyperparameters it declares, plus the base `Hyper`'s
  `sae` fields (`base.SAE_FIELDS`, default None).

  A field that is some architecture's sparsity knob defaults to None (each architecture
  resolves it to its own default, `sae_jax.config.resolve`), as does one whose declared
  defaults disagree; otherwise the field takes the declared default.
  """
  knobs = {a.knob for a in _REGISTRY.values()}
  # the base fields every architecture reads from the `sae` block (input_scale), unset:
  # `sae_jax.config.resolve` measures them
  out: dict[str, tuple[Any, type]] = {name: (None, kind) for name, kind in base.SAE_FIELDS.items()}
  for arch in _REGISTRY.values():
    for f in arch.fields():
      default = None if f.name in knobs else f.default
      if f.name in out and out[f.name][0] != default:
        default = None
      out[f.name] = (default, f.type)
  return out
