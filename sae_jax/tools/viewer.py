"""A static feature viewer: `sae-jax view RUN_DIR` writes a self-contained HTML site.

    out/index.html          every shown latent: density, mean / max activation,
                            explainability score, top tokens, top output tokens; sortable,
                            searchable by token, paginated (inline JS, no server, no CDN)
    out/latents/<i>.html    one page per shown latent: top-activating held-out contexts
                            (tokens shaded by activation, the max token outlined),
                            contexts sampled from lower activation quantiles, the histogram
                            of its activations, the top and bottom output tokens of its
                            decoder direction, and its n-gram explanation when
                            `sae-jax eval` computed one (RUN_DIR/eval.json, "explain")

Everything comes from the held-out split of the run's activation cache (no LM forward
pass); the LM is loaded only for its tokenizer and unembedding.

Output tokens ("logit lens" of a decoder direction, as Bricken et al. 2023 and
Neuronpedia show them): logits = W_U (g * d) with d the latent's decoder row (the raw-space
direction up to a positive per-token factor for every input_norm) and g the final
RMSNorm's weight. This skips the blocks after the hooked layer and the RMS division (a
positive factor), so it ranks tokens, it does not predict probabilities.

Cost is bounded: at most `max_contexts` held-out contexts are encoded and at most
`max_latents` live latents get a page (a seeded random sample, latents with an n-gram
explanation first); the index says how many were skipped and why.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import time

import ml_collections
import numpy as np
import torch

from sae_jax.data import lm as lm_lib
from sae_jax.data import sources
from sae_jax.errors import ConfigError
from sae_jax.tools import interchange

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th.sortable{cursor:pointer;user-select:none;background:#f4f4f4}
th.sortable:hover{background:#e8e8e8}
.num{text-align:right;font-variant-numeric:tabular-nums}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;line-height:1.9;
white-space:pre-wrap;border-bottom:1px solid #eee;padding:3px 0}
.tok{border-radius:2px;padding:1px 0}
.tok.max{outline:2px solid #c00;font-weight:bold}
.val{color:#888;font-size:.8em;margin-right:.6em}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}
.pill{display:inline-block;background:#eef;border-radius:3px;padding:0 4px;margin:1px;
font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;white-space:pre}
.pill.neg{background:#fee}
.note{color:#555;font-size:.9em}
#pager button{margin:0 .4em}
.cols{display:flex;gap:2em;flex-wrap:wrap}
"""

_INDEX_JS = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const PAGE = %(page_size)d;
let rows = DATA.slice(), sortKey = 'density', sortDir = -1, page = 0, query = '';
function fmt(v, d) { return v === null || v === undefined ? '\\u2014' : Number(v).toPrecision(d); }
function esc(s) { const e = document.createElement('span'); e.textContent = s; return e.innerHTML; }
function pills(a) { return a.map(t => '<span class="pill">' + esc(t) + '</span>').join(''); }
function apply() {
  const q = query.toLowerCase();
  rows = DATA.filter(r => !q || r.top_tokens.concat(r.out_tokens).some(
      t => t.toLowerCase().includes(q)) || (r.explanation || '').toLowerCase().includes(q));
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x === null && y === null) return a.latent - b.latent;
    if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : x > y ? 1 : a.latent - b.latent) * sortDir; });
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  const body = rows.slice(page * PAGE, (page + 1) * PAGE).map(r =>
    '<tr class="latent-row" data-latent="' + r.latent + '"><td><a href="latents/' + r.latent +
    '.html">' + r.latent + '</a></td><td class="num">' + fmt(r.density, 3) +
    '</td><td class="num">' + fmt(r.mean_act, 3) + '</td><td class="num">' + fmt(r.max_act, 3) +
    '</td><td class="num">' + fmt(r.score, 3) + '</td><td>' + pills(r.top_tokens) +
    '</td><td>' + pills(r.out_tokens) + '</td><td>' + esc(r.explanation || '') + '</td></tr>');
  document.getElementById('rows').innerHTML = body.join('');
  document.getElementById('pageinfo').textContent = 'page ' + (page + 1) + ' of ' + pages +
    ' (' + rows.length + ' latents)';
  document.querySelectorAll('th.sortable').forEach(th => {
    th.dataset.dir = th.dataset.key === sortKey ? (sortDir > 0 ? 'asc' : 'desc') : '';
    th.querySelector('.arrow').textContent = th.dataset.key === sortKey ? (sortDir > 0 ? ' \\u25b2' : ' \\u25bc') : ''; });
}
document.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => {
  if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = -1; }
  page = 0; apply(); }));
