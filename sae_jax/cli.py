"""`sae-jax`: harvest activations, train one SAE, run a sweep, fit scaling laws.

    sae-jax harvest [--sweep FILE] [--set data.layer=10 ...] [--verify] [--corpus-encoding ENC]
    sae-jax train   [--sweep FILE] [--set sae.n_latents=4096 sae.k=32 ...] [--corpus-encoding ENC]
    sae-jax sweep   FILE [--set ...] [--override-points] [--no-fit] [--dry-run]
                    [--executor inline|local|slurm] [--group-size G] [--slurm KEY=VALUE ...]
    sae-jax export  RUN_DIR [--out DIR]
    sae-jax push    RUN_DIR REPO_ID [--subdir S] [--dry-run] [--out DIR] [--private]
    sae-jax fit     RESULTS [--out DIR] [--filter k=32 ...]
    sae-jax predict RESULTS --n-latents N --k K --tokens T
    sae-jax plan    RESULTS --compute C [--k K] [--write FILE]
    sae-jax view    RUN_DIR [--out DIR] [--max-latents 512] [--max-contexts 1024]
    sae-jax steer   PATH --prompt TEXT --latent I --value V [--latent J --value W ...]
                    [--mode clamp|add] [--max-new-tokens 40] [--seed S]
    sae-jax convert SRC OUT --to saelens|sae_jax
    sae-jax eval    RUN_DIR|SWEEP_DIR [--measures basics,downstream,probes,ablation,explain]
                    [--max-contexts C] [--max-latents M]

Every error a user can fix is printed as one line (`sae-jax: error: ...`), exit status 2.

This module is the composition root: the one library module that imports the `sweeps`
and `analysis` packages (import-linter's contracts allow it alone). Each subcommand
imports what it runs when it runs, so that `sae-jax --help` or `sae-jax fit` never loads
torch and transformers.
"""

from __future__ import annotations

import argparse
import os
import sys

from sae_jax import config as config_lib, files, overrides as overrides_lib, signals
from sae_jax.errors import ConfigError
from sae_jax.training import distributed
from sweeps import points

# Subcommands import their modules inside their functions, each marked "heavy": those
# modules load torch / transformers / matplotlib, which the other subcommands never need.


def _add_config_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--sweep", metavar="FILE",
                 help="take the base config of this sweep file (default: sae_jax.config defaults)")
  p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                 help="override config fields, e.g. --set sae.k=16 data.layer=10 data.corpus=my.txt")
  _add_encoding_arg(p)


def _add_encoding_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument("--corpus-encoding", metavar="ENC",
                 help="encoding of local .txt/.jsonl corpus files, e.g. latin-1 (default "
                 "utf-8; same as --set data.corpus_encoding=ENC)")


def _overrides(args) -> dict:
  """--set KEY=VALUE ... plus the options that stand for a config key."""
  out = overrides_lib.parse(args.set)
  if args.corpus_encoding is not None:
    out["data.corpus_encoding"] = args.corpus_encoding
  return out


def _config(args) -> "config_lib.ml_collections.ConfigDict":
  if args.sweep:
    base, _ = points.load_sweep(args.sweep)
  else:
    base = config_lib.default_config()
  return overrides_lib.apply(base, _overrides(args))


def _harvest(args) -> None:
  from sae_jax.data import harvest  # heavy: torch, transformers
  cfg = _config(args)
  config_lib.validate(cfg)
  if cfg.data.get("cache", "disk") == "none":
    raise ConfigError("sae-jax harvest builds the disk cache, and data.cache='none' asks for "
                      "none; drop data.cache='none' to harvest, or train directly with it")
  index, n_proc = distributed.process()  # several: each harvests its part (README)
  cache = next(iter(harvest.get_or_harvest_many(
      cfg, None, verify=args.verify, process=(index, n_proc),
      barrier=distributed.barrier if n_proc > 1 else None).values()))
  if index:
    return
  m = cache.meta
  print(f"{cache.path}\n  model {m['model']} layer {m['layer']} d_in {cache.d_in}: "
        f"{cache.n_tokens('train'):,} train + {cache.n_tokens('eval'):,} eval tokens"
        + (", every sha256 verified" if args.verify else ""))


