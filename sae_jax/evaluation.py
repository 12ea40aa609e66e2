"""The evaluation suite of Gao et al. 2024 for any SAE of the zoo: downstream loss, probe
loss, ablation sparsity, explainability, and the basics (normalized MSE, L0, dead and
dense latents, latent density histogram).

    sae-jax eval RUN_DIR   [--measures basics,downstream,probes,ablation,explain]
    sae-jax eval SWEEP_DIR [--max-contexts 32 --max-latents 32]

`evaluate_runs` evaluates several SAEs of one activation cache together (the LM, the
held-out tokens, the probe tasks and the clean / ablation forward passes are shared);
`evaluation_measures` is the one-SAE entry point a trainer or sweep launcher can call at
an evaluation point. The measures live in `sae_jax.splice` (downstream loss, ablation
sparsity), `sae_jax.probes` and `sae_jax.explain`; this module loads runs, applies the
SAE to raw activations, shares the expensive parts and writes the reports.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sae_jax import config as config_lib, data, sae as sae_lib
from sae_jax.config import ConfigError

MEASURES = ("basics", "downstream", "probes", "ablation", "explain")
NEEDS_LM = ("downstream", "ablation")
NEEDS_TOKENS = ("downstream", "probes", "ablation", "explain")


@dataclasses.dataclass(frozen=True)
class Options:
  """Cost bounds of the measures.

  max_contexts: held-out contexts for the downstream loss (64 tokens each by default).
  max_latents: latents sampled for ablation sparsity and explainability.
  max_probe_examples: examples per probe task (balanced, half train half test).
  n_future: positions after an ablated latent whose logits count (Gao et al.: 16).
  batch_size: contexts per LM forward pass.
  seed: for the latent and example samples.
  """
  max_contexts: int = 32
  max_latents: int = 32
  max_probe_examples: int = 4000
  n_future: int = 16
  batch_size: int = 8
  seed: int = 0


# ----------------------------------------------------------------- the SAE on raw input


@functools.lru_cache(maxsize=32)
def _codec(architecture: str, hp: sae_lib.Hyper, input_norm: str):
  arch = sae_lib.get(architecture)

  def enc(params, extras, x_BxD, scale):
    x = data.normalize(x_BxD, input_norm, scale)
    if input_norm == "unit_norm":  # x = (raw - mu) / n, so raw = x * n + mu
      mu = jnp.mean(x_BxD, -1, keepdims=True)
      n = jnp.maximum(jnp.linalg.norm(x_BxD - mu, axis=-1, keepdims=True), 1e-6)
    elif input_norm == "mean_norm":
      mu, n = jnp.zeros_like(x_BxD[:, :1]), jnp.broadcast_to(1.0 / scale, x_BxD[:, :1].shape)
    else:
      mu, n = jnp.zeros_like(x_BxD[:, :1]), jnp.ones_like(x_BxD[:, :1])
    return arch.encode(params, x, extras, hp), (mu, n)

  def dec(params, z_BxN, mu_Bx1, n_Bx1):
    x_hat = arch.decode(params, z_BxN)
    if input_norm == "none":
      return x_hat
    return x_hat * n_Bx1 + mu_Bx1
  return jax.jit(enc), jax.jit(dec)


class SAEOnRaw:
  """An SAE applied to raw activations: normalise (`sae_jax.data.normalize`), encode,
  decode and un-normalise, through the architecture interface (`sae_jax.sae`).

  For input_norm "unit_norm" the per-token mean and norm are put back, for "mean_norm"
  the reconstruction is divided by the scale, for "none" it is returned as decoded.
  """

  def __init__(self, architecture: str, hp: sae_lib.Hyper, params: dict, extras: Any,
               input_norm: str, norm_scale: float = 1.0):
    self.architecture, self.hp, self.input_norm = architecture, hp, input_norm
    self.params = jax.tree.map(jnp.asarray, dict(params))
    self.extras = jax.tree.map(jnp.asarray, extras if extras is not None else {})
    self.norm_scale = jnp.asarray(norm_scale, jnp.float32)
    self._enc, self._dec = _codec(architecture, hp, input_norm)

  @property
  def n_latents(self) -> int:
    return int(self.hp.n_latents)

  @classmethod
  def from_state(cls, cfg: ml_collections.ConfigDict, state: dict) -> "SAEOnRaw":
    """From a resolved config and a checkpointed train state (dict or TrainState)."""
    from sae_jax import train  # pylint: disable=import-outside-toplevel
    get = state.get if isinstance(state, dict) else lambda k: getattr(state, k)
    return cls(cfg.sae.architecture, train.hyper(cfg), get("params"), get("extras"),
               cfg.sae.input_norm, float(np.asarray(get("norm_scale"))))

  def encode(self, x_BxD: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(z [B, n_latents] float32, the un-normalisation (mean, norm) of each token)."""
    z, norm = self._enc(self.params, self.extras, jnp.asarray(x_BxD, jnp.float32),
                        self.norm_scale)
    return np.asarray(z), norm

  def decode(self, z_BxN: np.ndarray, norm: tuple) -> np.ndarray:
    """Raw-space reconstruction [B, d_in] of codes from `encode`."""
    return np.asarray(self._dec(self.params, jnp.asarray(z_BxN), *norm))

  def reconstruct(self, x_BxD: np.ndarray) -> np.ndarray:
    """x_hat in raw activation space, float32 [B, d_in]."""
    z, norm = self.encode(x_BxD)
    return self.decode(z, norm)

  def reconstruct_torch(self, h_BxTxD):
    """`reconstruct` for a torch tensor [..., d_in] (a `sae_jax.splice.Replace`)."""
    import torch  # pylint: disable=import-outside-toplevel
    shape = h_BxTxD.shape
    x = h_BxTxD.reshape(-1, shape[-1]).float().cpu().numpy()
    return torch.from_numpy(np.array(self.reconstruct(x)).reshape(shape)).to(h_BxTxD.device)


