"""Probe loss: how well single SAE latents predict known binary properties of tokens
(Gao et al. 2024, Sec. 4.2, "Recovering known features with 1d probes").

For each task a 1-D logistic regression is fitted on every latent's activation (Newton's
method, vectorised over latents), the latent with the lowest training cross-entropy is
kept, and its cross-entropy on held-out tokens is the task's probe loss. The reported
probe loss is the mean over tasks; chance is log 2 = 0.693 nats (classes are balanced).
The reference is the same 1-D probe on the projection of the raw activation onto the
direction of a full L2-regularised logistic regression (scipy L-BFGS).

The tasks are built from the text of the cache's held-out contexts (decoded with the
LM's tokenizer) and, for the corpus task, from the document each token came from:

    corpus_kjv        the token's document is from the King James Bible (vs Shakespeare)
    capitalized       the token starts with a capital letter
    punctuation       the token is punctuation only
    digit             the token contains a digit
    sentence_start    the token holds the first letter of a sentence
    line_start        the token holds the first character of a line
    speaker_name      part of a speaker's name in a play ("HAMLET.", "FIRST LORD.")
    stage_direction   inside a stage direction ("[Enter ...]")
    archaic_pronoun   thou, thee, thy, thine, ye
    divine_name       LORD, Lord, God, GOD, Jesus, Christ
    question          inside a sentence that ends with "?"

A task with fewer than `min_per_class` examples of either class is skipped.
"""

from __future__ import annotations

import functools
import re
import string

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

LOG2 = float(np.log(2.0))
_PUNCT = set(string.punctuation) | {"“", "”", "‘", "’", "—", "–"}
_ARCHAIC = {"thou", "thee", "thy", "thine", "ye"}
_DIVINE = {"LORD", "Lord", "God", "GOD", "Jesus", "Christ"}
_CHAR_TASKS = {  # name -> regex whose group 1 (or whole match) marks the positive characters
    "sentence_start": re.compile(r"[.!?][\"')\]]*\s+([A-Za-z])"),
    "line_start": re.compile(r"\n[ \t]*(\S)"),
    "speaker_name": re.compile(r"(?m)^([A-Z][A-Z' ]*[A-Z])\.(?=\s)"),
    "stage_direction": re.compile(r"\[[^\]\n]*(?:\]|$)"),
    "question": re.compile(r"[^.!?;:]*\?"),
}
TASKS = ("corpus_kjv", "capitalized", "punctuation", "digit", "sentence_start", "line_start",
         "speaker_name", "stage_direction", "archaic_pronoun", "divine_name", "question")


# ------------------------------------------------------------------------------ tasks


def token_texts(tokenizer, tokens_CxS: np.ndarray) -> dict[int, str]:
  """id -> decoded text of each distinct token id (special tokens -> "\\n\\n", so that
  text tasks never run across a document boundary)."""
  special = set(getattr(tokenizer, "all_special_ids", []) or [])
  return {int(i): ("\n\n" if int(i) in special else tokenizer.decode([int(i)]))
          for i in np.unique(tokens_CxS)}


