"""Fuzzed, not enumerated (issue 17): property-based tests of the user-facing boundary.

Hypothesis generates `--set` overrides for every config key (wrong types, out of range,
empty, huge, unicode), malformed sweep files, malformed results tables and corpora
(binary, mixed encodings, empty and huge lines). Each goes through the CLI in process
(`sae_jax.cli.main`), and the property is the project's promise: exit status 0, or 2
with exactly one stderr line starting `sae-jax: error:`; never a traceback; nothing
under the output directory changed. Examples are derandomized (CI is reproducible);
SAE_JAX_FUZZ_EXAMPLES=N runs N per property for a longer hunt.
"""

import json
import os

import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sae_jax import cli, config
from sae_jax.data import corpus

from boundary_test import SWEEP  # the synthetic two-point sweep both files drive

N = int(os.environ.get("SAE_JAX_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=N or 60, deadline=None, derandomize=not N, database=None,
                suppress_health_check=list(HealthCheck))


def _keys(node=None, prefix=""):
  node = config.default_config() if node is None else node
  for k, f in node._fields.items():  # pylint: disable=protected-access
    if isinstance(f, ml_collections.ConfigDict):
      yield prefix + k
      yield from _keys(f, prefix + k + ".")
    else:
      yield prefix + k


KEYS = sorted(_keys())
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), TEXT, st.just(""),
    st.lists(st.one_of(st.integers(-3, 3), TEXT), max_size=3),
    st.lists(st.integers(), max_size=2).map(tuple))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """A directory with the synthetic sweep file and an output directory holding files
  that no failed command may touch."""
  root = tmp_path_factory.mktemp("fuzz")
  out = root / "runs"
  (out / "syn").mkdir(parents=True)
  (out / "syn" / "results.jsonl").write_text('{"kept": true}\n')
  (out / "syn" / "fits.json").write_text('{"kept": true}\n')
  (root / "syn.py").write_text(SWEEP.format(out=str(out)))
  return root


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("cache"))


def _snapshot(root) -> dict:
  out = {}
  for d, _, fs in os.walk(root):
    for f in fs:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = fh.read()
  return out


def _check(capsys, root, argv, must_fail=False) -> str:
  """Run the CLI in process; assert the boundary's promise; return stderr."""
  before = _snapshot(root / "runs")
  capsys.readouterr()
  rc = cli.main(argv)  # an exception escaping here is a traceback: the test fails
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip() and not l.startswith("[sae_jax]")]
  assert rc in (0, 2), (rc, err)
  if rc == 2:
    assert len(lines) == 1 and lines[0].startswith("sae-jax: error: "), err
  else:
    assert not must_fail, f"accepted: {argv}"
  assert _snapshot(root / "runs") == before, argv
  return err


def _literal(value) -> str:
  return value if isinstance(value, str) else repr(value)


@FUZZ
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_set_override_is_accepted_or_one_line(root, capsys, key, value):
  """Every config key with every kind of value: a dry run plans it or refuses it."""
  _check(capsys, root, ["sweep", str(root / "syn.py"), "--dry-run", "--device-flops", "1e12",
                        "--set", f"{key}={_literal(value)}"])


@FUZZ
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_wrong_types_are_refused(root, capsys, key, value):
  """A value whose type differs from the field's declared one is always refused."""
  c = config.default_config()
  node, *path, leaf = [c] + key.split(".")
  for part in path:
    node = node[part]
  field = node._fields[leaf]  # pylint: disable=protected-access
  kind = field.get_type() if isinstance(field, ml_collections.FieldReference) else type(field)
  parsed = cli.overrides_lib.parse([f"x={_literal(value)}"])["x"]
  ok = (parsed is None and isinstance(field, ml_collections.FieldReference)) or (
      isinstance(parsed, kind) and not (kind is int and isinstance(parsed, bool))) or (
      kind is float and isinstance(parsed, int) and not isinstance(parsed, bool)) or (
      kind is int and isinstance(parsed, float) and parsed.is_integer()) or (
      kind is tuple and isinstance(parsed, list))
  if ok or key in ("sae.n_latents", "sae.k"):  # the sweep's points set these two
    return
  _check(capsys, root, ["sweep", str(root / "syn.py"), "--dry-run", "--device-flops", "1e12",
                        "--set", f"{key}={_literal(value)}"], must_fail=True)