document.getElementById('search').addEventListener('input', e => { query = e.target.value; page = 0; apply(); });
document.getElementById('prev').addEventListener('click', () => { page = Math.max(0, page - 1); apply(); });
document.getElementById('next').addEventListener('click', () => { page += 1; apply(); });
apply();
"""


def _esc(s: str) -> str:
  return html.escape(s, quote=True)


def _show(tok: str) -> str:
  """A token's text made visible: newlines as a return arrow, tabs as an arrow."""
  return tok.replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def _svg_histogram(values: np.ndarray, n_bins: int, xlabel: str, log_x: bool = False,
                   width: int = 520, height: int = 150) -> str:
  """An inline SVG bar chart of a histogram of `values` (counts on y)."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return "<p class='note'>(no values)</p>"
  lo, hi = float(v.min()), float(v.max())
  if hi <= lo:
    hi = lo + 1e-6
  counts, edges = np.histogram(v, bins=n_bins, range=(lo, hi))
  pad_l, pad_b = 40, 30
  w, h = width - pad_l - 10, height - pad_b - 10
  cmax = max(1, counts.max())
  bars = []
  for j, c in enumerate(counts):
    bh = h * c / cmax
    x = pad_l + w * j / n_bins
    label = f"{edges[j]:.3g}..{edges[j + 1]:.3g}: {c}"
    bars.append(f"<rect x='{x:.1f}' y='{10 + h - bh:.1f}' width='{max(w / n_bins - 1, 1):.1f}' "
                f"height='{bh:.1f}' fill='#e67e22'><title>{_esc(label)}</title></rect>")
  fx = (lambda t: f"1e{t:.1f}") if log_x else (lambda t: f"{t:.3g}")
  axis = (f"<text x='{pad_l}' y='{height - 8}' font-size='11'>{fx(lo)}</text>"
          f"<text x='{width - 10}' y='{height - 8}' font-size='11' text-anchor='end'>{fx(hi)}</text>"
          f"<text x='{pad_l + w / 2}' y='{height - 8}' font-size='11' text-anchor='middle'>"
          f"{_esc(xlabel)}</text><text x='{pad_l - 4}' y='18' font-size='11' "
          f"text-anchor='end'>{cmax}</text><text x='{pad_l - 4}' y='{10 + h}' font-size='11' "
          f"text-anchor='end'>0</text>")
  return (f"<svg class='hist' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
          f"<line x1='{pad_l}' y1='{10 + h}' x2='{width - 10}' y2='{10 + h}' stroke='#999'/>"
          + "".join(bars) + axis + "</svg>")


def _explanations(run_dir: str) -> dict[int, dict]:
  """latent -> {text, precision, recall, f1} from RUN_DIR/eval.json's "explain" section
  (`sae_jax.evals.suite`), or {} when there is none."""
  path = os.path.join(run_dir, "eval.json")
  try:
    with open(path, encoding="utf-8") as f:
      ev = json.load(f)
  except (OSError, ValueError):
    return {}
  out = {}
  for r in (ev.get("explain") or {}).get("latents") or []:
    try:
      out[int(r["latent"])] = r
    except (KeyError, TypeError, ValueError):
      continue
  return out


class _Tokens:
  """Token id -> display text, memoised (decoding one id at a time, so a byte-level BPE
  token shows its leading space)."""

  def __init__(self, tokenizer):
    self.tokenizer, self.memo = tokenizer, {}

  def __call__(self, i: int) -> str:
    i = int(i)
    if i not in self.memo:
      self.memo[i] = self.tokenizer.decode([i])
    return self.memo[i]


def output_tokens(model, W_dec_MxD: np.ndarray, n: int, chunk: int = 256
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Logit-lens output tokens of decoder directions: logits = W_U (g * d) per row d, with
  g the final norm's weight (ones if the model has none we can find).

  Returns:
    (top_ids_MxK, top_logits_MxK, bottom_ids_MxK, bottom_logits_MxK), K = n, computed in
    chunks of rows so memory stays O(chunk * vocab).
  """
  W_U = model.get_output_embeddings().weight.detach().float()  # [V, D]
  g = None
  for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm"):
    m = model
    for part in path.split("."):
      m = getattr(m, part, None)
      if m is None:
        break
    if m is not None and getattr(m, "weight", None) is not None:
      g = m.weight.detach().float()
      break
  out = [[], [], [], []]
  with torch.inference_mode():
    for a in range(0, len(W_dec_MxD), chunk):
      d = torch.from_numpy(np.asarray(W_dec_MxD[a:a + chunk], np.float32))
      logits = (d * g if g is not None else d) @ W_U.T
      top, bot = torch.topk(logits, n, dim=1), torch.topk(logits, n, dim=1, largest=False)
      for lst, t in zip(out, (top.indices, top.values, bot.indices, bot.values)):
        lst.append(t.numpy())
  return tuple(np.concatenate(x) if x else np.zeros((0, n)) for x in out)


