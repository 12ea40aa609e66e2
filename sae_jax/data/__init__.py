"""Where activations come from, in the order data flows: a corpus -> a language model ->
the activation cache, or the synthetic generator -> batches for the trainer.

    corpus      documents (embedded Shakespeare + KJV, local files, hub datasets), split
                by document into train / eval, tokenised and packed into contexts
    lm          the language model: load (GGUF, hub, local), describe without loading,
                the residual stream of a truncated forward, any (layer, hook site)
                from one forward (`activations`)
    cache       the activation cache, local (.npy shards) or at a URL (tensorstore
                zarr3): format, writer, reader (`ActivationCache`)
    harvest     corpus -> LM -> cache (`get_or_harvest`), resumable; many (layer, site)
                caches from one LM pass, by one process or several (`get_or_harvest_many`)
    synthetic   the ground-truth generator (planted features) as an activation source
    sources     picks the source of a config (`get_source`)
    settings    the checks of the config's data block; the hook sites (`SITES`)
    batches     the `ActivationSource` interface, input normalisation and the
                deterministic, resumable batch stream

What it may import: numpy, torch, transformers, tensorstore and, of sae_jax, only `sae_jax.errors` and
`sae_jax.files`; it never imports the SAEs, the trainer or anything above them
(import-linter checks this, see .importlinter).
"""