def _train(args) -> None:
  import jax  # heavy
  from sae_jax import evals  # heavy: torch, transformers (the evaluation suite)
  from sae_jax.data import sources
  from sae_jax.training import trainer
  cfg = _config(args)
  share_gpu_with_lm(cfg)  # before JAX's first use of a GPU
  config_lib.resolve(cfg)
  out = os.path.join(cfg.out_dir, cfg.name)
  files.check_writable(out)
  cache = sources.get_source(cfg)
  resolved = config_lib.resolve(cfg, cache.d_in)
  point = {"sae.n_latents": resolved.sae.n_latents, "sae.k": resolved.sae.k}
  rid = points.run_id(point, resolved)
  run_dir = os.path.join(out, rid)
  lock = points.point_lock(out, rid)
  if jax.process_count() == 1 and not lock.acquire(blocking=False):
    raise ConfigError(f"{run_dir} is being trained by another process (pid {lock.holder()}); "
                      "wait for it to finish, or set out_dir=... or name=... for a separate run")
  try:
    if distributed.is_primary():  # as a sweep does: eval, view and export read it
      os.makedirs(run_dir, exist_ok=True)
      files.write_json_atomic(os.path.join(run_dir, "config.json"), resolved.to_dict())
    records = trainer.train(resolved, cache, run_dir,
                            {"sweep": cfg.name, "run_id": rid, "model": cache.meta["model"],
                             "layer": cache.meta["layer"]}, evaluators=evals.TRAINING_EVALUATORS)
    if not distributed.is_primary():
      return
    files.write_json_atomic(os.path.join(run_dir, "records.json"), records)
    if os.path.exists(os.path.join(run_dir, trainer.FAILED)):
      os.remove(os.path.join(run_dir, trainer.FAILED))  # an earlier failure, now retried
    last = records[-1]
    print(f"{run_dir}: normalized MSE {last['normalized_mse']:.4f}, L0 {last['l0']:.1f}, "
          f"dead {last['dead_fraction']:.3f} after {last['tokens']:,} tokens")
  finally:
    lock.release()


LM_GPU_SHARE = "0.5"  # JAX's share of a GPU it shares with the LM (data.cache="none")


def share_gpu_with_lm(cfg) -> None:
  """data.cache="none" runs the LM (torch) and the SAEs (JAX) in one process, on one GPU
  where there is one. JAX preallocates 75% of a GPU's memory at its first use, which
  leaves torch too little for the LM, so this gives JAX half (XLA_PYTHON_CLIENT_MEM_FRACTION
  = LM_GPU_SHARE) unless the user set that variable. Effective only before JAX's first
  use of the device: the CLI calls it right after reading the config. No effect on a CPU."""
  if cfg.data.get("cache", "disk") == "none":
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", LM_GPU_SHARE)


def _sweep(args) -> None:
  from sweeps import cluster, launch, plan  # heavy: torch, transformers
  overrides = _overrides(args)
  share_gpu_with_lm(overrides_lib.apply(points.load_sweep(args.file)[0], overrides))
  params = cluster.parse_params(args.slurm)
  if args.dry_run:
    p = plan.plan(args.file, overrides, args.group_size, args.device_memory_gb,
                  args.device_flops, n_devices=cluster.job_devices(args.executor, params),
                  measure=True, elsewhere=args.executor == "slurm",
                  override_points=args.override_points)
    print(plan.format_plan(p, args.executor))
    plan.check_fits(p)
    plan.check_disk(p)
  elif args.executor == "inline":
    launch.run_sweep(args.file, overrides, fit=not args.no_fit,
                     device_memory_gb=args.device_memory_gb, saes_per_pass=args.saes_per_pass,
                     override_points=args.override_points)
  else:
    cluster.run_sweep_jobs(args.file, overrides, args.executor, args.group_size, params,
                           fit=not args.no_fit, device_memory_gb=args.device_memory_gb,
                           override_points=args.override_points)


def _export(args) -> None:
  from sae_jax.tools import export  # heavy: orbax
  if not os.path.isdir(os.path.join(args.run_dir, "checkpoints")):
    raise ConfigError(f"{args.run_dir!r} has no checkpoints/; give a run directory "
                                 "(out_dir/<name>/<run_id>)")
  print(export.export(args.run_dir, args.out))