# ------------------------------------------------------------------------- loading runs


def is_run_dir(path: str) -> bool:
  """A directory with checkpoints/ and its config (config.json, or records.json from
  `sae-jax train`, whose records hold the resolved config)."""
  return os.path.isdir(os.path.join(path, "checkpoints")) and any(
      os.path.isfile(os.path.join(path, f)) for f in ("config.json", "records.json"))


def run_dirs(path: str) -> list[str]:
  """[path] for a run directory (or its checkpoints/), else the run directories in a
  sweep directory. Raises ConfigError when there are none."""
  path = os.path.abspath(path)
  if os.path.basename(path) == "checkpoints":
    path = os.path.dirname(path)
  if is_run_dir(path):
    return [path]
  runs = sorted(os.path.join(path, d) for d in os.listdir(path)) if os.path.isdir(path) else []
  runs = [r for r in runs if is_run_dir(r)]
  if not runs:
    raise ConfigError(f"{path!r} is neither a run directory (checkpoints/ + config.json or "
                      "records.json) nor a "
                      "sweep directory holding some; give out_dir/<name> or out_dir/<name>/<run_id>")
  return runs


def _on_defaults(stored: dict) -> ml_collections.ConfigDict:
  """A stored config laid over today's defaults, so a run written before a config field
  was added still validates (the new field takes its default)."""
  base = config_lib.default_config().to_dict()

  def merge(b, s):
    for k, v in s.items():
      b[k] = merge(b[k], v) if isinstance(v, dict) and isinstance(b.get(k), dict) else v
    return b
  return ml_collections.ConfigDict(merge(base, stored))


