"""Every architecture of the zoo recovers the generator's true features (the issue's
acceptance check): trained at a CI-sized budget on `sae_jax.synthetic` (d_in = 64, 256 true
features in superposition, mean L0 5), each reaches mean max cosine similarity >= 0.9 and
MCC >= 0.7 against the ground truth (`sae_jax.ground_truth`).

All eight SAEs train in one pass over the data (`trainer.train_many`), each with its paper's
input normalisation (`Architecture.input_norm`) and its own sparsity knob, learning rate
and token budget below. The budgets are tiny next to the papers' (hundreds of thousands of
tokens, not billions), so the settings that differ from the defaults are the ones that make
a short run converge: a larger learning rate (JumpReLU's default starting threshold,
0.05 in units of the input scale, is already near the activations' scale). Numbers measured on a 2-core CPU (MMCS / MCC): topk 0.978 / 0.840,
batchtopk 0.982 / 0.857, matryoshka_batchtopk 0.974 / 0.850, relu_l1 0.981 / 0.870,
relu_l1_unit_norm 0.978 / 0.869, kl 0.960 / 0.825, jumprelu 0.950 / 0.813, gated 0.976 /
0.854 (relu_l1, jumprelu and gated re-measured with the scale-aware units of issue 19);
the whole file takes about 2 minutes.
"""

import os
import time

import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax import config, saes
from sae_jax.data import batches, synthetic
from sae_jax.evals import ground_truth
from sae_jax.training import checkpoint, step, trainer

MMCS_MIN, MCC_MIN = 0.9, 0.7
N_LATENTS, BATCH = 512, 256
SHORT, LONG = 400_384, 600_064  # token budgets (1564 and 2344 steps of 256 tokens)

# name -> (sparsity knob value, learning rate, token budget, other sae.* settings)
SETTINGS = {
    "topk": (5, 5e-3, SHORT, {}),  # k = the true mean L0
    "batchtopk": (5, 5e-3, SHORT, {}),
    "matryoshka_batchtopk": (5, 5e-3, SHORT, {}),  # default prefixes 8, 32, 128, 512
    # mean_norm inputs: lambda in units of s (8.4 here; 0.03 in the pre-issue-19 units)
    "relu_l1": (0.25, 5e-3, SHORT, {}),
    "relu_l1_unit_norm": (0.25, 5e-3, SHORT, {}),
    # rho ~ the mean activation a latent of a true feature can have on unit-norm inputs
    "kl": (0.3, 5e-3, SHORT, {"target_activation": 1e-3}),
    "jumprelu": (0.05, 5e-3, LONG, {}),  # theta_0 the default 0.05 s (0.42 here)
    "gated": (0.42, 5e-3, LONG, {}),  # 0.05 in the pre-issue-19 units
}


def _config(name: str) -> config.ml_collections.ConfigDict:
  arch = saes.get(name)
  knob, lr, budget, extra = SETTINGS[name]
  c = config.default_config()
  c.sae.architecture = name
  c.sae.n_latents = N_LATENTS
  c.sae[arch.knob] = knob
  c.sae.input_norm = arch.input_norm
  c.sae.geometric_median_samples = 4096
  for key, value in extra.items():
    c.sae[key] = value
  c.train.batch_size, c.train.token_budget, c.train.lr = BATCH, budget, lr
  c.train.dead_tokens = 20_000
  c.train.n_eval_points = 1
  c.train.checkpoint_every_steps = 10**6
  c.train.n_devices = 1
  return c


def _truth_metrics(c, source, run_dir) -> dict:
  """Ground-truth metrics of a trained run on the eval split, in the SAE's input space."""
  c = config.resolve(c, source.d_in)
  arch, hp = saes.get(c.sae.architecture), step.hyper(c)
  state, _ = checkpoint.Checkpointer(os.path.join(run_dir, "checkpoints")).restore_untyped()
  rows = np.arange(source.n_tokens("eval"))
  scale = batches.norm_scale(c.sae.input_norm, source.stats, source.d_in)
  x = batches.normalize(jnp.asarray(source.read("eval", rows)), c.sae.input_norm, scale)
  z = arch.encode(state["params"], x, state["extras"], hp)
  x_hat = arch.decode(state["params"], z)
  return ground_truth.evaluate_against_truth(
      np.asarray(state["params"]["W_dec"]), np.asarray(z), np.asarray(x), np.asarray(x_hat),
      source.true_directions_FxD, source.true_acts("eval", rows))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  """{name: (ground-truth metrics, final record)} of every architecture."""
  assert sorted(SETTINGS) == saes.names(), "every registered architecture is checked"
  t0 = time.time()
  source = synthetic.SyntheticSource(synthetic.GeneratorConfig(d_in=64, n_features=256),
                                     n_train=200_704, n_eval=8192)
  names = sorted(SETTINGS)
  configs = [_config(n) for n in names]
  dirs = [str(tmp_path_factory.mktemp(n)) for n in names]
  records = trainer.train_many(configs, source, dirs, progress=False)
  out = {n: (_truth_metrics(c, source, d), r[-1]) for n, c, d, r in zip(names, configs, dirs, records)}
  print(f"\nzoo on the generator ({time.time() - t0:.0f} s):")
  for n, (m, r) in out.items():
    print(f"  {n:22s} MMCS {m['mmcs']:.3f}  MCC {m['mcc']:.3f}  F1 {m['f1']:.2f}  "
          f"L0 {r['l0']:5.1f}  normalized MSE {r['normalized_mse']:.3f}")
  return out


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_architecture_recovers_the_true_features(zoo, name):
  m, record = zoo[name]
  assert m["mmcs"] >= MMCS_MIN, (name, m)
  assert m["mcc"] >= MCC_MIN, (name, m)
  assert 1 <= record["l0"] <= 40, (name, record["l0"])  # sparse, on the same L0 axis