def build(run_dir: str, out_dir: str | None = None, max_latents: int = 512,
          max_contexts: int = 1024, n_top: int = 12, n_quantiles: int = 4,
          per_quantile: int = 3, n_output_tokens: int = 10, page_size: int = 50,
          window: tuple[int, int] = (24, 8), seed: int = 0, lm=None, progress: bool = True
          ) -> str:
  """Write the viewer of a run to `out_dir` (default RUN_DIR/viewer); returns its index.html.

  Args:
    run_dir: a run directory (config.json + checkpoints/) trained on an LM's activations.
    max_latents: live latents given a page (a seeded sample when there are more).
    max_contexts: held-out contexts encoded (the first ones of the split).
    n_top: top-activating contexts per latent; n_quantiles x per_quantile contexts sampled
      from the quantile bins of its non-zero activations.
    window: tokens shown (before, after) the marked token of each context.
    lm: (model, tokenizer) already loaded (default: `lm.load_lm(data.model)`).

  Raises:
    ConfigError: not a run directory, a synthetic run (no tokens), or as
      `sources.get_source` / `interchange.load`.
  """
  t0 = time.time()
  say = (lambda m: print(f"[sae_jax] {m}", flush=True)) if progress else (lambda m: None)
  cfg_path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(cfg_path) or not os.path.isdir(os.path.join(run_dir, "checkpoints")):
    raise ConfigError(f"{run_dir!r} is not a run directory (config.json + checkpoints/); give "
                      "out_dir/<name>/<run_id>")
  with open(cfg_path, encoding="utf-8") as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  if cfg.data.source != "lm":
    raise ConfigError(f"{run_dir!r} was trained on data.source={cfg.data.source!r}; the viewer "
                      "needs an LM's activations and tokens")
  if max_latents < 1 or max_contexts < 1:
    raise ConfigError("--max-latents and --max-contexts must be at least 1")
  out_dir = out_dir or os.path.join(run_dir, "viewer")
  cache = sources.get_source(cfg, progress=progress)
  params, scfg = interchange.load(run_dir)
  tokens_CxS = cache.tokens("eval")
  C_all, S = tokens_CxS.shape
  ef = int(bool(cache.meta.get("exclude_first", cfg.data.exclude_first)))
  P = S - ef
  n_rows_all = cache.n_tokens("eval")
  n_rows = min(n_rows_all, max_contexts * P)
  C = math.ceil(n_rows / P)
  N = int(np.asarray(params["W_dec"]).shape[0])

  # ---- encode the held-out rows once; keep every non-zero (row, latent, value)
  fires, sums, maxes = np.zeros(N, np.int64), np.zeros(N), np.zeros(N)
  rows_l, lat_l, val_l = [], [], []
  for a in range(0, n_rows, 2048):
    r = np.arange(a, min(n_rows, a + 2048))
    z, _ = interchange.encode(params, scfg, cache.read("eval", r))
    nz_r, nz_n = np.nonzero(z)
    v = z[nz_r, nz_n]
    fires += np.bincount(nz_n, minlength=N)
    sums += np.bincount(nz_n, weights=v, minlength=N)
    np.maximum.at(maxes, nz_n, v)
    rows_l.append((nz_r + a).astype(np.int32))
    lat_l.append(nz_n.astype(np.int32))
    val_l.append(v.astype(np.float32))
  rows_nz, lat_nz, val_nz = (np.concatenate(x) for x in (rows_l, lat_l, val_l))
  order = np.argsort(lat_nz, kind="stable")
  rows_nz, lat_nz, val_nz = rows_nz[order], lat_nz[order], val_nz[order]
  bounds = np.searchsorted(lat_nz, np.arange(N + 1))
  say(f"encoded {n_rows:,} held-out tokens ({C} contexts) with {N} latents "
      f"({time.time() - t0:.1f} s)")

  # ---- which latents get a page
  expl = _explanations(run_dir)
  live = np.flatnonzero(fires > 0)
  rng = np.random.default_rng(seed)
  if len(live) > max_latents:
    first = np.array(sorted(j for j in expl if j < N and fires[j] > 0), np.int64)[:max_latents]
    rest = np.setdiff1d(live, first)
    pick = rng.choice(rest, size=max_latents - len(first), replace=False)
    shown = np.sort(np.concatenate([first, pick]))
  else:
    shown = live
  density = fires / n_rows
  mean_act = np.where(fires > 0, sums / np.maximum(fires, 1), 0.0)

  # ---- the LM: tokenizer for the text, unembedding for the output tokens
  if lm is None:
    model, tokenizer, _ = lm_lib.load_lm(cfg.data.model, "cpu", cache_dir=cfg.data.get("cache_dir"))
  else:
    model, tokenizer = lm[0], lm[1]
  tok = _Tokens(tokenizer)
  top_out, top_lg, bot_out, bot_lg = output_tokens(
      model, np.asarray(params["W_dec"], np.float32)[shown], n_output_tokens)
  say(f"output tokens of {len(shown)} latents ({time.time() - t0:.1f} s)")

  # ---- pages (a rebuild replaces the last build's: no page of a latent no longer shown)
  shutil.rmtree(os.path.join(out_dir, "latents"), ignore_errors=True)
  os.makedirs(os.path.join(out_dir, "latents"))
  index_rows = []
  for m, j in enumerate(shown):
    j = int(j)
    a, b = bounds[j], bounds[j + 1]
    r_j, v_j = rows_nz[a:b], val_nz[a:b]
    by_value = np.argsort(-v_j, kind="stable")
    _, first = np.unique(r_j[by_value] // P, return_index=True)  # one row per context
    top = by_value[np.sort(first)][:n_top]
    top_tokens = []
    for t in top:
      c, p = divmod(int(r_j[t]), P)
      s = tok(tokens_CxS[c, p + ef])
      if s not in top_tokens:
        top_tokens.append(s)
    e = expl.get(j)
    etext = None
    if e is not None:
      etext = e.get("text") or "".join(tok(g) for g in e.get("ngram", []))
    index_rows.append(dict(latent=j, density=float(density[j]), mean_act=float(mean_act[j]),
                           max_act=float(maxes[j]), score=None if e is None else float(e["f1"]),
                           top_tokens=[_show(s) for s in top_tokens[:5]],
                           out_tokens=[_show(tok(i)) for i in top_out[m, :5]],
                           explanation=etext))
    page = _latent_page(j, r_j, v_j, top, tokens_CxS, ef, P, tok, rng, n_quantiles,
                        per_quantile, window, index_rows[-1], e,
                        [(tok(i), float(v)) for i, v in zip(top_out[m], top_lg[m])],
                        [(tok(i), float(v)) for i, v in zip(bot_out[m], bot_lg[m])], n_rows)
    with open(os.path.join(out_dir, "latents", f"{j}.html"), "w", encoding="utf-8") as f:
      f.write(page)

  # ---- index
  dead = int(N - len(live))
  notes = [f"{N:,} latents; {dead:,} never fired on the {n_rows:,} held-out tokens used "
           f"(no page); {len(shown):,} live latents shown"
           + (f", a random sample (seed {seed}) of {len(live):,}: {len(live) - len(shown):,} "
              f"live latents skipped (raise --max-latents)" if len(shown) < len(live) else "")
           + ".",
           f"Held-out contexts: {C:,} of {C_all:,} ({n_rows:,} of {n_rows_all:,} tokens)"
           + (" — the rest skipped (raise --max-contexts)." if n_rows < n_rows_all else ".")]
  if expl:
    notes.append(f"n-gram explanations from eval.json for {len(expl)} latents (score = held-out F1).")
  else:
    notes.append("No n-gram explanations (run `sae-jax eval RUN_DIR --measures explain`).")
  title = f"SAE viewer: {os.path.basename(os.path.abspath(run_dir))}"
  desc = (f"{scfg['architecture']} SAE, {N:,} latents, k={scfg.get('k')}, input_norm "
          f"{scfg['input_norm']}, on {cfg.data.model} layer {scfg.get('layer')} "
          f"(hidden_states[{scfg.get('layer')}])")
  log_density = np.log10(density[live]) if len(live) else np.array([])
  head = ("<tr>" + "".join(
      f"<th class='sortable' data-key='{k}'>{name}<span class='arrow'></span></th>"
      for k, name in (("latent", "latent"), ("density", "density"), ("mean_act", "mean act"),
                      ("max_act", "max act"), ("score", "explainability")))
      + "<th>top tokens</th><th>top output tokens</th><th>explanation</th></tr>")
  data = json.dumps(index_rows).replace("</", "<\\/")
  index = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p>{_esc(desc)}</p>"
           + "".join(f"<p class='note skipped'>{_esc(n)}</p>" for n in notes)
           + "<h2>Latent density (log10 fraction of held-out tokens, live latents)</h2>"
           + _svg_histogram(log_density, 40, "log10 density", log_x=True)
           + "<h2>Latents</h2><p><input id='search' type='search' size='40' "
           "placeholder='search by token (top or output tokens, explanation)'></p>"
           "<p id='pager'><button id='prev'>&larr; prev</button><span id='pageinfo'></span>"
           "<button id='next'>next &rarr;</button></p>"
           f"<table id='latents'><thead>{head}</thead><tbody id='rows'></tbody></table>"
           f"<p class='note'>Built in {time.time() - t0:.0f} s.</p>"
           f"<script id='data' type='application/json'>{data}</script>"
           f"<script>{_INDEX_JS % {'page_size': page_size}}</script></body></html>")
  path = os.path.join(out_dir, "index.html")
  with open(path, "w", encoding="utf-8") as f:
    f.write(index)
  say(f"viewer of {len(shown)} latents -> {path} ({time.time() - t0:.1f} s)")
  return path