def load_run(run_dir: str) -> tuple[ml_collections.ConfigDict, SAEOnRaw, dict]:
  """(resolved config, the SAE of the latest checkpoint, checkpoint meta) of a run.

  Raises:
    ConfigError: no config.json or no checkpoint in the run directory.
  """
  from sae_jax import checkpoint  # pylint: disable=import-outside-toplevel
  path = os.path.join(run_dir, "config.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  elif os.path.isfile(os.path.join(run_dir, "records.json")):
    with open(os.path.join(run_dir, "records.json"), encoding="utf-8") as f:
      stored = json.load(f)[-1]["config"]
  else:
    raise ConfigError(f"{run_dir!r} has no config.json or records.json; give a run directory "
                      "written by `sae-jax sweep` or `sae-jax train`")
  cfg = _on_defaults(stored)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(s.isdigit() for s in os.listdir(ckpt_dir)):
    raise ConfigError(f"{run_dir!r} has no checkpoint yet; train it first")
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  try:
    state, meta = ckpt.restore_untyped()
  finally:
    ckpt.close()
  meta = dict(meta or {}, step=int(np.asarray(state["step"])))
  return cfg, SAEOnRaw.from_state(cfg, state), meta


# -------------------------------------------------------------- shared per activation cache


class Shared:
  """What every SAE of one activation cache shares: the LM (loaded on first need), the
  tokenizer, the held-out tokens, the probe tasks and reference probes."""

  def __init__(self, cfg: ml_collections.ConfigDict, cache, options: Options = Options()):
    self.cfg, self.cache, self.options = cfg, cache, options
    self.meta = getattr(cache, "meta", {})
    self.layer = self.meta.get("layer")
    self.start = int(bool(self.meta.get("exclude_first", False)))
    self._lm = self._tokenizer = self._tokens = self._probe_tasks = None

  @property
  def tokens(self) -> np.ndarray:
    """int32 [C, S] held-out contexts. Raises ConfigError for a cache without tokens."""
    if self._tokens is None:
      if not hasattr(self.cache, "tokens"):
        raise ConfigError("this measure needs a language-model activation cache with tokens "
                          "(data.source=lm); use --measures basics for synthetic data")
      self._tokens = self.cache.tokens("eval")
    return self._tokens

  @property
  def lm(self):
    if self._lm is None:
      from sae_jax import lm as lm_lib  # pylint: disable=import-outside-toplevel
      d = self.cfg.data
      self._lm, self._tokenizer, _ = lm_lib.load_lm(
          self.meta.get("model", d.model), d.device, self.meta.get("torch_dtype", d.torch_dtype),
          cache_dir=config_lib.cache_root(self.cfg))
    return self._lm

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
      from sae_jax import lm as lm_lib  # pylint: disable=import-outside-toplevel
      folder, gguf = lm_lib.resolve_model(self.meta.get("model", self.cfg.data.model))
      self._tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    return self._tokenizer

  def rows(self, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Cache rows of (context, position) pairs (row r = context r // P, position
    r % P + start, `sae_jax.activations`)."""
    P = self.tokens.shape[1] - self.start
    return np.asarray(c, np.int64) * P + (np.asarray(p, np.int64) - self.start)

  def valid(self) -> np.ndarray:
    """bool [C, S]: positions that have a cache row."""
    C, S = self.tokens.shape
    P = S - self.start
    r = np.arange(C)[:, None] * P + np.arange(S)[None, :] - self.start
    return (np.arange(S)[None, :] >= self.start) & (r < self.cache.n_tokens("eval"))

  def probe_tasks(self) -> dict:
    """name -> dict(train=(rows, y), test=(rows, y), reference=...) for every usable task."""
    if self._probe_tasks is None:
      from sae_jax import probes  # pylint: disable=import-outside-toplevel
      tok = self.tokens
      tz = self.tokenizer
      texts = probes.token_texts(tz, tok)
      labels = probes.task_labels(tok, texts, getattr(tz, "all_special_ids", []),
                                  token_sources(self.cfg, self.meta, tz, tok))
      valid = self.valid()
      tasks = {}
      for i, (name, lab) in enumerate(labels.items()):
        split = probes.balanced_split(lab, valid, self.options.max_probe_examples,
                                      seed=self.options.seed + i)
        if split is None:
          continue
        (c0, p0, y0), (c1, p1, y1) = split
        x0 = self.cache.read("eval", self.rows(c0, p0))
        x1 = self.cache.read("eval", self.rows(c1, p1))
        tasks[name] = dict(x_train=x0, y_train=y0, x_test=x1, y_test=y1,
                           reference=probes.reference_probe(x0, y0, x1, y1),
                           n_train=len(y0), n_test=len(y1), positive_rate=float(lab[valid].mean()))
      self._probe_tasks = tasks
    return self._probe_tasks


def token_sources(cfg, meta: dict, tokenizer, tokens_CxS: np.ndarray) -> np.ndarray | None:
  """bool [C, S]: the token came from a King James Bible document, recovered by rebuilding
  the held-out contexts from the corpus exactly as the harvest packed them
  (`sae_jax.activations.context_tokens`). None when the corpus has no KJV documents or is
  streamed, or the rebuilt tokens differ from the cache's."""
  from sae_jax import corpus  # pylint: disable=import-outside-toplevel
  spec = meta.get("corpus", cfg.data.corpus)
  if corpus.is_streaming(spec):
    return None
  docs = corpus.load_documents(spec, config_lib.cache_root(cfg))
  if not any(d.source == "kjv" for d in docs):
    return None
  _, eval_docs = corpus.split_documents(docs, meta.get("eval_doc_fraction", cfg.data.eval_doc_fraction),
                                        meta.get("seed", cfg.seed))
  C, S = tokens_CxS.shape
  ids, src = [], []
  eos = tokenizer.eos_token_id
  for doc, piece in zip(eval_docs, corpus.tokenize_lazily(tokenizer, eval_docs)):
    ids.extend(list(piece) + ([eos] if eos is not None else []))
    src.extend([doc.source == "kjv"] * (len(piece) + (eos is not None)))
    if len(ids) >= C * S:
      break
  if len(ids) < C * S or not np.array_equal(np.asarray(ids[:C * S]).reshape(C, S), tokens_CxS):
    return None
  return np.asarray(src[:C * S], bool).reshape(C, S)


# ------------------------------------------------------------------------------ measures


def density_histogram(fires_N: np.ndarray, n_tokens: int, lo: float = -5.0,
                      step: float = 0.5) -> dict:
  """Histogram of log10(firing frequency) of the latents that fire; dead ones counted
  apart. edges: bin edges in log10 units, from `lo` (anything rarer goes in the first
  bin) to 0."""
  freq = np.asarray(fires_N, np.float64) / max(n_tokens, 1)
  alive = freq > 0
  edges = np.arange(lo, 0 + step / 2, step)
  counts, _ = np.histogram(np.clip(np.log10(freq[alive]), lo, 0), bins=edges)
  return {"edges": edges.tolist(), "counts": counts.tolist(), "dead": int((~alive).sum())}


def _encode_eval(sae: SAEOnRaw, shared: Shared, latents: np.ndarray | None,
                 batch: int = 4096) -> tuple[np.ndarray, np.ndarray | None]:
  """Firing counts [N] over every held-out row, and the activations [rows, M] of
  `latents` (None: not kept)."""
  n = shared.cache.n_tokens("eval")
  fires = np.zeros(sae.n_latents, np.int64)
  cols = []
  for lo in range(0, n, batch):
    z, _ = sae.encode(shared.cache.read("eval", np.arange(lo, min(n, lo + batch))))
    fires += (z > 0).sum(0)
    if latents is not None:
      cols.append(z[:, latents])
  return fires, (np.concatenate(cols) if latents is not None else None)


def _basics(cfg, sae: SAEOnRaw, shared: Shared) -> dict:
  from sae_jax import train  # pylint: disable=import-outside-toplevel
  state = dataclasses.make_dataclass("S", ["params", "extras", "norm_scale"])(
      sae.params, sae.extras, sae.norm_scale)
  return train.evaluate(state, shared.cache, cfg)


def _probes(sae: SAEOnRaw, shared: Shared) -> dict:
  from sae_jax import probes  # pylint: disable=import-outside-toplevel
  tasks = {}
  for name, t in shared.probe_tasks().items():
    z0, _ = sae.encode(t["x_train"])
    z1, _ = sae.encode(t["x_test"])
    best = probes.best_latent_probe(z0, t["y_train"], z1, t["y_test"])
    tasks[name] = dict(best, reference_loss=t["reference"]["loss"], n_train=t["n_train"],
                       n_test=t["n_test"], positive_rate=t["positive_rate"])
  if not tasks:
    return {"tasks": {}, "probe_loss": float("nan"), "probe_loss_reference": float("nan")}
  return {"tasks": tasks, "n_tasks": len(tasks), "chance": probes.LOG2,
          "probe_loss": float(np.mean([t["loss"] for t in tasks.values()])),
          "probe_loss_reference": float(np.mean([t["reference_loss"] for t in tasks.values()]))}


def _sample_latents(fires_N: np.ndarray, m: int, seed: int) -> np.ndarray:
  alive = np.flatnonzero(fires_N > 0)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(alive, min(m, len(alive)), replace=False)) if len(alive) else alive


def _acts_grid(shared: Shared, acts_RxM: np.ndarray) -> np.ndarray:
  """Cache-row activations -> [C, S, M] (0 at positions without a row)."""
  C, S = shared.tokens.shape
  valid = shared.valid()
  grid = np.zeros((C, S, acts_RxM.shape[1]), np.float32)
  c, p = np.nonzero(valid)
  grid[c, p] = acts_RxM[shared.rows(c, p)]
  return grid


def _explain(shared: Shared, latents: np.ndarray, grid_CxSxM: np.ndarray) -> dict:
  from sae_jax import explain  # pylint: disable=import-outside-toplevel
  res = explain.explain_latents(shared.tokens, grid_CxSxM, shared.valid())
  scored = [(int(j), r) for j, r in zip(latents, res) if r is not None]
  texts = None
  try:
    tz = shared.tokenizer
    texts = lambda g: tz.decode(list(g))  # noqa: E731
  except Exception:  # pylint: disable=broad-except
    pass
  per = [dict(latent=j, **r, text=texts(r["ngram"]) if texts else None) for j, r in scored]
  if not per:
    return {"latents": [], "n_scored": 0, "explain_precision": float("nan"),
            "explain_recall": float("nan"), "explain_f1": float("nan")}
  return {"n_sampled": int(len(latents)), "n_scored": len(per),
          "explain_precision": float(np.mean([r["precision"] for r in per])),
          "explain_recall": float(np.mean([r["recall"] for r in per])),
          "explain_f1": float(np.mean([r["f1"] for r in per])),
          "latents": [{**r, "ngram": list(r["ngram"])} for r in per]}


def _ablation(sae: SAEOnRaw, shared: Shared, latents: np.ndarray, grid_CxSxM: np.ndarray) -> dict:
  from sae_jax import splice  # pylint: disable=import-outside-toplevel
  S = grid_CxSxM.shape[1]
  T = shared.options.n_future
  occ = []
  for m, j in enumerate(latents):
    a = grid_CxSxM[..., m].copy()
    a[:, S - T + 1:] *= 1e-9 if S - T + 1 > shared.start else 1.0  # prefer T full positions
    c, p = np.unravel_index(np.argmax(a), a.shape)
    if grid_CxSxM[c, p, m] > 0:
      occ.append((int(j), int(c), int(p)))
  res = splice.ablation_sparsity(shared.lm, shared.tokens, shared.layer, shared.start, sae, occ,
                                 n_future=T, batch_size=shared.options.batch_size)
  good = [r for r in res if math.isfinite(r["effective_logits"])]
  return {"n_latents": len(good), "n_future": T,
          "ablation_sparsity": float(np.mean([r["effective_logits"] for r in good])) if good else float("nan"),
          "ablation_sparsity_fraction": float(np.mean([r["fraction"] for r in good])) if good else float("nan"),
          "latents": res}


def _downstream(saes: dict[str, SAEOnRaw], shared: Shared) -> dict:
  from sae_jax import splice  # pylint: disable=import-outside-toplevel
  tok = shared.tokens[:shared.options.max_contexts]
  mean = shared.cache.stats.get("mean") if hasattr(shared.cache, "stats") else None
  return splice.downstream_loss(shared.lm, tok, shared.layer, shared.start,
                                {name: s.reconstruct_torch for name, s in saes.items()},
                                mean, batch_size=shared.options.batch_size)


FLAT_KEYS = {
    "basics": ("normalized_mse", "mse", "l0", "dead_fraction", "dense_fraction"),
    "downstream": ("ce_clean", "ce_sae", "delta_ce", "kl", "ce_zero", "ce_mean",
                   "loss_recovered_zero", "loss_recovered_mean"),
    "probes": ("probe_loss", "probe_loss_reference"),
    "ablation": ("ablation_sparsity", "ablation_sparsity_fraction"),
    "explain": ("explain_precision", "explain_recall", "explain_f1"),
}


def parse_measures(spec: str | tuple | list | None) -> tuple[str, ...]:
  """"basics,downstream" -> ("basics", "downstream"); None or "all" -> every measure.
  Raises ConfigError naming an unknown one."""
  if spec is None or spec == "all":
    return MEASURES
  names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
  bad = [m for m in names if m not in MEASURES]
  if bad or not names:
    raise ConfigError(f"unknown measure(s) {', '.join(bad) or '(none)'}; choose from "
                      f"{','.join(MEASURES)}")
  return tuple(m for m in MEASURES if m in names)


def evaluate_saes(items: dict[str, tuple[ml_collections.ConfigDict, SAEOnRaw]], shared: Shared,
                  measures=MEASURES, log=None) -> dict[str, dict]:
  """Every measure of several SAEs on one activation cache.

  Args:
    items: name -> (resolved config, SAE).
    shared: the cache's `Shared` (LM, tokens, probe tasks).
    measures: a subset of MEASURES.

  Returns:
    name -> report dict: one sub-dict per measure, "flat" (the scalars, `FLAT_KEYS`) and
    "timings_s" (seconds per measure; the downstream pass is shared, so its time is
    split evenly and "downstream_shared_s" gives the total).

  Raises:
    ConfigError: a token-based measure on a cache without tokens, or a layer that cannot
      be spliced.
  """
  measures = parse_measures(measures)
  log = log or (lambda *_: None)
  reports = {name: {"timings_s": {}} for name in items}
  if "downstream" in measures:
    t0 = time.time()
    ds = _downstream({name: s for name, (_, s) in items.items()}, shared)
    dt = time.time() - t0
    base = {k: ds[k]["ce"] for k in ("clean", "zero", "mean") if k in ds}
    for name in items:
      r = ds[name]
      reports[name]["downstream"] = dict(
          ce_clean=base["clean"], ce_sae=r["ce"], delta_ce=r["delta_ce"], kl=r["kl"],
          ce_zero=base.get("zero"), ce_mean=base.get("mean"),
          loss_recovered_zero=r.get("loss_recovered_zero"),
          loss_recovered_mean=r.get("loss_recovered_mean"), n_tokens=ds["n_tokens"],
          n_contexts=int(min(len(shared.tokens), shared.options.max_contexts)),
          splice_from_position=shared.start)
      reports[name]["timings_s"]["downstream"] = dt / len(items)
      reports[name]["timings_s"]["downstream_shared_s"] = dt
    log(f"downstream loss of {len(items)} SAE(s): {dt:.1f} s")
  if "probes" in measures:
    t0 = time.time()
    shared.probe_tasks()
    log(f"probe tasks and reference probes: {time.time() - t0:.1f} s (shared)")
  for name, (cfg, s) in items.items():
    rep, tm = reports[name], reports[name]["timings_s"]
    if "basics" in measures:
      t0 = time.time()
      rep["basics"] = _basics(cfg, s, shared)
      fires, _ = _encode_eval(s, shared, None)
      rep["basics"]["density_histogram"] = density_histogram(fires, shared.cache.n_tokens("eval"))
      tm["basics"] = time.time() - t0
    if "probes" in measures:
      t0 = time.time()
      rep["probes"] = _probes(s, shared)
      tm["probes"] = time.time() - t0
    if "ablation" in measures or "explain" in measures:
      t0 = time.time()
      fires, _ = _encode_eval(s, shared, None)
      latents = _sample_latents(fires, shared.options.max_latents, shared.options.seed)
      _, acts = _encode_eval(s, shared, latents)
      grid = _acts_grid(shared, acts)
      t_enc = time.time() - t0
      if "explain" in measures:
        t0 = time.time()
        rep["explain"] = _explain(shared, latents, grid)
        tm["explain"] = time.time() - t0 + t_enc
      if "ablation" in measures:
        t0 = time.time()
        rep["ablation"] = _ablation(s, shared, latents, grid)
        tm["ablation"] = time.time() - t0 + (0 if "explain" in measures else t_enc)
    flat = {}
    for m in measures:
      src = rep.get(m, {})
      flat.update({k: src.get(k) for k in FLAT_KEYS[m] if k in src})
    rep["flat"] = flat
    log(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in flat.items()
                                if isinstance(v, (int, float))))
  return reports


