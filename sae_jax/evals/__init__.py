"""Evaluations of trained SAEs (big_vision's evaluators/ are the model).

    suite         `sae-jax eval`: the suite of Gao et al. 2024 (Sec. 4) over a run or a
                  sweep, sharing the LM passes; one-SAE measures at a training point
    measures      basics, probe loss, explainability, ablation sparsity, downstream loss
    runs          run directories -> (config, SAE on raw activations, checkpoint meta)
    shared        what the SAEs of one activation cache share (LM, tokens, probe tasks)
    splice        the LM with an SAE spliced in: downstream loss, ablation effects
    probes        1-D logistic probes on latents and their reference
    explain       n-gram explanations and their held-out precision / recall
    ground_truth  recovery of planted features: MMCS, MCC, F1, uniqueness

`TRAINING_EVALUATORS` are the trainer's extra measures at every evaluation point (the
sweep launcher passes them to `sae_jax.training.trainer.train_many`): the truth metrics
on a synthetic source, and the suite's `train.eval_measures`.

What it may import: the training layer, the SAEs, the data layer and the leaves; never
tools, sweeps or analysis (import-linter checks this, see .importlinter).
"""

from sae_jax.evals import ground_truth, suite

TRAINING_EVALUATORS = (ground_truth.source_evaluator, suite.train_measures_evaluator)
