"""sae_jax: sparse autoencoders on language-model activations, in JAX, and their scaling
laws. The folder tree is the architecture; data flows down this list and imports run up it
(each subpackage's docstring says what it may import; import-linter checks it):

    errors, files, signals  leaves: user-facing errors; the one atomic writer, JSON and
                    JSONL; SIGTERM/SIGINT as a stop at a safe boundary
    saes/           the Architecture interface, the registry, one module per SAE, the
                    sparse TopK step and its kernels
    data/           corpus -> language model -> activation cache | synthetic -> batches
    config, overrides  the experiment config (blocks declared by the layers above), `--set`
    training/       train step, trainer, optimizer, checkpoints, sharding, multi-host
    evals/          the evaluation suite, ground-truth metrics
    tools/          export, interchange, viewer, steering
    cli             `sae-jax`: the composition root, the one module that may import the
                    sweeps/ and analysis/ packages beside this one
"""

import importlib.metadata

try:
  __version__ = importlib.metadata.version("sae_jax")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
  __version__ = "unknown"