_SHARED: dict[str, Shared] = {}


def evaluation_measures(cfg: ml_collections.ConfigDict, state, cache, measures=("downstream",),
                        options: Options = Options()) -> dict:
  """The flat scalars of `measures` for one SAE, for a trainer or launcher to add to its
  evaluation records (keys: `FLAT_KEYS`, e.g. delta_ce, kl, loss_recovered_zero,
  probe_loss). `state` is a TrainState or a checkpoint dict (params, extras,
  norm_scale). The LM, tokens and probe tasks are kept per cache across calls.

  Raises:
    ConfigError: as `evaluate_saes`.
  """
  key = f"{getattr(cache, 'path', id(cache))}|{options}"
  if key not in _SHARED:
    _SHARED.clear()
    _SHARED[key] = Shared(cfg, cache, options)
  rep = evaluate_saes({"sae": (cfg, SAEOnRaw.from_state(cfg, jax.device_get(state)
                                                        if not isinstance(state, dict) else state))},
                      _SHARED[key], measures)["sae"]
  return rep["flat"]


def evaluate_point(run_dir: str, cache, measures, options: Options = Options(),
                   shared: dict | None = None) -> dict:
  """Evaluate a finished run of a sweep on its (already open) activation cache: write
  <run_dir>/eval.json and return the flat scalars to merge into its final record.

  `shared` is a dict the caller keeps across points (e.g. beside its cache memo), so the
  LM, tokens and probe tasks of a cache are built once per sweep.

  Raises:
    ConfigError: as `load_run` and `evaluate_saes`.
  """
  cfg, s, meta = load_run(run_dir)
  memo = shared if shared is not None else {}
  key = f"{getattr(cache, 'path', id(cache))}|{options}"
  if key not in memo:
    memo[key] = Shared(cfg, cache, options)
  measures = parse_measures(measures)
  if not hasattr(cache, "tokens"):
    measures = tuple(m for m in measures if m not in NEEDS_TOKENS)
  name = os.path.basename(os.path.abspath(run_dir))
  rep = evaluate_saes({name: (cfg, s)}, memo[key], measures)[name]
  write_json_atomic(os.path.join(run_dir, "eval.json"),
                    dict(run_id=name, run_dir=run_dir, step=meta.get("step"), measures=list(measures),
                         options=dataclasses.asdict(options), **rep))
  return rep["flat"]


