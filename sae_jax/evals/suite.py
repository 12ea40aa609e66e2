"""The evaluation suite of Gao et al. 2024 for any SAE of the zoo: downstream loss, probe
loss, ablation sparsity, explainability, and the basics (normalized MSE, L0, dead and
dense latents, latent density histogram).

    sae-jax eval RUN_DIR   [--measures basics,downstream,probes,ablation,explain]
    sae-jax eval SWEEP_DIR [--max-contexts 32 --max-latents 32]

`evaluate_runs` evaluates several SAEs of one activation cache together (the LM, the
held-out tokens, the probe tasks and the clean / ablation forward passes are shared);
`evaluation_measures` is the one-SAE entry point at an evaluation point of training
(`train_measures_evaluator`). The measures live in `sae_jax.evals.measures` (on top of
`splice`, `probes` and `explain`); runs are loaded by `sae_jax.evals.runs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import ml_collections

from sae_jax import files
from sae_jax.data import sources
from sae_jax.errors import ConfigError
from sae_jax.evals import measures as measure_lib
from sae_jax.evals.runs import SAEOnRaw, is_run_dir, load_run, run_dirs
from sae_jax.evals.shared import Options, Shared
from sae_jax.training import flops

MEASURES = ("basics", "downstream", "probes", "ablation", "explain")
NEEDS_LM = ("downstream", "ablation")
NEEDS_TOKENS = ("downstream", "probes", "ablation", "explain")
FLAT_KEYS = measure_lib.FLAT_KEYS


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
    ds = measure_lib.downstream({name: s for name, (_, s) in items.items()}, shared)
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
      rep["basics"] = measure_lib.basics(cfg, s, shared)
      fires, _ = measure_lib.encode_eval(s, shared, None)
      rep["basics"]["density_histogram"] = measure_lib.density_histogram(fires, shared.cache.n_tokens("eval"))
      tm["basics"] = time.time() - t0
    if "probes" in measures:
      t0 = time.time()
      rep["probes"] = measure_lib.probe_loss(s, shared)
      tm["probes"] = time.time() - t0
    if "ablation" in measures or "explain" in measures:
      t0 = time.time()
      fires, _ = measure_lib.encode_eval(s, shared, None)
      latents = measure_lib.sample_latents(fires, shared.options.max_latents, shared.options.seed)
      _, acts = measure_lib.encode_eval(s, shared, latents)
      grid = measure_lib.acts_grid(shared, acts)
      t_enc = time.time() - t0
      if "explain" in measures:
        t0 = time.time()
        rep["explain"] = measure_lib.explainability(shared, latents, grid)
        tm["explain"] = time.time() - t0 + t_enc
      if "ablation" in measures:
        t0 = time.time()
        rep["ablation"] = measure_lib.ablation(s, shared, latents, grid)
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
  files.write_json_atomic(os.path.join(run_dir, "eval.json"),
                    dict(run_id=name, run_dir=run_dir, step=meta.get("step"), measures=list(measures),
                         options=dataclasses.asdict(options), **rep))
  return rep["flat"]


# --------------------------------------------------------------------------- reports


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
  <sweep_dir>/eval.jsonl (one flat record per run); `sae-jax eval` then draws
  <sweep_dir>/plots/delta_ce_vs_normalized_mse.{png,pdf} when both measures ran
  (`analysis.plots.plot_delta_ce_vs_nmse`).
  Runs are grouped by activation cache; each group loads the LM once and shares the
  clean and ablation forward passes.

  Returns:
    The flat records (run_id, n_latents, k, architecture, ..., the measures' scalars).

  Raises:
    ConfigError: not a run or sweep directory, an unknown measure, or as `evaluate_saes`.
  """
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
      info["flops"] = flops.training_flops(cache.d_in, cfg.sae.n_latents, info["tokens"])
      files.write_json_atomic(os.path.join(d, "eval.json"),
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
    files.write_json_atomic(os.path.join(sweep_dir, "eval.jsonl"), records, jsonl=True)
  return records


def sweep_dir_of(path: str) -> str | None:
  """The sweep directory `evaluate_runs(path)` wrote eval.jsonl into, or None for one run."""
  dirs = run_dirs(path)
  if len(dirs) > 1 or not is_run_dir(os.path.abspath(path)):
    return os.path.dirname(dirs[0])
  return None


def train_measures_evaluator(cfg: ml_collections.ConfigDict, state, source) -> dict:
  """A trainer `Evaluator` (`sae_jax.training.trainer`): the flat scalars of
  `train.eval_measures` at an evaluation point, {} when none are asked for."""
  t = cfg.train
  if not t.eval_measures:
    return {}
  options = Options(max_contexts=t.eval_max_contexts, max_latents=t.eval_max_latents)
  return evaluation_measures(cfg, state, source, tuple(t.eval_measures), options)


