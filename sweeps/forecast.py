"""Forecast check: fit the laws on a small grid on SmolLM2, then train held-back points at
4x the largest fitted compute and compare (issue 13, item 6).

1. This file is a sweep (get_config / get_sweep): the fit grid, TopK k = 32 with
   n_latents in {128, 256, 512, 1024}, one epoch of the quickstart's 409,600-token cache
   (reused if present), 12 log-spaced evaluations each.
2. `python -m sweeps.forecast [--out DIR]` runs it, fits L(N, D) (Hoffmann et al. 2022,
   Approach 3; `analysis.forecast.plan`) and proposes the compute-optimal run at
   C = 4 x the largest fitted compute, plus one off-optimal point at the same C
   (n_latents / 4, tokens x 4); trains both (the held-back sweep, several epochs of the
   same cache) and writes DIR/forecast/report.json, report.md and plots/forecast.{png,pdf}:
   forecast, 95% prediction interval, measured final normalized MSE, relative error.
   The check passes when every held-back point lands inside its interval and within 5%
   of the forecast; the report says so either way (the check is not tuned).

Run time on the 2-core CPU, measured 2026-12-02 with the quickstart's cache present and
other jobs sharing the CPU: 580 s (the grid's 4 SAEs in one pass, 160 s; the 2 held-back
SAEs in one pass, 362 s; fits and report). Add the quickstart's harvest if the cache is
absent (1,047 s on the same shared CPU, ~5 min on a quiet one).

Measured (runs/forecast/report.md; C = 4x the largest fitted compute, 1.16e13 FLOPs):

    | point       | n_latents | tokens    | forecast | 95% interval     | measured | rel. error |
    | optimal     | 2368      | 709,120   | 0.1774   | [0.1625, 0.1935] | 0.1732   | -2.4%      |
    | off_optimal | 576       | 2,836,992 | 0.1941   | [0.1762, 0.2138] | 0.2046   | +5.4%      |

Both land inside their intervals; the off-optimal point misses the 5% band (check: fail).
What limits it: the cache holds 409,600 tokens, so the off-optimal point repeats it ~7
times (the plan's point ~1.7 times), while L(N, D) was fitted on fresh tokens only (one
epoch); repeated tokens are worth less than fresh ones (Muennighoff et al. 2023), so the law
is optimistic there. A larger cache tests the law
without repetition (raise `data.n_train_tokens` in `get_config`).

    python -m sweeps.forecast --out runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import matplotlib

from analysis import forecast as forecast_lib
from analysis.plot_style import STYLE, new_figure, save_figure
from analysis.results import load_results
from sae_jax import files
from sweeps import launch, quickstart

K = 32
N_LATENTS = (128, 256, 512, 1024)
FACTOR = 4.0  # held-back compute / the largest fitted compute
OFF_OPTIMAL = 4.0  # the off-optimal point: n_latents / 4, tokens x 4 at the same compute


def get_config():
  c = quickstart.get_config()  # the quickstart's data settings: one shared cache
  c.name = "forecast_grid"
  c.sae.k = K
  c.train.n_eval_points = 12
  c.train.first_eval_fraction = 1 / 128
  return c


def get_sweep():
  return [{"sae.n_latents": n} for n in N_LATENTS]


def held_back_points(proposal: dict, batch_size: int) -> list[dict]:
  """The plan's proposal and one off-optimal point at the same compute, as sweep points
  (n_latents a multiple of 64, tokens whole batches)."""
  out = []
  for name, n, d in (("optimal", proposal["n_latents"], proposal["tokens"]),
                     ("off_optimal", proposal["n_latents"] / OFF_OPTIMAL,
                      proposal["tokens"] * OFF_OPTIMAL)):
    n = max(64, int(round(n / 64)) * 64)
    d = max(batch_size, int(round(d / batch_size)) * batch_size)
    out.append({"name": name, "sae.n_latents": n, "train.token_budget": d})
  return out


def _held_sweep_text(points: list[dict], lr_of: dict) -> str:
  lines = ['"""Held-back points of sweeps/forecast.py (written by it)."""', "",
           "from sweeps import forecast", "", "", "def get_config():",
           "  c = forecast.get_config()", "  c.name = 'forecast_held_back'",
           "  c.train.n_eval_points = 4", "  return c", "", "", "def get_sweep():",
           "  return ["]
  for p in points:
    lr = lr_of.get(p["sae.n_latents"])
    extra = f", 'train.lr': {lr:.6g}" if lr else ""
    lines.append(f"      {{'sae.n_latents': {p['sae.n_latents']}, "
                 f"'train.token_budget': {p['train.token_budget']}{extra}}},")
  return "\n".join(lines + ["  ]", ""])


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="runs", help="out_dir of both sweeps (default runs)")
  args = p.parse_args(argv)
  here = os.path.abspath(__file__)
  grid_results = launch.run_sweep(here, {"out_dir": args.out}, fit=True)
  records = load_results(grid_results)
  C_max = max(r["flops"] for r in records)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    proposal = forecast_lib.plan(records, FACTOR * C_max, K)
  cfg = get_config()
  points = held_back_points(proposal, cfg.train.batch_size)
  report_dir = os.path.join(args.out, "forecast")
  held_file = os.path.join(report_dir, "held_back_sweep.py")
  lr_of = {pt["sae.n_latents"]: forecast_lib._lr_at(records, pt["sae.n_latents"])[0]
           for pt in points}
  files.atomic_write_bytes(held_file, _held_sweep_text(points, lr_of).encode())
  held = load_results(launch.run_sweep(held_file, {"out_dir": args.out}, fit=False))
  rows = []
  for pt in points:
    final = [r for r in held if r.get("final") is True and r["n_latents"] == pt["sae.n_latents"]]
    pred = forecast_lib.predict(records, pt["sae.n_latents"], K, pt["train.token_budget"])
    measured = final[0]["normalized_mse"] if final else None
    lo, hi = pred["interval"] or (None, None)
    rows.append({"point": pt["name"], "n_latents": pt["sae.n_latents"],
                 "tokens": pt["train.token_budget"], "flops": pred["flops"],
                 "forecast": pred["loss"], "interval": pred["interval"], "measured": measured,
                 "relative_error": None if measured is None else measured / pred["loss"] - 1,
                 "inside": None if measured is None or lo is None else lo <= measured <= hi})
  ok = all(r["inside"] and abs(r["relative_error"]) <= 0.05 for r in rows)
  report = {"fit_grid": grid_results, "compute_factor": FACTOR, "largest_fitted_flops": C_max,
            "proposal": {k: v for k, v in proposal.items() if k != "base_config"},
            "warnings": [str(w.message) for w in caught], "points": rows,
            "check": "pass" if ok else "fail",
            "rule": "every held-back point inside its 95% prediction interval and within 5% "
                    "of the forecast"}
  files.write_json_atomic(os.path.join(report_dir, "report.json"), report)
  md = ["| point | n_latents | tokens | forecast | 95% interval | measured | rel. error |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    iv = f"[{r['interval'][0]:.4f}, {r['interval'][1]:.4f}]" if r["interval"] else "none"
    ms = f"{r['measured']:.4f}" if r["measured"] is not None else "-"
    err = f"{r['relative_error']:+.1%}" if r["relative_error"] is not None else "-"
    md.append(f"| {r['point']} | {r['n_latents']} | {r['tokens']} | {r['forecast']:.4f} | "
              f"{iv} | {ms} | {err} |")
  md.append(f"\ncheck: {report['check']} ({report['rule']})")
  files.atomic_write_bytes(os.path.join(report_dir, "report.md"), "\n".join(md).encode())
  with matplotlib.rc_context(STYLE):
    fig, ax = new_figure()
    for i, r in enumerate(rows):
      if r["interval"]:
        ax.errorbar([i], [r["forecast"]], yerr=[[r["forecast"] - r["interval"][0]],
                                                [r["interval"][1] - r["forecast"]]],
                    fmt="o", capsize=4, label="forecast, 95% interval" if i == 0 else None)
      if r["measured"] is not None:
        ax.plot([i], [r["measured"]], "kx", ms=8, label="measured" if i == 0 else None)
    ax.set_xticks(range(len(rows)), [f"{r['point']}\nn={r['n_latents']}" for r in rows])
    ax.set_ylabel("final normalized MSE")
    ax.set_title(f"forecast at {FACTOR:g}x the largest fitted compute", loc="left")
    ax.legend(loc="best")
    save_figure(fig, os.path.join(report_dir, "plots", "forecast"))
  print("\n".join(md))
  print(json.dumps({"check": report["check"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
