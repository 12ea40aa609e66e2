"""The user-facing boundary: every bad input named in issues 17 and 20 is one line on
stderr (`sae-jax: error: ...`), exit status 2, and changes nothing on disk. All in
process through `sae_jax.cli.main`, on a synthetic sweep (no LM is loaded)."""

import json
import os

import pytest

from sae_jax import cli, config, overrides
from sae_jax.errors import ConfigError

SWEEP = '''
from sae_jax.config import default_config


def get_config():
  c = default_config()
  c.name = "syn"
  c.out_dir = {out!r}
  c.data.source = "synthetic"
  c.data.n_train_tokens = 4096
  c.data.n_eval_tokens = 1024
  c.sae.geometric_median_samples = 512
  c.train.batch_size = 128
  c.train.n_eval_points = 2
  return c


def get_sweep():
  return [{{"sae.n_latents": n, "sae.k": 4}} for n in (64, 128)]
'''


@pytest.fixture
def sweep(tmp_path):
  path = tmp_path / "syn.py"
  path.write_text(SWEEP.format(out=str(tmp_path / "runs")))
  return str(path)


@pytest.fixture(scope="module")
def lm_cache_dir(tmp_path_factory):
  """One cache root for the module, so the LM's description is read once."""
  return str(tmp_path_factory.mktemp("cache"))


def snapshot(root) -> dict:
  """{relative path: bytes} of every file under root."""
  out = {}
  for d, _, fs in os.walk(root):
    for f in fs:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = fh.read()
  return out


def cli_error(capsys, *argv) -> str:
  """Run the CLI in process; assert exit 2 and exactly one stderr line, the error."""
  rc = cli.main(list(argv))
  err = capsys.readouterr().err
  assert rc == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("sae-jax: error: "), err
  return lines[0]


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", "fast", "train.lr='fast' is not a number"),
    ("data.layer", "abc", "data.layer='abc' is not an integer"),
    ("sae.k", "1.5", "sae.k=1.5 is not an integer"),
    ("sae.n_latents", "True", "sae.n_latents=True is not an integer"),
    ("train.batch_size", "None", "train.batch_size=None: give an integer"),
    ("data.corpus", "5", "data.corpus=5 is not a string"),
    ("data.generator", "3", "data.generator is a group of settings"),
    ("train.lr", "1e999", "not a finite number"),
    ("data.exclude_first", "1", "is not True or False"),
])
def test_overrides_keep_declared_types(key, value, message):
  """FieldReference fields (data.layer, sae.k, train.lr, ...) keep their field_type and
  plain fields their value's type: a wrong type is a ConfigError at the boundary."""
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
    overrides.apply(config.default_config(), overrides.parse([f"{key}={value}"]))


def test_overrides_coerce_numbers_and_keep_references():
  c = overrides.apply(config.default_config(),
                      {"train.lr": 1, "sae.k": 8.0, "train.eval_measures": ["probes"]})
  assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
  assert c.sae.k == 8 and isinstance(c.sae.k, int)
  assert c.train.eval_measures == ("probes",)
  # the copy is deep and still typed: a second override is checked the same way
  with pytest.raises(ConfigError, match="not a number"):
    overrides.apply(c, {"train.lr": "x"})


@pytest.mark.parametrize("body, message", [
    ("def get_config(:\n  pass\n", r"syn\.py:1: cannot import it: SyntaxError"),
    ("from sae_jax.config import default_config\n"
     "def get_config():\n  return default_config()\n"
     "def get_sweep():\n  return None\n", r"get_sweep\(\) returned no list"),
    ("from sae_jax.config import default_config\n"
     "def get_config():\n  return default_config()\n"
     "def get_sweep():\n  return [{'sae.k': 4}, 'oops']\n", r"point 1 of get_sweep\(\)"),
    ("def get_config():\n  return 1 / 0\n"
     "def get_sweep():\n  return []\n", r"syn\.py:2: get_config\(\) failed: ZeroDivisionError"),
    ("def get_config():\n  return {}\ndef get_sweep():\n  return []\n", "not a ConfigDict"),
])
def test_broken_sweep_files_are_one_line(tmp_path, capsys, body, message):
  path = tmp_path / "syn.py"
  path.write_text(body)
  before = snapshot(tmp_path)
  for argv in (["sweep", str(path), "--dry-run"], ["sweep", str(path)],
               ["train", "--sweep", str(path)]):
    err = cli_error(capsys, *argv)
    if argv[0] == "sweep" or "get_sweep" not in message:
      assert __import__("re").search(message, err), err
  assert snapshot(tmp_path) == before


