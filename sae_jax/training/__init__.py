"""Training, from a config and an activation source to run records and checkpoints.

    step        the pure train step (`train_step`, jitted once by `make_train_step`),
                the train state pytree, `init_state`, the architecture's `Hyper` of a
                config (`hyper`)
    trainer     `train` / `train_many`: one or many SAEs per pass over the data, the
                evaluation schedule, records, checkpoints, exact resume
    metrics     normalized MSE, MSE, L0, dead / dense latents on the held-out split
    tracking    training curves and held-out metrics to TensorBoard (and W&B)
    optimizer   Adam after the decoder-gradient projection (Gao et al. 2024)
    checkpoint  Orbax CheckpointManager: params, optimizer state, data position
    sharding    the (data, model) mesh and the state's shardings
    distributed jax.distributed for multi-host runs; which rows a process reads
    host_memory glibc settings so XLA's CPU buffers are not page-faulted in every step
    flops       how training compute is counted (6 x 2 d_in n_latents per token)

What it may import: jax, optax, orbax and, of sae_jax, the config, the SAEs (`saes`), the
activation sources (`data`) and the leaves; never the evaluations, tools, sweeps or
analysis above it (import-linter checks this, see .importlinter).
"""
