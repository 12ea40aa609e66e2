"""What a researcher does with a trained SAE: take it elsewhere, look inside, steer.

    export            a run -> sae.safetensors + config.json (portable, numpy-loadable)
    export_reference  the numpy-only loader and encoders (copy it anywhere)
    interchange       SAELens and OpenAI formats in and out; one loader for any SAE on disk
                      or on the Hugging Face Hub (hf://owner/name[/subdir])
    hub               `sae-jax push`: a run's folder for the Hub (SAELens layout, our
                      export, records, sparsity.safetensors) and its upload
    viewer            a static HTML feature viewer over the held-out split
    steering          generate with latents clamped at the hooked layer

What it may import: the training layer (checkpoints), the SAEs, the data layer and the
leaves; never evals, sweeps or analysis (import-linter checks this, see .importlinter).
"""
