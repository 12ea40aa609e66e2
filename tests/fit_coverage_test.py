"""A fast version of benchmarks/fit_coverage.py: the intervals fits.json reports cover
planted laws at about their nominal 95% (fewer replicates, so a wider tolerance)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import fit_coverage  # noqa: E402


@pytest.mark.parametrize("setting, replicates, lo, wide", [
    ("L(N) pure a=0.5, 8 n", 60, 0.85, 2.5),
    ("L(N) pure a=0.5, 4 n", 60, 0.80, 2.5),
    ("Eq. 3, 6 n x 5 k", 30, 0.80, 2.5),
    ("L(C) frontier, 6 runs", 40, 0.80, 2.5),  # tangent points: 93.0% over 200
    # 6 runs for 5 parameters: the jackknife's errors are heavy-tailed (mean SE 2.5x RMSE)
    ("L(N,D) Approach 3, 6 runs", 20, 0.70, 4.0),
])
def test_reported_intervals_cover_planted_laws(setting, replicates, lo, wide):
  row = fit_coverage.coverage(setting, replicates, n_bootstrap=0, seed=1)
  covered = [c for c in row["coverage"].values() if c is not None]
  assert covered, row
  assert all(lo <= c <= 1.0 for c in covered), fit_coverage.format_row(row)
  # a too-wide interval would pass the line above: it must also be of the order of the error
  assert row["se"] < wide * row["rmse"], fit_coverage.format_row(row)
