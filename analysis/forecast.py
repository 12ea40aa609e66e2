"""Forecasts from the fitted laws: `sae-jax predict` and `sae-jax plan`.

    sae-jax predict RESULTS --n-latents N --k K --tokens T [--filter ...]
    sae-jax plan    RESULTS --compute C [--k K] [--write sweeps/my_plan.py] [--filter ...]

Both fit Hoffmann et al. 2022's L(N, D) = E + A N^-alpha + B D^-beta (their Approach 3;
N = n_latents, D = training tokens) to every evaluation point of the group (architecture,
k, data settings) asked for, with cluster-robust standard errors over runs
(`analysis.optimal.chinchilla_allocation`), and give a 95% prediction interval for one
new run (`LawFit.predict_interval`: delta method in log L plus the residual variance, t
on G - 1 dof). `plan` puts the compute C where L(N, D) is lowest at C = kappa N D
(`analysis.optimal.allocation`) and the lr where the records' lr against n_latents
says (lr*(n) of an lr sweep, or the rule the sweep used), and can write the proposal as
a sweep file. Outside the fitted range both warn with the extrapolation factor.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis import optimal
from analysis._warn import warn_caller
from analysis.fitting import LOSS_KEY, LawFit
from analysis.report import parse_filters
from analysis.results import get_field, is_usable, load_results
from analysis.sweep_fits import mixes_data_settings, group_key
from sae_jax import files
from sae_jax.errors import ConfigError


def _group(records: Sequence[Mapping[str, Any]], k: int | None) -> tuple[str, list[Mapping]]:
  """The records of one (architecture, k, data settings) group; ConfigError if ambiguous."""
  multi_arch = len({r.get("architecture") for r in records}) > 1
  multi_data = mixes_data_settings(records)
  if multi_arch or multi_data:
    raise ConfigError("the records mix architectures or data settings; pick one with "
                      "--filter architecture=... --filter layer=...")
  ks = sorted({r.get("k") for r in records}, key=lambda v: (v is None, v or 0))
  if k is None:
    if len(ks) > 1:
      raise ConfigError(f"the records hold k in {ks}; pick one with --k")
    k = ks[0]
  group = [r for r in records if r.get("k") == k or (
      isinstance(r.get("k"), (int, float)) and float(r["k"]) == float(k))]
  if not group:
    raise ConfigError(f"no records with k={k}; the records hold k in {ks}")
  return group_key(group[0]), group


def fit_group(records: Sequence[Mapping[str, Any]], k: int | None = None, *,
              loss_key: str = LOSS_KEY) -> dict[str, Any]:
  """L(N, D) of one group and its fitted range: {"key", "fit": LawFit, "kappa",
  "n_opt_exponent", "range": {"n_latents", "tokens", "flops": [lo, hi]}, "records"}.

  Raises:
    ConfigError: the group is ambiguous or empty, or L(N, D) cannot be fitted.
  """
  key, group = _group(records, k)
  pts = [r for r in group if is_usable(r, "n_latents", "tokens", "flops", loss_key)]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = optimal.chinchilla_allocation(pts, loss_key=loss_key, n_bootstrap=0)
  for msg in dict.fromkeys(str(w.message) for w in caught):
    warn_caller(msg)
  fit = LawFit.from_dict(out["fit"])
  rng = {f: [min(float(r[f]) for r in pts), max(float(r[f]) for r in pts)]
         for f in ("n_latents", "tokens", "flops")}
  return {"key": key, "fit": fit, "kappa": out["kappa"], "n_opt_exponent": out["n_opt_exponent"],
          "n_opt_exponent_ci95": out["n_opt_exponent_ci95"], "range": rng, "records": pts}


def extrapolation_factor(value: float, lo: float, hi: float) -> float:
  """How far outside [lo, hi] value lies, as a ratio >= 1 (1 inside)."""
  return max(value / hi, lo / value, 1.0)


def _warn_range(what: Mapping[str, float], rng: Mapping[str, Sequence[float]]) -> list[str]:
  out = []
  for name, v in what.items():
    f = extrapolation_factor(v, *rng[name])
    if f > 1.0 + 1e-9:
      out.append(f"{name}={v:.4g} is {f:.3g}x outside the fitted range "
                 f"[{rng[name][0]:.4g}, {rng[name][1]:.4g}]")
  if out:
    warn_caller("extrapolating: " + "; ".join(out) + " -- the interval assumes the law holds "
                "there")
  return out


def predict(records: Sequence[Mapping[str, Any]], n_latents: float, k: int | None,
            tokens: float, *, loss_key: str = LOSS_KEY) -> dict[str, Any]:
  """The predicted loss of one new run (n_latents, k, tokens) with its 95% prediction
  interval, from L(N, D) of the group of k (Hoffmann et al. 2022, Eq. 2).

  Returns:
    {"group", "n_latents", "k", "tokens", "flops", "loss", "interval" ([lo, hi] or
     None), "no_interval", "extrapolation": [warnings]}.

  Raises:
    ConfigError: n_latents or tokens not positive; the group cannot be fitted.
  """
  if not (n_latents > 0 and tokens > 0):
    raise ConfigError(f"--n-latents and --tokens must be positive, got {n_latents}, {tokens}")
  g = fit_group(records, k, loss_key=loss_key)
  fit: LawFit = g["fit"]
  flops = g["kappa"] * n_latents * tokens
  extra = _warn_range({"n_latents": n_latents, "tokens": tokens, "flops": flops}, g["range"])
  x = {"N": np.array([float(n_latents)]), "D": np.array([float(tokens)])}
  loss = float(fit.predict(x)[0])
  try:
    lo, hi = fit.predict_interval(x)
    interval = [float(lo[0]), float(hi[0])]
  except ConfigError:
    interval = None
  return {"group": g["key"], "n_latents": n_latents, "k": g["records"][0].get("k"),
          "tokens": tokens, "flops": flops, "loss": loss, "interval": interval,
          "no_interval": fit.no_interval, "extrapolation": extra}


def _lr_at(records: Sequence[Mapping[str, Any]], n: float) -> tuple[float | None, str]:
  """The lr the records' (n_latents, lr) pairs give at n: the log-log line through them
  (the sweep's rule, e.g. lr ~ 1/sqrt(n); Gao et al. 2024, Sec. 2.3), or their one lr."""
  pairs = {}
  for r in records:
    lr = r.get("lr", get_field(r, "config.train.lr"))
    if isinstance(lr, (int, float)) and lr > 0 and is_usable(r, "n_latents"):
      pairs.setdefault(float(r["n_latents"]), set()).add(float(lr))
  if not pairs:
    return None, "no lr in the records: the sweep's default rule applies"
  if any(len(v) > 1 for v in pairs.values()):
    return None, ("several lr per n_latents: fit the lr sweep (sae-jax fit: lr_opt) and "
                  "set train.lr from lr*(n)")
  ns = np.array(sorted(pairs))
  lrs = np.array([next(iter(pairs[n_])) for n_ in ns])
  if len(ns) == 1:
    return float(lrs[0]), "the records' one lr"
  slope, icept = np.polyfit(np.log(ns), np.log(lrs), 1)
  return float(math.exp(icept + slope * math.log(n))), (
      f"the records' lr ~ n_latents^{slope:.3f}, at n_latents*")


def plan(records: Sequence[Mapping[str, Any]], compute: float, k: int | None = None, *,
         loss_key: str = LOSS_KEY) -> dict[str, Any]:
  """The compute-optimal (n_latents, tokens, lr) at `compute` FLOPs and its predicted loss.

  n* and D* minimise L(N, D) at C = kappa N D (`analysis.optimal.allocation`; Hoffmann
  et al. 2022, Eq. 4); the loss and its 95% prediction interval as in `predict`.

  Returns:
    {"group", "compute", "n_latents", "tokens", "lr", "lr_source", "k", "loss",
     "interval", "no_interval", "n_opt_exponent", "n_opt_exponent_ci95", "extrapolation",
     "base_config": the config dict of the group's run with n_latents nearest n*}.

  Raises:
    ConfigError: compute not positive; the group cannot be fitted.
  """
  if not compute > 0:
    raise ConfigError(f"--compute must be positive FLOPs, got {compute}")
  g = fit_group(records, k, loss_key=loss_key)
  fit: LawFit = g["fit"]
  n_opt, d_opt = optimal.allocation(fit.params, compute, g["kappa"])
  n_opt, d_opt = float(n_opt), float(d_opt)
  extra = _warn_range({"n_latents": n_opt, "tokens": d_opt, "flops": compute}, g["range"])
  x = {"N": np.array([n_opt]), "D": np.array([d_opt])}
  try:
    lo, hi = fit.predict_interval(x)
    interval = [float(lo[0]), float(hi[0])]
  except ConfigError:
    interval = None
  lr, lr_source = _lr_at(g["records"], n_opt)
  nearest = min(g["records"], key=lambda r: abs(math.log(float(r["n_latents"]) / n_opt)))
  return {"group": g["key"], "compute": float(compute), "n_latents": n_opt, "tokens": d_opt,
          "lr": lr, "lr_source": lr_source, "k": g["records"][0].get("k"),
          "loss": float(fit.predict(x)[0]), "interval": interval, "no_interval": fit.no_interval,
          "n_opt_exponent": g["n_opt_exponent"], "n_opt_exponent_ci95": g["n_opt_exponent_ci95"],
          "extrapolation": extra, "base_config": nearest.get("config") or {}}


def sweep_file_text(proposal: Mapping[str, Any], command: str) -> str:
  """A sweep file (big_vision style: get_config + get_sweep) training the proposal on the
  data settings of the run it came from; n_latents rounded to a multiple of 64, tokens
  to whole batches."""
  base = proposal.get("base_config") or {}
  data, train = base.get("data", {}), base.get("train", {})
  batch = int(train.get("batch_size") or 1024)
  n = max(64, int(round(proposal["n_latents"] / 64)) * 64)
  tokens = max(batch, int(round(proposal["tokens"] / batch)) * batch)
  lines = ['"""Proposed by `' + command + '`.', "",
           f"Compute-optimal at C = {proposal['compute']:.4g} FLOPs for {proposal['group']} "
           f"(L(N, D), Hoffmann et al. 2022 Approach 3): n_latents* = {proposal['n_latents']:.0f}, "
           f"tokens* = {proposal['tokens']:.4g};",
           f"predicted normalized MSE {proposal['loss']:.4g}" + (
               f", 95% prediction interval [{proposal['interval'][0]:.4g}, "
               f"{proposal['interval'][1]:.4g}]." if proposal["interval"] else
               f" ({proposal['no_interval']})."),
           f"lr: {proposal['lr_source']}.", '"""', "",
           "from sae_jax.config import default_config", "", "",
           "def get_config():", "  c = default_config()",
           f"  c.name = {('plan_' + str(proposal['group']).replace('=', '').replace(', ', '_'))!r}"]
  for key in ("source", "model", "layer", "site", "context_length", "exclude_first", "corpus",
              "n_train_tokens", "n_eval_tokens"):
    if data.get(key) is not None:
      lines.append(f"  c.data.{key} = {data[key]!r}")
  for key in ("architecture", "input_norm"):
    if base.get("sae", {}).get(key) is not None:
      lines.append(f"  c.sae.{key} = {base['sae'][key]!r}")
  lines.append(f"  c.train.batch_size = {batch}")
  lines.append(f"  c.train.token_budget = {tokens}")
  if proposal["lr"] is not None:
    lines.append(f"  c.train.lr = {proposal['lr']:.6g}")
  lines += ["  return c", "", "", "def get_sweep():",
            f"  return [{{\"sae.n_latents\": {n}, \"sae.k\": {proposal['k']!r}}}]", ""]
  return "\n".join(lines)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
  """The arguments of `sae-jax predict`."""
  p.add_argument("results", nargs="+", metavar="RESULTS", help="results.jsonl or sweep dirs")
  p.add_argument("--n-latents", type=float, required=True, metavar="N")
  p.add_argument("--k", type=int, default=None, help="the k group (needed if several)")
  p.add_argument("--tokens", type=float, required=True, metavar="T", help="training tokens")
  p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
  """The arguments of `sae-jax plan`."""
  p.add_argument("results", nargs="+", metavar="RESULTS", help="results.jsonl or sweep dirs")
  p.add_argument("--compute", type=float, required=True, metavar="C", help="FLOPs")
  p.add_argument("--k", type=int, default=None, help="the k group (needed if several)")
  p.add_argument("--write", metavar="FILE", default=None,
                 help="write the proposal as a sweep file (refuses to overwrite one)")
  p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")


def _interval_text(out: Mapping[str, Any]) -> str:
  if out["interval"]:
    return f"95% prediction interval [{out['interval'][0]:.4g}, {out['interval'][1]:.4g}]"
  return out["no_interval"] or "no interval"


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
  """`sae-jax predict`: prints the forecast in one line."""
  records = load_results(args.results, **parse_filters(args.filter))
  out = predict(records, args.n_latents, args.k, args.tokens)
  print(f"{out['group']}: n_latents={out['n_latents']:g}, tokens={out['tokens']:.4g} "
        f"(C = {out['flops']:.3g} FLOPs): predicted normalized MSE {out['loss']:.4g}, "
        f"{_interval_text(out)} (L(N, D), Hoffmann et al. 2022 Approach 3)")
  return out


def run_plan(args: argparse.Namespace) -> dict[str, Any]:
  """`sae-jax plan`: prints the proposal; with --write, writes it as a sweep file."""
  records = load_results(args.results, **parse_filters(args.filter))
  if args.write and os.path.exists(args.write):
    raise ConfigError(f"{args.write} exists; pick another --write path (nothing was written)")
  out = plan(records, args.compute, args.k)
  ci = out["n_opt_exponent_ci95"]
  print(f"{out['group']}: at C = {out['compute']:.4g} FLOPs: n_latents* = {out['n_latents']:.0f}, "
        f"tokens* = {out['tokens']:.4g}, lr = "
        f"{'default rule' if out['lr'] is None else format(out['lr'], '.3g')} ({out['lr_source']}); "
        f"predicted normalized MSE {out['loss']:.4g}, {_interval_text(out)}")
  print(f"  n* ~ C^{out['n_opt_exponent']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        + "; tokens* ~ C^(1 - that), its complement")
  if args.write:
    command = "sae-jax plan " + " ".join(map(str, args.results)) + f" --compute {args.compute:g}" + (
        f" --k {args.k}" if args.k is not None else "")
    files.atomic_write_bytes(args.write, sweep_file_text(out, command).encode())
    print(f"wrote {args.write}; run it with sae-jax sweep {args.write}")
  return out
