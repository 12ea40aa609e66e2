"""Latent sharding: the (data, model) mesh gives the single-device result, and TopK is
exact across latent shards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sae_jax import config
from sae_jax.saes import sharded_topk
from sae_jax.training import checkpoint, sharding, trainer
from train_test import _config, _source

MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]


def test_distributed_top_k_equals_top_k():
  pre = jax.random.normal(jax.random.PRNGKey(0), (16, 256))
  ref_v, ref_i = jax.lax.top_k(pre, 8)
  for data, model in MESHES:
    mesh = sharding.make_mesh(8, model)
    with jax.set_mesh(mesh):
      x = jax.device_put(pre, NamedSharding(mesh, P("data", "model")))
      v, i = jax.jit(lambda p: sharded_topk.top_k(p, 8))(x)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(v, ref_v)


def test_latent_specs():
  assert sharding.latent_spec((64, 512), 512) == P(None, "model")  # W_enc
  assert sharding.latent_spec((512, 64), 512) == P("model", None)  # W_dec
  assert sharding.latent_spec((512,), 512) == P("model")  # b_enc, dead counters
  assert sharding.latent_spec((64,), 512) == P()  # b_pre
  assert sharding.latent_spec((), 512) == P()


def _final(tmp_path, name, architecture="topk", **train_kw):
  c = _config(**train_kw)
  c.sae.architecture = architecture
  if architecture == "jumprelu":
    c.sae.k = None
  records = trainer.train(c, _source(), str(tmp_path / name), progress=False)
  state, _ = checkpoint.Checkpointer(str(tmp_path / name / "checkpoints")).restore_untyped()
  return records, state


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_every_mesh_equals_one_device(tmp_path, architecture):
  budget = dict(token_budget=2048, checkpoint_every_steps=8)
  ref_records, ref = _final(tmp_path, "single", architecture, n_devices=1, **budget)
  for data, model in MESHES:
    records, state = _final(tmp_path, f"{data}x{model}", architecture, n_devices=8,
                            model_parallel=model, **budget)
    for a, b in zip(records, ref_records):
      assert a["normalized_mse"] == pytest.approx(b["normalized_mse"], rel=1e-4), (data, model)
      assert a["l0"] == pytest.approx(b["l0"], rel=1e-4)
    for key in ref["params"]:
      # atol 3e-5: an entry whose gradient is ~0 gets an Adam step of ~lr·sign(g), so
      # reduction-order rounding moves it by up to ~lr (BatchTopK, 8x1: 1.3e-5, 1 of 4096)
      np.testing.assert_allclose(state["params"][key], ref["params"][key], rtol=1e-4, atol=3e-5,
                                 err_msg=f"{key} on mesh {data}x{model}")
    np.testing.assert_array_equal(state["tokens_since_fired_N"], ref["tokens_since_fired_N"])


def test_params_are_laid_out_on_the_model_axis(tmp_path):
  c = config.resolve(_config(n_devices=8, model_parallel=4), 32)
  mesh = sharding.make_mesh(8, 4)
  tree = {"W_enc": jax.ShapeDtypeStruct((32, 128), jnp.float32),
          "W_dec": jax.ShapeDtypeStruct((128, 32), jnp.float32)}
  sh = sharding.state_shardings(tree, mesh, c.sae.n_latents)
  x = jax.device_put(jnp.zeros((32, 128)), sh["W_enc"])
  assert x.addressable_shards[0].data.shape == (32, 32)


def test_bad_mesh_is_an_error(tmp_path):
  with pytest.raises(config.ConfigError, match="does not divide 8 devices"):
    sharding.make_mesh(8, 3)
  c = _config(n_devices=8, model_parallel=8)
  c.sae.n_latents = 100
  with pytest.raises(config.ConfigError, match="does not split over 8 latent shards"):
    trainer.train(c, _source(), str(tmp_path), progress=False)
