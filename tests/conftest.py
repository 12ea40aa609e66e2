"""Test setup: 8 forced host devices, so the sharded step can be compared with the
1-device step in one process (the flag must be set before JAX starts)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def smollm2():
  """(model, tokenizer, info) of the embedded SmolLM2, loaded once per session (~18 s)."""
  from sae_jax import lm  # pylint: disable=import-outside-toplevel
  return lm.load_lm("smollm2")