def _context_html(c: int, p: int, acts_S: np.ndarray, tokens_CxS, ef: int, tok, vmax: float,
                  window: tuple[int, int], value: float) -> str:
  S = tokens_CxS.shape[1]
  lo, hi = max(ef, p - window[0]), min(S, p + window[1] + 1)
  spans = []
  for q in range(lo, hi):
    a = float(acts_S[q])
    alpha = 0.0 if a <= 0 else 0.15 + 0.85 * min(1.0, a / vmax)
    style = f" style='background:rgba(230,126,34,{alpha:.2f})'" if a > 0 else ""
    cls = "tok max" if q == p else "tok"
    spans.append(f"<span class='{cls}'{style} title='{a:.3f}'>{_esc(_show(tok(tokens_CxS[c, q])))}"
                 "</span>")
  return (f"<div class='ctx' data-context='{c}'><span class='val'>{value:.3f}</span>"
          + ("\u2026" if lo > ef else "") + "".join(spans) + ("\u2026" if hi < S else "") + "</div>")


def _latent_page(j, r_j, v_j, top, tokens_CxS, ef, P, tok, rng, n_quantiles, per_quantile,
                 window, row, expl, top_out, bot_out, n_rows) -> str:
  vmax = float(v_j.max()) if len(v_j) else 1.0
  ctx_of = r_j // P

  def context(t):
    c, p = divmod(int(r_j[t]), P)
    acts = np.zeros(tokens_CxS.shape[1], np.float32)
    sel = ctx_of == c
    acts[r_j[sel] % P + ef] = v_j[sel]
    return _context_html(c, p + ef, acts, tokens_CxS, ef, tok, vmax, window, float(v_j[t]))

  parts = ["<h2>Top activations</h2><div class='top-contexts'>"
           + "".join(context(t) for t in top) + "</div>"]
  rest = np.setdiff1d(np.arange(len(v_j)), top)
  if len(rest):
    qs = np.quantile(v_j[rest], np.linspace(0, 1, n_quantiles + 1))
    parts.append("<h2>Samples from activation quantiles (of its non-zero activations, "
                 "top contexts excluded)</h2>")
    for q in reversed(range(n_quantiles)):
      inbin = rest[(v_j[rest] >= qs[q]) & ((v_j[rest] < qs[q + 1]) if q < n_quantiles - 1
                                           else (v_j[rest] <= qs[q + 1]))]
      if not len(inbin):
        continue
      pick = rng.choice(inbin, size=min(per_quantile, len(inbin)), replace=False)
      pick = pick[np.argsort(-v_j[pick])]
      parts.append(f"<h3 class='note'>quantile {q + 1}/{n_quantiles}: activation "
                   f"{qs[q]:.3g} .. {qs[q + 1]:.3g} ({len(inbin)} tokens)</h3>"
                   "<div class='quantile-contexts'>" + "".join(context(t) for t in pick)
                   + "</div>")
  hist = _svg_histogram(v_j, 30, "activation (non-zero)")
  pills = lambda items, cls: "".join(  # noqa: E731
      f"<span class='pill {cls}' title='{v:.3f}'>{_esc(_show(s))}</span>" for s, v in items)
  ex = "<p class='note'>No n-gram explanation (not sampled by `sae-jax eval`, or never fired).</p>"
  if expl is not None:
    ex = (f"<p>n-gram explanation: <span class='pill'>{_esc(_show(row['explanation'] or ''))}"
          f"</span> held-out precision {expl.get('precision', float('nan')):.3f}, recall "
          f"{expl.get('recall', float('nan')):.3f}, F1 {expl.get('f1', float('nan')):.3f}</p>")
  fmt = lambda v: "\u2014" if v is None else f"{v:.4g}"  # noqa: E731
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>latent {j}</title>"
          f"<style>{_CSS}</style></head><body><p><a href='../index.html'>&larr; index</a></p>"
          f"<h1>Latent {j}</h1><p>density {fmt(row['density'])} ({len(v_j):,} of {n_rows:,} "
          f"held-out tokens), mean activation {fmt(row['mean_act'])}, max {fmt(row['max_act'])}"
          f", explainability {fmt(row['score'])}</p>{ex}"
          "<div class='cols'><div><h2>Activation histogram</h2>" + hist + "</div>"
          "<div><h2>Output tokens (W_U · (g ⊙ W_dec[i]))</h2><p>top: "
          + pills(top_out, "") + "</p><p>bottom: " + pills(bot_out, "neg") + "</p>"
          "<p class='note'>Logit lens of the decoder direction through the final RMSNorm "
          "weight; skips the later blocks.</p></div></div>"
          + "".join(parts) + "</body></html>")