def task_labels(tokens_CxS: np.ndarray, texts: dict[int, str], special_ids=(),
                source_CxS: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Binary labels bool [C, S] of every task (see the module docstring) for every token.

  Args:
    tokens_CxS: int token ids.
    texts: id -> decoded text (`token_texts`).
    special_ids: ids labelled False by every text task.
    source_CxS: per-token source flag for corpus_kjv (True = KJV); None skips that task.
  """
  C, S = tokens_CxS.shape
  special = np.isin(tokens_CxS, np.asarray(list(special_ids), np.int64))
  ids = np.unique(tokens_CxS)

  def by_token(pred):
    table = {i: bool(pred(texts[int(i)])) for i in ids}
    return np.vectorize(table.__getitem__, otypes=[bool])(tokens_CxS) & ~special

  labels = {
      "capitalized": by_token(lambda t: t.strip()[:1].isupper()),
      "punctuation": by_token(lambda t: bool(t.strip()) and all(ch in _PUNCT for ch in t.strip())),
      "digit": by_token(lambda t: any(ch.isdigit() for ch in t)),
      "archaic_pronoun": by_token(lambda t: t.strip().lower() in _ARCHAIC),
      "divine_name": by_token(lambda t: t.strip() in _DIVINE),
  }
  char_labels = {name: np.zeros((C, S), bool) for name in _CHAR_TASKS}
  for c in range(C):
    pieces = [texts[int(i)] for i in tokens_CxS[c]]
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.asarray([len(p) for p in pieces])
    text = "".join(pieces)
    visible = np.asarray([not ch.isspace() for ch in text], bool)
    for name, rx in _CHAR_TASKS.items():
      mask = np.zeros(len(text) + 1, bool)
      for m in rx.finditer(text):
        g = 1 if rx.groups else 0
        mask[m.start(g):m.end(g)] = True
      mask = np.concatenate([[0], np.cumsum(mask[:-1] & visible)])
      char_labels[name][c] = (mask[ends] - mask[starts]) > 0
  for name in _CHAR_TASKS:
    labels[name] = char_labels[name] & ~special
  if source_CxS is not None:
    labels["corpus_kjv"] = np.asarray(source_CxS, bool)
  return {name: labels[name] for name in TASKS if name in labels}


def balanced_split(label_CxS: np.ndarray, valid_CxS: np.ndarray, max_per_class: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
  """Balanced (context, position) examples split by context into train / test.

  Returns ((ci, pi, y) for train, same for test) as int/bool arrays, or None when either
  class has fewer than 2 examples in either half.
  """
  rng = np.random.default_rng(seed)
  C = label_CxS.shape[0]
  in_test_C = rng.permutation(C) < C // 2
  halves = []
  for test in (False, True):
    sel = valid_CxS & (in_test_C[:, None] == test)
    pos = np.argwhere(sel & label_CxS)
    neg = np.argwhere(sel & ~label_CxS)
    n = min(len(pos), len(neg), max_per_class // 2)
    if n < 2:
      return None
    pos = pos[rng.choice(len(pos), n, replace=False)]
    neg = neg[rng.choice(len(neg), n, replace=False)]
    both = np.concatenate([pos, neg])
    halves.append((both[:, 0], both[:, 1], np.r_[np.ones(n, bool), np.zeros(n, bool)]))
  return halves[0], halves[1]


# ------------------------------------------------------------------------ 1-D probes


@functools.partial(jax.jit, static_argnames=("iters",))
def _newton_1d(a_MxN, y_M, m_M, l2, iters):
  y = y_M.astype(a_MxN.dtype)[:, None]
  m = (m_M / jnp.sum(m_M)).astype(a_MxN.dtype)[:, None]  # row weights: mean over real rows

  def step(_, wb):
    w, b = wb
    p = jax.nn.sigmoid(a_MxN * w + b)
    r, s = (p - y) * m, p * (1 - p) * m
    g_w = jnp.sum(r * a_MxN, 0) + l2 * w
    g_b = jnp.sum(r, 0)
    h_ww = jnp.sum(s * a_MxN**2, 0) + l2
    h_wb = jnp.sum(s * a_MxN, 0)
    h_bb = jnp.sum(s, 0) + 1e-6
    det = h_ww * h_bb - h_wb**2
    dw = (h_bb * g_w - h_wb * g_b) / det
    db = (h_ww * g_b - h_wb * g_w) / det
    scale = jnp.minimum(1.0, 4.0 / jnp.maximum(jnp.abs(dw), jnp.abs(db) + 1e-12))  # damping
    return w - scale * dw, b - scale * db

  N = a_MxN.shape[1]
  zeros = jnp.zeros((N,), a_MxN.dtype)
  return jax.lax.fori_loop(0, iters, step, (zeros, zeros))


@jax.jit
def _cross_entropy(a_MxN, y_M, m_M, w_N, b_N):
  s = a_MxN * w_N + b_N
  y = y_M.astype(a_MxN.dtype)[:, None]
  return jnp.sum((jax.nn.softplus(s) - y * s) * m_M[:, None], 0) / jnp.sum(m_M)


def _padded(a_MxN: np.ndarray, y_M: np.ndarray):
  """Rows padded to the next power of two (weight 0), so jit compiles once per bucket."""
  M = len(a_MxN)
  Mp = 1 << max(4, (M - 1).bit_length())
  a = np.zeros((Mp, a_MxN.shape[1]), np.float32)
  a[:M] = a_MxN
  y = np.zeros(Mp, np.float32)
  y[:M] = y_M
  m = np.zeros(Mp, np.float32)
  m[:M] = 1
  return jnp.asarray(a), jnp.asarray(y), jnp.asarray(m)


def fit_probes_1d(a_train_MxN: np.ndarray, y_train_M: np.ndarray, l2: float = 1e-3,
                  iters: int = 30):
  """A 1-D logistic regression p(y=1) = sigmoid(w a + b) per column, by damped Newton.

  Columns are standardised with the training mean and std first (a constant column gets
  w = 0), so `l2` (the ridge on w, per mean loss) is scale-free.

  Returns:
    ``loss(a_MxN, y_M) -> cross-entropy [N]`` (nats, mean over rows) of the fitted probes.
  """
  a = np.asarray(a_train_MxN, np.float32)
  mu, sd = a.mean(0), a.std(0)
  inv = np.where(sd > 1e-8, 1.0 / np.maximum(sd, 1e-8), 0.0).astype(np.float32)
  w, b = _newton_1d(*_padded((a - mu) * inv, y_train_M), l2, iters)

  def loss(a_MxN, y_M):
    x = (np.asarray(a_MxN, np.float32) - mu) * inv
    return np.asarray(_cross_entropy(*_padded(x, y_M), w, b), np.float64)
  return loss


def best_latent_probe(z_train_MxN, y_train, z_test_MxN, y_test) -> dict:
  """The latent whose 1-D probe has the lowest training loss, and its test loss (nats)."""
  loss = fit_probes_1d(z_train_MxN, y_train)
  train = loss(z_train_MxN, y_train)
  j = int(np.argmin(train))
  return {"latent": j, "train_loss": float(train[j]), "loss": float(loss(z_test_MxN, y_test)[j])}


def reference_probe(x_train_MxD, y_train, x_test_MxD, y_test, l2: float = 1e-2) -> dict:
  """Full L2-regularised logistic regression on the raw activation (scipy L-BFGS), then
  the 1-D probe on the projection onto its weight direction; its test loss (nats)."""
  x = np.asarray(x_train_MxD, np.float64)
  mu, sd = x.mean(0), x.std(0) + 1e-8
  xs = (x - mu) / sd
  y = np.asarray(y_train, np.float64)
  D = x.shape[1]

  def f(theta):
    w, b = theta[:D], theta[D]
    s = xs @ w + b
    p = 1 / (1 + np.exp(-s))
    val = np.mean(np.logaddexp(0, s) - y * s) + 0.5 * l2 * w @ w
    g = np.r_[xs.T @ (p - y) / len(y) + l2 * w, np.mean(p - y)]
    return val, g

  theta = optimize.minimize(f, np.zeros(D + 1), jac=True, method="L-BFGS-B",
                            options={"maxiter": 500}).x
  w = theta[:D] / sd
  loss = fit_probes_1d((x @ w)[:, None], y_train)
  return {"loss": float(loss((np.asarray(x_test_MxD, np.float64) @ w)[:, None], y_test)[0]),
          "train_loss": float(loss((x @ w)[:, None], y_train)[0])}