def _mutations():
  good = SWEEP.format(out="OUT")
  lines = good.splitlines()
  drop_line = st.integers(0, len(lines) - 1).map(
      lambda i: "\n".join(lines[:i] + lines[i + 1:]))
  drop_char = st.integers(0, len(good) - 1).map(lambda i: good[:i] + good[i + 1:])
  insert = st.tuples(st.integers(0, len(good)), st.sampled_from(
      ["(", ")", ":", "\t", "  ", "return None\n", "1/0\n", "raise KeyError('x')\n", "\x00",
       "é", "\ufeff", "import nonexistent_module\n", "[", "'''"])).map(
          lambda t: good[:t[0]] + t[1] + good[t[0]:])
  points = st.recursive(
      st.one_of(st.none(), st.integers(-2, 2**40), st.floats(), TEXT),
      lambda inner: st.one_of(st.lists(inner, max_size=3),
                              st.dictionaries(st.one_of(st.sampled_from(KEYS), TEXT), inner,
                                              max_size=3)), max_leaves=6)
  returned = points.map(lambda p: good[:good.index("  return [{")] + f"  return {p!r}\n")
  return st.one_of(drop_line, drop_char, insert, returned, st.binary(max_size=64).map(
      lambda b: b.decode("latin-1")))


@FUZZ
@given(text=_mutations())
def test_malformed_sweep_files_are_one_line(root, capsys, text):
  path = root / "mutant.py"
  path.write_text(text.replace("'OUT'", repr(str(root / "runs"))), encoding="utf-8",
                  errors="surrogateescape")
  _check(capsys, root, ["sweep", str(path), "--dry-run", "--device-flops", "1e12"])
  path.unlink()


RECORD_FIELDS = ["run_id", "sweep", "n_latents", "k", "tokens", "flops", "final", "step",
                 "normalized_mse", "architecture", "d_in", "l0"]
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                              st.floats(allow_nan=False), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(TEXT, inner, max_size=3)),
                    max_leaves=5)
BAD_LINE = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"")),
    JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(RECORD_FIELDS[:-4]), JSON, max_size=6).map(
        lambda d: json.dumps(d).encode()),  # records without the loss
    st.just(b"{" * 5000), st.just(b""), st.just(b"\xef\xbb\xbf{}"))


@FUZZ
@given(lines=st.lists(BAD_LINE, min_size=1, max_size=4), trailing=st.booleans())
def test_malformed_results_tables_are_one_line(root, capsys, lines, trailing):
  path = root / "runs" / "bad" / "results.jsonl"
  path.parent.mkdir(exist_ok=True)
  path.write_bytes(b"\n".join(lines) + (b"\n" if trailing else b""))
  _check(capsys, root, ["fit", str(path), "--bootstrap", "0"], must_fail=True)
  path.unlink()


CORPUS = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(TEXT.map(str.encode), TEXT.map(lambda t: t.encode("utf-16")),
                       TEXT.map(lambda t: t.encode("latin-1", "replace")), st.just(b""),
                       st.just(b"x" * 100_000), st.just(b"\r\n")), max_size=5).map(b"\n".join))


@FUZZ
@given(blob=CORPUS, ext=st.sampled_from([".txt", ".jsonl"]), encoding=st.sampled_from(
    ["utf-8", "latin-1", "utf-16"]))
def test_corpora_load_or_are_one_line(tmp_path_factory, blob, ext, encoding):
  """`corpus.load_documents` (what a notebook and the harvest call) returns text that
  decoded without a replacement character, or raises a one-line ConfigError."""
  path = tmp_path_factory.mktemp("corpus") / f"c{ext}"
  path.write_bytes(blob)
  try:
    docs = corpus.load_documents(str(path), str(path.parent), encoding)
  except config.ConfigError as e:
    assert "\n" not in str(e) and str(e)
    return
  assert all(isinstance(d.text, str) for d in docs)
  assert encoding != "utf-8" or all("\ufffd" not in d.text for d in docs) or (
      "\ufffd".encode() in blob)


@settings(FUZZ, max_examples=N or 8)
@given(blob=st.binary(min_size=1, max_size=100).map(lambda b: b + b"\xff\xfe text"))
def test_a_corpus_that_is_not_utf8_stops_the_harvest_in_one_line(root, lm_cache, capsys, blob):
  path = root / "bad.txt"
  path.write_bytes(blob)
  err = _check(capsys, root, ["harvest", "--sweep", str(root / "syn.py"), "--set",
                              "data.source='lm'", f"data.corpus={path}",
                              f"data.cache_dir={lm_cache}"], must_fail=True)
  assert "bad.txt" in err and "byte offset" in err
  path.unlink()
