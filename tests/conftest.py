"""Test setup: 8 forced host devices, so the sharded step can be compared with the
1-device step in one process (the flag must be set before JAX starts)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # pylint: disable=wrong-import-position
# submitit configures logging when first imported (logging.config.dictConfig), which closes
# every existing handler. absl's handler (installed by orbax and jax) closes its stream on
# close unless that stream is the *current* sys.stderr, and under pytest's capture it is
# an earlier capture file: a test that imported submitit late (any `sae-jax sweep` run in
# process) closed pytest's own stderr ("I/O operation on closed file"). Importing submitit
# here, before any absl handler exists, makes that configuration harmless.
import submitit  # noqa: E402,F401  # pylint: disable=wrong-import-position,unused-import


@pytest.fixture(scope="session")
def smollm2():
  """(model, tokenizer, info) of the embedded SmolLM2, loaded once per session (~18 s)."""
  from sae_jax.data import lm  # pylint: disable=import-outside-toplevel  # after XLA_FLAGS
  return lm.load_lm("smollm2")


@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory):
  """A run directory (config.json, records.json, checkpoints/) of a small TopK SAE
  (256 latents, k=8) trained on the real SmolLM2 middle layer over ~4k tokens, with a
  2016-token held-out split; built once per session (~1 min) for the viewer and steering
  tests."""
  import json  # pylint: disable=import-outside-toplevel
  from sae_jax import config  # pylint: disable=import-outside-toplevel  # after XLA_FLAGS
  from sae_jax.data import sources  # pylint: disable=import-outside-toplevel
  from sae_jax.training import trainer  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("tiny_lm_run")
  c = config.default_config()
  c.name = "tiny"
  c.data.n_train_tokens, c.data.n_eval_tokens, c.data.shard_tokens = 4032, 2016, 2016
  c.data.cache_dir = str(root / "cache")
  c.sae.n_latents, c.sae.k, c.sae.geometric_median_samples = 256, 8, 1024
  c.train.batch_size, c.train.token_budget = 64, 3 * 4032
  c.train.checkpoint_every_steps, c.train.n_eval_points, c.train.dead_tokens = 64, 2, 2000
  cache = sources.get_source(c, progress=False)
  resolved = config.resolve(c, cache.d_in)
  run_dir = root / "tiny" / "run"
  run_dir.mkdir(parents=True)
  (run_dir / "config.json").write_text(json.dumps(resolved.to_dict(), indent=1))
  records = trainer.train(resolved, cache, str(run_dir),
                          {"sweep": "tiny", "run_id": "run", "model": cache.meta["model"],
                           "layer": cache.meta["layer"]}, progress=False)
  (run_dir / "records.json").write_text(json.dumps(records))
  return str(run_dir)