def _push(args) -> None:
  from sae_jax.tools import hub  # heavy: orbax, the data layer
  folder, listed = hub.push(args.run_dir, args.repo_id, args.subdir, args.out,
                            dry_run=args.dry_run, private=args.private)
  verb = "would upload" if args.dry_run else "uploaded"
  print(f"{folder}: {verb} {len(listed)} files to https://huggingface.co/{args.repo_id}")
  for path, n in listed:
    print(f"  {path}  ({n:,} bytes)")


def _eval(args) -> None:
  from analysis import eval_plots  # heavy: matplotlib, torch, transformers
  from sae_jax.evals import suite
  if args.max_contexts < 1 or args.max_latents < 1:
    raise ConfigError("--max-contexts and --max-latents must be at least 1")
  measures = suite.parse_measures(args.measures)
  records = suite.evaluate_runs(args.path, measures,
                                suite.Options(max_contexts=args.max_contexts,
                                              max_latents=args.max_latents))
  sweep_dir = suite.sweep_dir_of(args.path)
  if sweep_dir is not None and "basics" in measures and "downstream" in measures:
    written = eval_plots.plot_delta_ce_vs_nmse(
        records, os.path.join(sweep_dir, "plots", "delta_ce_vs_normalized_mse"))
    print(f"plot -> {written[0]}")


def _view(args) -> None:
  from sae_jax.tools import viewer  # heavy: torch, transformers
  print(viewer.build(args.run_dir, args.out, max_latents=args.max_latents,
                     max_contexts=args.max_contexts, seed=args.seed))


def _steer(args) -> None:
  from sae_jax.tools import steering  # heavy: torch, transformers
  if len(args.latent) != len(args.value) or not args.latent:
    raise ConfigError("give --latent I --value V in pairs (one --value per --latent)")
  clamps = [steering.Clamp(i, v, args.mode) for i, v in zip(args.latent, args.value)]
  model, tokenizer, params, cfg, layer = steering.load(args.path, args.model, args.layer,
                                                       clamps=clamps)
  out = steering.generate(model, tokenizer, params, cfg, layer, args.prompt, clamps,
                          args.max_new_tokens, args.seed, args.temperature)
  what = ", ".join(f"latent {c.latent} {'=' if c.mode == 'clamp' else '+='} {c.value:g}"
                   for c in clamps)
  print(f"prompt: {args.prompt!r} (layer {layer})")
  print(f"unsteered: {out['unsteered']!r}")
  print(f"steered ({what}): {out['steered']!r}")


def _convert(args) -> None:
  from sae_jax.tools import interchange  # heavy: jax, safetensors
  if args.to == "saelens":
    print(interchange.to_saelens(args.src, args.out))
  else:
    print(interchange.write_export(*interchange.load(args.src), args.out))


def _fit(args) -> None:
  from analysis import report  # heavy: matplotlib, scipy
  report.run(args)


def _predict(args) -> None:
  from analysis import forecast  # heavy: matplotlib, scipy
  forecast.run_predict(args)


