"""Adding an architecture is one module plus one registry line (CONTRIBUTING.md): a toy
architecture defined in this file, registered at run time, trains through the same public
path a sweep uses (`sae-jax sweep`), and its own hyperparameter reaches the config, the
`--set` keys, the trainer, the records and the export without any other file changing."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae_jax import cli, config, overrides, saes
from sae_jax.saes import base, topk
from sae_jax.tools import interchange


@dataclasses.dataclass(frozen=True)
class ShrunkTopKHyper(base.Hyper):
  """The toy's hyperparameters: TopK's k, and a shrinkage no other architecture has."""
  k: int = 8  # active latents per token (the knob)
  toy_shrink: float = 0.0  # subtracted from every kept activation, then ReLU


def _encode(params, x_BxD, extras, hp):
  del extras
  z_BxN = topk.encode_topk(params, x_BxD, hp.k)
  return jnp.where(z_BxN > 0, jax.nn.relu(z_BxN - hp.toy_shrink), 0.0)


def _loss(params, x_BxD, extras, hp, *, variance=1.0, dead_N=None):
  del dead_N
  z_BxN = _encode(params, x_BxD, extras, hp)
  nmse = base.normalized_mse(x_BxD, base.decode(params, z_BxN), variance)
  fired_N, l0 = base.stats(z_BxN)
  zero = jnp.zeros((), jnp.float32)
  return base.Output(nmse, nmse, zero, zero, fired_N, l0, extras)


TOY = base.Architecture(
    name="toy_shrunk_topk", hyper=ShrunkTopKHyper, knob="k", unit_norm_decoder=True,
    init=lambda key, d_in, n, b_pre, hp: base.tied_init(key, d_in, n, b_pre),
    init_extras=base.no_extras, encode=_encode, decode=base.decode, loss=_loss,
    paper="this test", encode_formula="z = ReLU(TopK_k(pre) - toy_shrink) on the kept latents")

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "toy"
  c.out_dir = {out!r}
  c.data.source = "synthetic"
  c.data.generator.d_in = 16
  c.data.n_train_tokens, c.data.n_eval_tokens = 8192, 1024
  c.sae.architecture = "toy_shrunk_topk"
  c.sae.n_latents, c.sae.input_norm, c.sae.geometric_median_samples = 64, "none", 1024
  c.train.batch_size, c.train.token_budget, c.train.lr = 256, 8192, 3e-3
  c.train.n_eval_points, c.train.n_devices = 2, 1
  return c


def get_sweep():
  return [{{"sae.toy_shrink": 0.0}}, {{"sae.toy_shrink": 0.05}}]
'''


@pytest.fixture
def toy():
  saes.register(TOY)
  yield TOY
  saes.unregister(TOY.name)


def test_toy_architecture_joins_the_config_and_the_registry(toy):
  assert toy.name in saes.names() and saes.get(toy.name) is toy
  c = config.default_config()
  assert c.sae.toy_shrink is None  # a field of the sae block, filled by resolve...
  own = config.resolve(overrides.apply(c, {"sae.architecture": toy.name}), 16)
  assert own.sae.toy_shrink == 0.0  # ...with the default declared once, in the module above
  c = overrides.apply(c, {"sae.architecture": toy.name, "sae.toy_shrink": 0.25})
  r = config.resolve(c, 16)
  assert r.sae.k == 8  # the toy's own default for the knob
  hp = toy.make_hyper(r.sae, n_latents=r.sae.n_latents)
  assert isinstance(hp, ShrunkTopKHyper) and hp.toy_shrink == 0.25 and hp.k == 8
  with pytest.raises(config.ConfigError, match="does not apply to toy_shrunk_topk"):
    config.resolve(overrides.apply(c, {"sae.sparsity_coefficient": 0.1}))


def test_toy_architecture_trains_through_the_sweep_path(toy, tmp_path, capsys):
  path = tmp_path / "toy_sweep.py"
  path.write_text(SWEEP.format(out=str(tmp_path / "runs")))
  assert cli.main(["sweep", str(path), "--no-fit"]) == 0, capsys.readouterr().err
  out = tmp_path / "runs" / "toy"
  with open(out / "results.jsonl") as f:
    records = [json.loads(line) for line in f]
  finals = [r for r in records if r["final"]]
  assert len(finals) == 2 and {r["architecture"] for r in records} == {toy.name}
  by_shrink = {r["config"]["sae"]["toy_shrink"]: r for r in finals}
  assert set(by_shrink) == {0.0, 0.05}
  for shrink, rec in by_shrink.items():  # it learned something, at its own sparsity
    first = [r for r in records if r["run_id"] == rec["run_id"]][0]
    assert rec["normalized_mse"] < first["normalized_mse"] < 1.5
    assert 0 < rec["l0"] <= 8
    export = out / rec["run_id"] / "export"
    with open(export / "config.json") as f:
      cfg = json.load(f)
    assert cfg["architecture"] == toy.name and cfg["hyperparameters"] == {"k": 8, "toy_shrink": shrink}
    assert cfg["encode"] == toy.encode_formula
    params, loaded = interchange.load(str(export))  # no numpy twin: the registry's encode
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    z, norm = interchange.encode(params, loaded, x)
    assert z.shape == (5, 64) and ((z > 0).sum(1) <= 8).all()
    assert np.all(z[z > 0] >= 0) and interchange.decode(params, loaded, z, norm).shape == (5, 16)
  # the two points differ only in the toy's hyperparameter, so they are two runs
  assert len({r["run_id"] for r in finals}) == 2 and os.path.isdir(out / finals[0]["run_id"])
