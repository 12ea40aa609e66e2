"""The sparsity–fidelity frontier plot: one curve per architecture, final records only."""

import json
import os

from analysis import sparsity_fidelity


def _records():
  recs = []
  for arch, knob, values in (("topk", "k", (8, 32)), ("jumprelu", "sparsity_coefficient", (1e-3, 1e-2))):
    for i, v in enumerate(values):
      for final in (False, True):
        recs.append({"sweep": "architectures", "run_id": f"{arch}{i}", "architecture": arch,
                     "n_latents": 2048, "k": v if knob == "k" else None,
                     "sparsity_coefficient": v if knob != "k" else None, "final": final,
                     "tokens": 409_600 if final else 204_800,
                     "l0": 10.0 * (i + 1) + (5 if final else 50),
                     "normalized_mse": 0.3 / (i + 1) - (0.05 if final else 0)})
  recs.append({**recs[-1], "run_id": "broken", "l0": float("nan")})  # left out
  return recs


def test_frontier_points_are_final_records_per_architecture_sorted_by_l0():
  curves = sparsity_fidelity.frontier_points(_records())
  assert list(curves) == ["jumprelu", "topk"]
  assert [r["l0"] for r in curves["topk"]] == [15.0, 25.0]
  assert all(r["final"] for pts in curves.values() for r in pts)
  mixed = _records() + [{**_records()[1], "run_id": "big", "n_latents": 4096}]
  assert "topk, n=4096" in sparsity_fidelity.frontier_points(mixed)


def test_runs_with_and_without_a_recipe_are_two_curves(tmp_path):
  recs = _records() + [{**r, "run_id": r["run_id"] + "_r", "normalized_mse": r["normalized_mse"] / 2,
                        "config": {"sae": {"recipe": "gemmascope2024"}}}
                       for r in _records() if r["architecture"] == "jumprelu"]
  curves = sparsity_fidelity.frontier_points(recs)
  assert list(curves) == ["jumprelu (defaults)", "jumprelu (gemmascope2024)", "topk (defaults)"]
  assert [r["normalized_mse"] for r in curves["jumprelu (gemmascope2024)"]] == [
      r["normalized_mse"] / 2 for r in curves["jumprelu (defaults)"]]
  assert len(sparsity_fidelity.plot_sparsity_fidelity(recs, tmp_path / "both")) == 2


def test_plot_writes_png_and_pdf_also_when_empty(tmp_path):
  written = sparsity_fidelity.plot_sparsity_fidelity(_records(), tmp_path / "plots" / "sf.png")
  assert sorted(os.path.basename(p) for p in written) == ["sf.pdf", "sf.png"]
  assert all(os.path.getsize(p) > 1000 for p in written)
  assert len(sparsity_fidelity.plot_sparsity_fidelity([], tmp_path / "empty")) == 2


def test_command_line(tmp_path, capsys):
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
  assert sparsity_fidelity.main([str(path)]) == 0
  assert (tmp_path / "plots" / "sparsity_fidelity.png").exists()
  assert "topk" in capsys.readouterr().out
  assert sparsity_fidelity.main([str(tmp_path / "missing.jsonl")]) == 2
