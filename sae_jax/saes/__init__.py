"""SAE architectures: the interface, the registry, one module per architecture (SAELens's
`saes/` is the model), and the sparse TopK step with its kernels.

    base            the `Architecture` interface (functions, shapes, contracts), the base
                    `Hyper`, and the math every architecture shares
    registry        name -> Architecture; `config_fields` feeds the config's `sae` block
    topk, batchtopk, matryoshka, relu_l1, relu_l1_unit_norm, kl, jumprelu, gated
                    one architecture each, with its `Hyper` (hyperparameters and defaults,
                    declared once) and its paper's equations in the docstring
    sparse          the sparse TopK-family train step's ops (+ kernels/: C++ for the CPU)
    sharded_topk    the exact TopK across latent shards; the mesh axis names
    geometric_median  b_pre's starting point (Gao et al. 2024, Sec. A.1)

What it may import: jax, numpy and, of sae_jax, only `sae_jax.errors` and `sae_jax.files`
(nothing of data, training or above; import-linter checks this, see .importlinter).

    from sae_jax import saes
    arch = saes.get("topk")                           # an Architecture
    hp = arch.make_hyper({"k": 32}, n_latents=4096)   # its Hyper
"""

from sae_jax.saes.base import Architecture, Hyper, Output, Params
from sae_jax.saes.registry import (architectures, config_fields, default_recipe, get, names,
                                   recipe, recipe_names, register, unregister)

__all__ = ["Architecture", "Hyper", "Output", "Params", "architectures", "config_fields",
           "default_recipe", "get", "names", "recipe", "recipe_names", "register", "unregister"]