def test_a_set_key_the_points_also_set_is_refused_or_applied(sweep, capsys):
  """Issue 20 item 5 (and 17: `--dry-run --set sae.k=1000` planned the points' own k)."""
  err = cli_error(capsys, "sweep", sweep, "--dry-run", "--set", "sae.k=1000")
  assert "--set sae.k is also set by the points of" in err and "syn.py" in err
  assert "--override-points" in err
  err = cli_error(capsys, "sweep", sweep, "--dry-run", "--set", "sae.k=1000", "--override-points")
  assert "k=1000 exceeds n_latents=64" in err
  assert cli.main(["sweep", sweep, "--dry-run", "--set", "sae.k=2", "--override-points"]) == 0
  out = capsys.readouterr().out
  assert "k=2" in out and "k=4" not in out
  # a key the points do not set still goes to the base config
  assert cli.main(["sweep", sweep, "--dry-run", "--set", "train.batch_size=256"]) == 0
  capsys.readouterr()


def test_override_points_refuses_points_made_identical(tmp_path, capsys):
  path = tmp_path / "syn.py"
  path.write_text(SWEEP.format(out=str(tmp_path / "runs")).replace(
      '"sae.n_latents": n, "sae.k": 4', '"sae.n_latents": 64, "sae.k": n // 16'))
  err = cli_error(capsys, "sweep", str(path), "--dry-run", "--set", "sae.k=2",
                  "--override-points")
  assert "points 0 and 1" in err and "same run" in err


def test_convert_of_a_file_that_is_not_an_sae(tmp_path, capsys):
  src = tmp_path / "notes.pt"
  src.write_bytes(b"\x80\x04not a pickle at all")
  err = cli_error(capsys, "convert", str(src), str(tmp_path / "out"), "--to", "sae_jax")
  assert "notes.pt is not an SAE" in err
  assert not (tmp_path / "out").exists()


def test_fit_without_the_loss_field_is_an_error(tmp_path, capsys):
  results = tmp_path / "results.jsonl"
  results.write_text("".join(json.dumps({"run_id": f"r{n}", "n_latents": n, "k": 4, "final": True,
                                         "tokens": 1000, "flops": 1e9}) + "\n"
                             for n in (64, 128, 256)))
  before = snapshot(tmp_path)
  err = cli_error(capsys, "fit", str(results))
  assert "usable normalized_mse" in err
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, blob, message", [
    ("latin1.txt", "café crème".encode("latin-1") * 50, "byte offset 3 (0xe9)"),
    ("bad.jsonl", b'{"text": "fine"}\nnot json\n', "bad.jsonl:2 is not a JSON object"),
    ("latin1.jsonl", '{"text": "café"}\n'.encode("latin-1"), "byte offset 13 (0xe9)"),
])
def test_corpora_that_are_not_text_name_the_file_and_byte(tmp_path, lm_cache_dir, capsys, name,
                                                         blob, message):
  """Issue 20 item 4: harvested from U+FFFD replacement characters, silently, before."""
  corpus_path = tmp_path / name
  corpus_path.write_bytes(blob)
  err = cli_error(capsys, "harvest", "--set", f"data.corpus={corpus_path}",
                  f"data.cache_dir={lm_cache_dir}")
  assert message in err and name in err, err
  assert "--corpus-encoding latin-1" in err or "jsonl:2" in err


def test_corpus_encoding_option_reads_latin1(tmp_path):
  from sae_jax.data import corpus  # pylint: disable=import-outside-toplevel
  path = tmp_path / "latin1.txt"
  path.write_bytes("café\r\ncrème".encode("latin-1"))
  args = cli.build_parser().parse_args(["harvest", "--corpus-encoding", "latin-1"])
  assert cli._overrides(args) == {"data.corpus_encoding": "latin-1"}  # pylint: disable=protected-access
  docs = corpus.load_documents(str(path), str(tmp_path), "latin-1")
  assert [d.text for d in docs] == ["café\ncrème"]  # newlines as text mode gives them
  with pytest.raises(ConfigError, match="not a known text encoding"):
    config.validate(overrides.apply(config.default_config(), {"data.corpus_encoding": "nope"}))
