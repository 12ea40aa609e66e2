"""Where activations come from, in the order data flows: a corpus -> a language model ->
the activation cache, or the synthetic generator -> batches for the trainer.

    corpus      documents (embedded Shakespeare + KJV, local files, hub datasets), split
                by document into train / eval, tokenised and packed into contexts
    lm          the language model: load (GGUF, hub, local), describe without loading,
                the residual stream of a truncated forward
    cache       the on-disk activation cache: format, writer, reader (`ActivationCache`)
    harvest     corpus -> LM -> cache (`get_or_harvest`), resumable
    synthetic   the ground-truth generator (planted features) as an activation source
    sources     picks the source of a config (`get_source`)
    batches     the `ActivationSource` interface, input normalisation and the
                deterministic, resumable batch stream

What it may import: numpy, torch, transformers and, of sae_jax, only `sae_jax.errors` and
`sae_jax.files`; it never imports the SAEs, the trainer or anything above them
(import-linter checks this, see .importlinter).
"""
