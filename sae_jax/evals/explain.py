"""Explainability: an n-gram explanation per latent, scored by precision and recall on
held-out text (Gao et al. 2024, Sec. 4.3, in the spirit of Neuron-to-Graph, Foote et
al. 2023).

For a latent, its top-activating tokens in the first half of the contexts propose
candidate explanations: the n-grams (n <= 3) of token ids ending at each of them. The
candidate with the best F1 on that half at predicting "the latent fires here" (z > 0)
whenever the n-gram ends at a position is the explanation; its precision
(P(fires | n-gram)) and recall (P(n-gram | fires)) on the other half are the scores.
"""

from __future__ import annotations

import numpy as np


def ngram_codes(tokens_CxS: np.ndarray, n: int, vocab: int) -> np.ndarray:
  """int64 [C, S]: a unique code of the n-gram ENDING at each position (-1 where it
  would start before position 0). Needs vocab**n < 2**62."""
  t = np.asarray(tokens_CxS, np.int64)
  code = np.full(t.shape, -1, np.int64)
  if n > t.shape[1]:
    return code
  acc = t[:, n - 1:].copy()
  for i in range(1, n):
    acc = acc + t[:, n - 1 - i:t.shape[1] - i] * vocab**i
  code[:, n - 1:] = acc
  return code


def _f1(p: float, r: float) -> float:
  return 2 * p * r / (p + r) if p + r > 0 else 0.0


def explain_latents(tokens_CxS: np.ndarray, acts_CxSxM: np.ndarray, valid_CxS: np.ndarray,
                    max_n: int = 3, top: int = 20, build_fraction: float = 0.5) -> list[dict | None]:
  """n-gram explanations of M latents and their held-out precision and recall.

  Args:
    tokens_CxS: int token ids of the contexts.
    acts_CxSxM: the M latents' activations at every position (0 where they do not fire).
    valid_CxS: positions that count (the SAE's positions; e.g. not position 0).
    max_n: longest n-gram.
    top: how many top-activating positions propose candidates.
    build_fraction: the first fraction of contexts builds, the rest scores.

  Returns:
    Per latent None (it never fires in one of the halves) or dict(ngram (tuple of token
    ids), n, precision, recall, f1 (held-out), build_f1, fires (held-out count)).
  """
  tok = np.asarray(tokens_CxS, np.int64)
  C = tok.shape[0]
  cut = max(1, min(C - 1, int(round(C * build_fraction))))
  vocab = int(tok.max()) + 1
  codes = [ngram_codes(tok, n, vocab) for n in range(1, max_n + 1)]
  out = []
  for m in range(acts_CxSxM.shape[-1]):
    a = np.where(valid_CxS, acts_CxSxM[..., m], 0.0)
    fires = a > 0
    if not fires[:cut].any() or not fires[cut:].any():
      out.append(None)
      continue
    order = np.argsort(-a[:cut], axis=None)[:top]
    ci, pi = np.unravel_index(order, a[:cut].shape)
    keep = a[:cut][ci, pi] > 0
    cands = {(n, int(codes[n - 1][c, p])) for c, p in zip(ci[keep], pi[keep])
             for n in range(1, max_n + 1) if codes[n - 1][c, p] >= 0}
    best = None
    for n, code in sorted(cands):
      occ = (codes[n - 1][:cut] == code) & valid_CxS[:cut]
      hit = np.sum(occ & fires[:cut])
      f1 = _f1(hit / max(occ.sum(), 1), hit / fires[:cut].sum())
      if best is None or f1 > best[0] + 1e-12:
        best = (f1, n, code)
    f1_build, n, code = best
    occ = (codes[n - 1][cut:] == code) & valid_CxS[cut:]
    hit = float(np.sum(occ & fires[cut:]))
    precision = hit / occ.sum() if occ.sum() else 0.0
    recall = hit / fires[cut:].sum()
    ngram = tuple(int(code // vocab**i % vocab) for i in reversed(range(n)))
    out.append(dict(ngram=ngram, n=n, precision=float(precision), recall=float(recall),
                    f1=_f1(precision, recall), build_f1=float(f1_build),
                    fires=int(fires[cut:].sum())))
  return out
