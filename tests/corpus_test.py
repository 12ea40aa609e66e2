"""Tests of sae_jax.corpus: the embedded corpus, local files, the split, packing."""

import json
import re

import numpy as np
import pytest

from sae_jax import config
from sae_jax.data import corpus
from sae_jax.errors import ConfigError


@pytest.fixture(scope="module")
def embedded():
  return corpus.load_documents("embedded", config.cache_root())


def test_embedded_corpus_has_both_sources_one_doc_per_scene_and_chapter(embedded):
  sources = {d.source for d in embedded}
  assert sources == {"shakespeare", "kjv"}
  ids = [d.id for d in embedded]
  assert len(ids) == len(set(ids))
  by_id = {d.id: d for d in embedded}
  assert sum(d.source == "kjv" for d in embedded) == 1189  # chapters of the KJV
  assert by_id["kjv/01/001"].text.startswith("In the beginning God created the heaven")
  assert "shakespeare/tempest/1.2" in by_id and "MIRANDA" in by_id["shakespeare/tempest/1.2"].text
  kjv = [d.text for d in embedded if d.source == "kjv"]
  assert not any("[" in t or "]" in t for t in kjv)  # italics markers dropped, words kept
  assert "darkness was upon the face of the deep" in by_id["kjv/01/001"].text
  assert not any(re.search(r"(^|\s)\d+\.\s", t) for t in kjv)  # no verse numbers
  assert all(d.text.strip() for d in embedded)


def test_split_is_by_document_deterministic_and_mixed(embedded):
  train, evl = corpus.split_documents(embedded, 0.1, seed=0)
  train_ids, eval_ids = {d.id for d in train}, {d.id for d in evl}
  assert not train_ids & eval_ids
  assert train_ids | eval_ids == {d.id for d in embedded}
  assert 0.05 < len(evl) / len(embedded) < 0.15
  again = corpus.split_documents(list(reversed(embedded)), 0.1, seed=0)
  assert [d.id for d in again[0]] == [d.id for d in train]  # independent of input order
  assert [d.id for d in again[1]] == [d.id for d in evl]
  assert {d.source for d in train[:30]} == {"shakespeare", "kjv"}  # first tokens mix sources
  other = corpus.split_documents(embedded, 0.1, seed=1)
  assert [d.id for d in other[0]] != [d.id for d in train]


def test_corpus_hash_is_stable_and_sensitive():
  docs = [corpus.Document("a", "s", "hello"), corpus.Document("b", "s", "world")]
  assert corpus.corpus_hash(docs) == corpus.corpus_hash(list(docs))
  assert corpus.corpus_hash(docs) != corpus.corpus_hash(docs[:1])
  assert corpus.corpus_hash(docs) != corpus.corpus_hash(
      [docs[0], corpus.Document("b", "s", "world!")])
  # ids and texts are length-prefixed: moving a boundary changes the hash
  assert corpus.corpus_hash([corpus.Document("ab", "s", "c")]) != corpus.corpus_hash(
      [corpus.Document("a", "s", "bc")])


def test_local_txt_dir_and_jsonl(tmp_path):
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "one.txt").write_text("first document")
  (tmp_path / "d" / "two.txt").write_text("second document")
  (tmp_path / "d" / "skip.md").write_text("not text")
  docs = corpus.load_documents(str(tmp_path / "d"), str(tmp_path))
  assert [(d.id, d.text) for d in docs] == [("one.txt", "first document"),
                                            ("two.txt", "second document")]
  one = corpus.load_documents(str(tmp_path / "d" / "one.txt"), str(tmp_path))
  assert [d.text for d in one] == ["first document"]
  p = tmp_path / "c.jsonl"
  p.write_text("\n".join(json.dumps({"text": t}) for t in ["x y", "z"]) + "\n")
  assert [d.text for d in corpus.load_documents(str(p), str(tmp_path))] == ["x y", "z"]
  p.write_text('{"txt": "no text field"}\n')
  with pytest.raises(ConfigError, match="'text' string"):
    corpus.load_documents(str(p), str(tmp_path))


def test_empty_and_missing_corpus_raise(tmp_path):
  (tmp_path / "empty.txt").write_text("  \n")
  with pytest.raises(ConfigError, match="has no text"):
    corpus.load_documents(str(tmp_path / "empty.txt"), str(tmp_path))
  (tmp_path / "none").mkdir()
  with pytest.raises(ConfigError, match="has no text"):
    corpus.load_documents(str(tmp_path / "none"), str(tmp_path))
  with pytest.raises(ConfigError, match="does not exist"):
    corpus.load_documents(str(tmp_path / "missing.txt"), str(tmp_path))


def test_hf_spec_parsing_and_missing_datasets():
  assert corpus.parse_hf_spec("hf:wikitext:wikitext-2-raw-v1:test") == dict(
      name="wikitext", config="wikitext-2-raw-v1", split="test", text_field="text")
  assert corpus.parse_hf_spec("hf:roneneldan/TinyStories") == dict(
      name="roneneldan/TinyStories", config=None, split="train", text_field="text")
  assert corpus.parse_hf_spec("hf:x:::content")["text_field"] == "content"
  with pytest.raises(ConfigError):
    corpus.parse_hf_spec("hf:")
  try:
    import datasets  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    with pytest.raises(ConfigError, match="pip install datasets"):
      corpus.load_documents("hf:roneneldan/TinyStories", "")


def test_pack_contexts_concatenates_with_eos_and_is_lazy():
  docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11] * 50]
  out = corpus.pack_contexts(docs, 4, eos_id=0)
  flat = [1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9, 10, 0] + [11] * 50 + [0]
  n = len(flat) // 4
  assert out.dtype == np.int32 and out.shape == (n, 4)
  np.testing.assert_array_equal(out.reshape(-1), flat[:n * 4])
  with_bos = corpus.pack_contexts(docs[:2], 3, bos_id=99)
  np.testing.assert_array_equal(with_bos.reshape(-1), [99, 1, 2, 3, 99, 4])

  consumed = []

  def gen():
    for i in range(1000):
      consumed.append(i)
      yield [i] * 10
  out = corpus.pack_contexts(gen(), 8, eos_id=0, max_contexts=3)
  assert out.shape == (3, 8) and len(consumed) == 3  # 33 tokens cover 3 contexts of 8