# --------------------------------------------------------------------------- reports


def _json_safe(obj):
  if isinstance(obj, dict):
    return {str(k): _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_safe(v) for v in obj]
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.ndarray):
    return _json_safe(obj.tolist())
  return obj


def write_json_atomic(path: str, obj, jsonl: bool = False) -> None:
  """Write JSON (or JSON lines) to a temporary file beside `path`, then rename it."""
  import tempfile  # pylint: disable=import-outside-toplevel
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      if jsonl:
        for rec in obj:
          f.write(json.dumps(_json_safe(rec)) + "\n")
      else:
        json.dump(_json_safe(obj), f, indent=1)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def format_table(rows: list[dict], keys: list[str]) -> str:
  """A plain-text table: one row per report, one column per key."""
  head = ["run"] + keys
  body = [[r.get("run_id", "")] + [_fmt(r.get(k)) for k in keys] for r in rows]
  widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
  line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
  return "\n".join([line(head)] + [line(b) for b in body])


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def evaluate_runs(path: str, measures=MEASURES, options: Options = Options(),
                  log=print) -> list[dict]:
  """`sae-jax eval`: evaluate a run directory, or every run of a sweep directory.

  Writes <run_dir>/eval.json per run (atomically) and, for a sweep directory,
  <sweep_dir>/eval.jsonl (one flat record per run) and
  <sweep_dir>/plots/delta_ce_vs_normalized_mse.{png,pdf} when both measures ran.
  Runs are grouped by activation cache; each group loads the LM once and shares the
  clean and ablation forward passes.

  Returns:
    The flat records (run_id, n_latents, k, architecture, ..., the measures' scalars).

  Raises:
    ConfigError: not a run or sweep directory, an unknown measure, or as `evaluate_saes`.
  """
  from sae_jax import sources  # pylint: disable=import-outside-toplevel
  measures = parse_measures(measures)
  dirs = run_dirs(path)
  groups: dict[str, list] = {}
  for d in dirs:
    cfg, s, meta = load_run(d)
    key = json.dumps(cfg.data.to_dict(), sort_keys=True, default=str) + str(cfg.seed)
    groups.setdefault(key, []).append((d, cfg, s, meta))
  records = []
  for group in groups.values():
    cfg0 = group[0][1]
    t0 = time.time()
    cache = sources.get_source(cfg0, progress=False)
    shared = Shared(cfg0, cache, options)
    log(f"activation cache {getattr(cache, 'path', 'synthetic')} ({time.time() - t0:.1f} s)")
    group_measures = measures
    if not hasattr(cache, "tokens"):
      group_measures = tuple(m for m in measures if m not in NEEDS_TOKENS)
      log(f"  no LM tokens in this source (data.source={cfg0.data.source}): skipping "
          f"{', '.join(m for m in measures if m in NEEDS_TOKENS) or 'nothing'}")
    reports = evaluate_saes({os.path.basename(d): (cfg, s) for d, cfg, s, _ in group}, shared,
                            group_measures, log=lambda msg: log(f"  {msg}"))
    for d, cfg, s, meta in group:
      rep = reports[os.path.basename(d)]
      info = dict(run_id=os.path.basename(d), run_dir=d, architecture=cfg.sae.architecture,
                  n_latents=cfg.sae.n_latents, k=cfg.sae.get("k"),
                  sparsity_coefficient=cfg.sae.get("sparsity_coefficient"),
                  input_norm=cfg.sae.input_norm, step=meta.get("step"),
                  tokens=meta.get("step", 0) * cfg.train.batch_size,
                  model=shared.meta.get("model"), layer=shared.layer)
      from sae_jax import flops  # pylint: disable=import-outside-toplevel
      info["flops"] = flops.training_flops(cache.d_in, cfg.sae.n_latents, info["tokens"])
      write_json_atomic(os.path.join(d, "eval.json"),
                        dict(info, measures=list(group_measures), options=dataclasses.asdict(options),
                             **{k: v for k, v in rep.items()}))
      records.append(dict(info, **rep["flat"], timings_s=rep["timings_s"]))
  keys = [k for m in measures for k in FLAT_KEYS[m]
          if k in ("normalized_mse", "l0", "dead_fraction", "dense_fraction", "delta_ce", "kl",
                   "loss_recovered_zero", "loss_recovered_mean", "probe_loss",
                   "probe_loss_reference", "ablation_sparsity", "explain_precision",
                   "explain_recall")]
  log(format_table(records, keys))
  if len(dirs) > 1 or not is_run_dir(os.path.abspath(path)):
    sweep_dir = os.path.dirname(dirs[0])
    write_json_atomic(os.path.join(sweep_dir, "eval.jsonl"), records, jsonl=True)
    if "basics" in measures and "downstream" in measures:
      written = plot_delta_ce_vs_nmse(records, os.path.join(sweep_dir, "plots",
                                                            "delta_ce_vs_normalized_mse"))
      log(f"plot -> {written[0]}")
  return records