def _plan(args) -> None:
  from analysis import forecast  # heavy: matplotlib, scipy
  forecast.run_plan(args)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="sae-jax", description="Sparse autoencoders on language-model activations, "
      "and their scaling laws.")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("harvest", help="harvest (or reuse) an activation cache",
                     description="Run the LM over the corpus and cache the residual stream at "
                     "data.layer. Same settings reuse the cache (checking sizes and shapes "
                     "only); a half-written one is completed.")
  _add_config_args(p)
  p.add_argument("--verify", action="store_true",
                 help="also check the sha256 of every file of a reused cache (a full read); "
                 "a bad file is named with the directory to delete")
  p.set_defaults(fn=_harvest)

  p = sub.add_parser("train", help="train one SAE",
                     description="Train one TopK SAE (Gao et al. 2024) on the cached "
                     "activations; resumes from its last checkpoint under out_dir/name/.")
  _add_config_args(p)
  p.set_defaults(fn=_train)

  p = sub.add_parser("sweep", help="run a sweep file end to end",
                     description="Harvest, train every point (finished ones are skipped), "
                     "write out_dir/<name>/results.jsonl, fit the scaling laws and plot.")
  p.add_argument("file", help="sweep file, e.g. sweeps/quickstart.py")
  p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                 help="override the sweep's base config, e.g. --set out_dir=/tmp/runs")
  _add_encoding_arg(p)
  p.add_argument("--override-points", action="store_true",
                 help="apply --set keys that the sweep's points also set to every point "
                 "(without it such a key is an error)")
  p.add_argument("--no-fit", action="store_true", help="skip the fits and plots at the end")
  p.add_argument("--dry-run", action="store_true",
                 help="print the plan (run ids, FLOPs, memory, disk, wall time per point, jobs) "
                 "and stop: no harvest, no LM, no training, nothing written; refuses a plan "
                 "that does not fit the device memory or the free disk")
  p.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline",
                 help="inline: this process (default); local: submitit jobs as local "
                 "processes; slurm: submitit jobs on SLURM")
  p.add_argument("--saes-per-pass", type=int, default=8, metavar="S",
                 help="points sharing a data source and batch order train together, up to S "
                 "SAEs per pass over the data (each batch read once); default 8")
  p.add_argument("--group-size", type=int, default=1, metavar="G",
                 help="points per job (local, slurm); default 1")
  p.add_argument("--slurm", nargs="*", default=[], metavar="KEY=VALUE",
                 help="submitit parameters, e.g. slurm_partition=gpu gpus_per_node=1 "
                 "timeout_min=240 slurm_account=ABC (default timeout_min: 60 on SLURM)")
  p.add_argument("--device-memory-gb", type=float, metavar="GB",
                 help="memory per device for the fit check (default: the device's "
                 "memory_stats, else host memory / devices; on SLURM each job checks)")
  p.add_argument("--device-flops", type=float, metavar="FLOPS",
                 help="FLOP/s of one device for --dry-run wall times (default: a timed matmul)")
  p.set_defaults(fn=_sweep)

  p = sub.add_parser("export", help="export a run as safetensors + JSON",
                     description="Write RUN_DIR/export/sae.safetensors and config.json from "
                     "the run's latest checkpoint (sweeps do this for every finished point); "
                     "load them with sae_jax.tools.export_reference, numpy only.")
  p.add_argument("run_dir", help="a run directory, e.g. runs/quickstart/<run_id>")
  p.add_argument("--out", help="output directory (default RUN_DIR/export)")
  p.set_defaults(fn=_export)

  p = sub.add_parser("push", help="upload a finished run to the Hugging Face Hub",
                     description="Build RUN_DIR/hub/ (SAELens's cfg.json + "
                     "sae_weights.safetensors, our config.json + sae.safetensors, records.json, "
                     "sparsity.safetensors) and upload it with huggingface_hub's upload_folder. "
                     "Load it back with sae_jax.tools.interchange.load('hf://REPO_ID/SUBDIR').")
  p.add_argument("run_dir", help="a finished run directory, e.g. runs/quickstart/<run_id>")
  p.add_argument("repo_id", help="owner/name of the model repository (created if missing)")
  p.add_argument("--subdir", help="folder inside the repository (default: its root)")
  p.add_argument("--out", help="where to build the folder (default RUN_DIR/hub)")
  p.add_argument("--dry-run", action="store_true",
                 help="build the folder and list what would go up; upload nothing")
  p.add_argument("--private", action="store_true", help="create the repository private")
  p.set_defaults(fn=_push)

  p = sub.add_parser("eval", help="evaluate SAEs: downstream loss, probes, ablation, explanations",
                     description="Gao et al. 2024's evaluation suite for a run directory (writes "
                     "RUN_DIR/eval.json) or every run of a sweep directory (also eval.jsonl and "
                     "plots/delta_ce_vs_normalized_mse); prints a table. README: Evaluation suite.")
  p.add_argument("path", help="a run directory (or its checkpoints/), or a sweep directory")
  p.add_argument("--measures", default="all",
                 help="comma-separated subset of basics,downstream,probes,ablation,explain "
                 "(default: all)")
  p.add_argument("--max-contexts", type=int, default=32, metavar="C",
                 help="held-out contexts for the downstream loss (default 32)")
  p.add_argument("--max-latents", type=int, default=32, metavar="M",
                 help="latents sampled for ablation sparsity and explanations (default 32)")
  p.set_defaults(fn=_eval)

  p = sub.add_parser("view", help="build a static HTML feature viewer of a run",
                     description="Write RUN_DIR/viewer/index.html (sortable, searchable index "
                     "of latents) and latents/<i>.html (top and quantile-sampled held-out "
                     "contexts, activation histogram, output tokens, n-gram explanation). "
                     "Opens from disk; no server.")
  p.add_argument("run_dir", help="a run directory, e.g. runs/quickstart/<run_id>")
  p.add_argument("--out", help="output directory (default RUN_DIR/viewer)")
  p.add_argument("--max-latents", type=int, default=512,
                 help="live latents given a page; more are sampled (default 512)")
  p.add_argument("--max-contexts", type=int, default=1024,
                 help="held-out contexts encoded (default 1024)")
  p.add_argument("--seed", type=int, default=0, help="seed of the latent and context samples")
  p.set_defaults(fn=_view)

  p = sub.add_parser("steer", help="generate with SAE latents clamped at the hooked layer",
                     description="Generate from a prompt with and without latents clamped "
                     "to a value (or shifted by it, --mode add) at the SAE's layer; the SAE "
                     "error term is kept, so no edit means no change.")
  p.add_argument("path", help="a run directory, an export, a SAELens directory or an OpenAI .pt")
  p.add_argument("--prompt", required=True)
  p.add_argument("--latent", type=int, action="append", default=[], metavar="I",
                 help="latent index (repeat with --value for several)")
  p.add_argument("--value", type=float, action="append", default=[], metavar="V",
                 help="value in the SAE's units (one per --latent)")
  p.add_argument("--mode", choices=("clamp", "add"), default="clamp",
                 help="clamp: z_i = V; add: z_i += V (default clamp)")
  p.add_argument("--max-new-tokens", type=int, default=40)
  p.add_argument("--seed", type=int, help="sample with this seed (default: greedy)")
  p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
  p.add_argument("--model", help="the LM (default: the one the SAE was trained on)")
  p.add_argument("--layer", type=int, help="the hooked layer (default: the SAE's)")
  p.set_defaults(fn=_steer)

  p = sub.add_parser("convert", help="convert an SAE to SAELens or sae_jax export files",
                     description="SRC: a run directory, an export, a SAELens directory "
                     "(cfg.json + sae_weights.safetensors) or an OpenAI state dict (.pt). "
                     "--to saelens writes cfg.json + sae_weights.safetensors; --to sae_jax "
                     "writes sae.safetensors + config.json (sae_jax.tools.export_reference).")
  p.add_argument("src")
  p.add_argument("out", help="output directory")
  p.add_argument("--to", choices=("saelens", "sae_jax"), required=True)
  p.set_defaults(fn=_convert)

  p = sub.add_parser("fit", help="fit scaling laws to a results table and plot",
                     description="Fit L(N) per k and the L(C) frontier; write fits.json and plots/.")
  from analysis import report  # heavy: matplotlib, scipy
  report.add_arguments(p)
  p.set_defaults(fn=_fit)

  from analysis import forecast  # heavy: matplotlib, scipy
  p = sub.add_parser("predict", help="forecast the loss of one run from the fitted laws",
                     description="Predicted normalized MSE of a run (n_latents, k, tokens) with "
                     "its 95% prediction interval, from L(N, D) (Hoffmann et al. 2022, "
                     "Approach 3) fitted to RESULTS; warns outside the fitted range.")
  forecast.add_predict_arguments(p)
  p.set_defaults(fn=_predict)

  p = sub.add_parser("plan", help="propose the compute-optimal run at a compute budget",
                     description="Compute-optimal (n_latents, tokens, lr) at C FLOPs from L(N, D) "
                     "fitted to RESULTS, its predicted loss and 95% prediction interval; "
                     "--write FILE writes it as a sweep file.")
  forecast.add_plan_arguments(p)
  p.set_defaults(fn=_plan)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  handlers = {}
  try:
    if args.command in ("train", "sweep", "harvest"):
      handlers = signals.install()  # SIGTERM/SIGINT: stop at the next safe boundary
      distributed.initialize()  # multi-host when the environment says so (README)
    args.fn(args)
  except ConfigError as e:
    print(f"sae-jax: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a write outside the atomic writer on a full or read-only disk
    err = files.storage_error(e)
    if err is None:
      raise
    print(f"sae-jax: error: {err}", file=sys.stderr)
    return 2
  except signals.Interrupted as e:
    print(f"sae-jax: stopped on {signals.name(e.signum)}{'; ' + e.where if e.where else ''}; rerun the same "
          "command to resume", file=sys.stderr)
    return 128 + e.signum
  except KeyboardInterrupt:
    print("sae-jax: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  finally:
    signals.restore(handlers)
  return 0


if __name__ == "__main__":
  sys.exit(main())
