"""Learning-rate sweep: the optimal lr against n_latents and token budget.

Reproduces, at SmolLM2-135M scale: Gao et al. 2024, Sec. 2.3 / Fig. 9 (the best
learning rate falls with n_latents, as 1/sqrt(n) for their runs of billions of tokens),
and measures how it moves with the token budget. TopK SAEs at k = 32 with n_latents in
{256, 512, 1024, 2048} (the quickstart's sizes), each at 6 learning rates a factor 2
apart, from 1/4 to 8 times centre(n) (24 runs), each for one epoch of the quickstart's
activation cache (409,600 tokens, reused if present) and evaluated after 25,600, 51,200,
102,400, 204,800 and 409,600 tokens. The lr is constant, so the evaluation after D tokens
is exactly a run with token budget D: one sweep gives lr*(n) at five budgets.
`python -m analysis.lr_rule runs/lr_sweep/results.jsonl` takes the vertex of a parabola in
log lr around each (n, D)'s best lr and fits lr*(n, D) = a n^(-alpha) D^(-beta).

Measured (encoder init W_dec^T/sqrt(3)): lr*(n, D) = 1.386 n^-0.281 D^-0.348 (the fit's
standard errors, 0.021 on alpha and 0.017 on beta, are not coverage-checked: a guide to
precision, not an interval), from 20 interior optima (the vertex of the
three-point parabola around each best lr); every (n, D) optimum is interior. lr* at
409,600 tokens: 3.26e-3, 2.67e-3, 2.14e-3, 1.71e-3 for n = 256 .. 2048; at 25,600 tokens
6.5e-3 .. 4.9e-3. `sae_jax.config.default_lr` holds these constants. Run time: 9 min 30 s
(one data pass of 24 SAEs, 563 s of it training and evaluating) on the 2-core CPU with
other jobs holding a load average of ~12 at lower priority.

    sae-jax sweep sweeps/lr_sweep.py --saes-per-pass 24
    python -m analysis.lr_rule runs/lr_sweep/results.jsonl
"""

from sweeps import quickstart

N_LATENTS = (256, 512, 1024, 2048)
LR_MULTIPLIERS = (1 / 4, 1 / 2, 1, 2, 4, 8)


def centre(n_latents: int) -> float:
  """The grid's centre: the previous design's optimum at 409,600 tokens, 0.0088 n^-0.21."""
  return 0.0088 * n_latents ** -0.21


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "lr_sweep"
  c.sae.k = 32
  c.train.token_budget = 409_600
  c.train.n_eval_points = 5
  c.train.first_eval_fraction = 1 / 16
  c.train.checkpoint_every_steps = 400
  return c


def get_sweep():
  return [{"sae.n_latents": n, "train.lr": centre(n) * m}
          for n in N_LATENTS for m in LR_MULTIPLIERS]