def plot_delta_ce_vs_nmse(records: list[dict], path: str) -> list[str]:
  """ΔCE vs normalized MSE, one point per SAE, coloured by n_latents, one marker per k
  (`analysis.plots` style). Returns the files written (png, pdf)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  from matplotlib.colors import LogNorm  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  import matplotlib  # pylint: disable=import-outside-toplevel
  from analysis import plots  # pylint: disable=import-outside-toplevel
  recs = [r for r in records if r.get("delta_ce") is not None and r.get("normalized_mse") is not None]
  with matplotlib.rc_context(plots.STYLE):
    fig = Figure(figsize=plots.FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ns = [r["n_latents"] for r in recs] or [1]
    norm = LogNorm(min(ns), max(ns) if max(ns) > min(ns) else min(ns) * 2)
    markers = "osD^v<>"
    ks = sorted({str(r.get("k")) for r in recs})
    for i, k in enumerate(ks):
      rs = [r for r in recs if str(r.get("k")) == k]
      sc = ax.scatter([r["normalized_mse"] for r in rs], [r["delta_ce"] for r in rs],
                      c=[r["n_latents"] for r in rs], cmap=plots.N_CMAP, norm=norm,
                      marker=markers[i % len(markers)], label=f"k={k}", edgecolors="none")
    if recs:
      fig.colorbar(sc, ax=ax, label="n_latents")
      ax.legend(handles=[Line2D([], [], marker=markers[i % len(markers)], color="0.35", ls="",
                                label=f"k={k}") for i, k in enumerate(ks)])
    for axis, set_scale, key in ((ax.xaxis, ax.set_xscale, "normalized_mse"),
                                 (ax.yaxis, ax.set_yscale, "delta_ce")):
      vals = [r[key] for r in recs]
      if vals and min(vals) > 0 and max(vals) / min(vals) > 10:  # log only over a decade+
        set_scale("log")
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(plots.LOSS_LABEL)
    ax.set_ylabel("ΔCE (nats/token), SAE spliced in")
    ax.set_title("Downstream loss vs reconstruction")
  return plots.save_figure(fig, path)
