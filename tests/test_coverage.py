"""The gate's Δ intervals: hand-checked projection values and a seeded coverage run.

The full grid is benchmarks/bench_coverage.py (figures in benchmarks/README.md); this is its
seconds-long version with a looser bound.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from audit import metrics as M

_SPEC = importlib.util.spec_from_file_location(
    "bench_coverage", Path(__file__).parents[1] / "benchmarks" / "bench_coverage.py"
)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_coverage"] = bench  # its dataclass looks its module up there
_SPEC.loader.exec_module(bench)


def _reps(lo: float, hi: float, b: int = 1001) -> np.ndarray:
    # replicates spread evenly: the 1.25% and 98.75% percentiles sit near lo and hi
    return np.linspace(lo, hi, b)


def test_projection_reduces_to_the_oriented_signed_change_away_from_zero() -> None:
    # dense signed gap clearly +0.2, change clearly within [-0.01, 0.03]: Δ of |x| = d
    x_reps, d_reps = _reps(0.15, 0.25), _reps(-0.01, 0.03)
    lo, hi = M.abs_change_projection_ci(0.2, 0.01, x_reps, d_reps)
    qlo, qhi = np.percentile(d_reps, [1.25, 98.75])
    assert (lo, hi) == pytest.approx((qlo, qhi))
    # the same with the sign flipped (group 0 worse): the interval is mirrored
    lo2, hi2 = M.abs_change_projection_ci(-0.2, -0.01, -x_reps, -d_reps)
    assert (lo2, hi2) == pytest.approx((qlo, qhi))


def test_projection_when_the_dense_gap_may_be_zero() -> None:
    # x in about [-0.05, 0.05], d in about [0.02, 0.06]: f = |x + d| - |x| is checked
    # against a brute-force grid over the rectangle; its maximum is at x = 0, d = u
    x_reps, d_reps = _reps(-0.05, 0.05), _reps(0.02, 0.06)
    lo, hi = M.abs_change_projection_ci(0.0, 0.04, x_reps, d_reps)
    a, b = np.percentile(x_reps, [1.25, 98.75])
    dl, u = np.percentile(d_reps, [1.25, 98.75])
    grid_x, grid_d = np.meshgrid(np.linspace(a, b, 801), np.linspace(dl, u, 801))
    f = np.abs(grid_x + grid_d) - np.abs(grid_x)
    assert lo == pytest.approx(f.min(), abs=1e-4) and hi == pytest.approx(f.max(), abs=1e-4)
    assert hi == pytest.approx(u)  # |f| <= |d|, attained at x = 0


def test_projection_catches_a_gap_that_reverses() -> None:
    # dense +0.10 (group 1 worse), pruned -0.30 (group 0 much worse): Δ of |x| = +0.20,
    # although the oriented signed change is -0.40
    x_reps, d_reps = _reps(0.08, 0.12), _reps(-0.42, -0.38)
    lo, hi = M.abs_change_projection_ci(0.10, -0.40, x_reps, d_reps)
    assert lo <= 0.20 <= hi and lo > 0.1


def test_projection_always_contains_its_point() -> None:
    rng = np.random.default_rng(0)
    x, d = rng.normal(0, 0.05, 200), rng.normal(0, 0.05, 200)
    # replicates that do not even surround the point
    bx = x + np.abs(rng.normal(0.05, 0.01, (300, 200)))
    bd = d + np.abs(rng.normal(0.05, 0.01, (300, 200)))
    lo, hi = M.abs_change_projection_ci(x, d, bx, bd)
    point = np.abs(x + d) - np.abs(x)
    assert np.all(lo <= point) and np.all(point <= hi)


def test_include_point_widens_only_when_needed() -> None:
    assert M.include_point(0.0002, 0.0012, 0.1098) == (0.0002, 0.1098)
    assert M.include_point(0.05, 0.0, 0.1) == (0.0, 0.1)
    lo, hi = M.include_point(np.array([np.nan, 1.0]), np.array([0.0, np.nan]), np.array([1, 2]))
    assert np.isnan(lo[1]) and hi[1] == 2.0 and (lo[0], hi[0]) == (0.0, 1.0)  # NaN stays NaN


@pytest.mark.parametrize(
    ("regime", "case"), [("zero", "flip5"), ("gap", "none"), ("interior", "up")]
)
def test_seeded_coverage_of_the_gate_interval(regime: str, case: str) -> None:
    # 200 audits at N = 3000 (15% minority), B = 1000, as the full benchmark does
    res = bench.simulate(3000, 0.15, regime, case, reps=200, boot=1000, seed=7)
    s = bench.summarise(res)["projection"]
    assert s["coverage"] >= 0.90, s
    assert s["excludes_point"] == 0.0
    # the old percentile interval of the max - min Δ misses Δ = 0 when both FNRs sit at 0
    if regime == "zero":
        assert bench.summarise(res)["percentile"]["coverage"] < 0.5


def test_box_bound_contains_every_change_over_its_box() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = int(rng.integers(2, 6))
        x, d = rng.uniform(0, 1, k), rng.normal(0, 0.1, k)
        bx, bd = x + rng.normal(0, 0.05, (400, k)), d + rng.normal(0, 0.05, (400, k))
        lo, hi = M.range_change_box_ci(x, d, bx, bd)
        side = 1 - 0.05 / (2 * k)
        q = [50 * (1 - side), 50 * (1 + side)]
        (a, b), (dl, du) = np.percentile(bx, q, axis=0), np.percentile(bd, q, axis=0)
        xs, ds = rng.uniform(a, b, (5000, k)), rng.uniform(dl, du, (5000, k))
        f = np.ptp(xs + ds, axis=1) - np.ptp(xs, axis=1)
        assert lo - 1e-12 <= f.min() and f.max() <= hi + 1e-12
        point = np.ptp(x + d) - np.ptp(x)
        assert lo <= point <= hi


def test_seeded_coverage_of_the_box_bound_on_four_cells() -> None:
    # all four cells at FNR 0 and 2% flips: the percentile interval of Δ never covers 0
    res = bench.simulate_cells(3000, "zero", "flip2", reps=100, boot=1000, seed=11)
    s = bench.summarise(res)
    assert s["box"]["coverage"] >= 0.9 and s["box"]["excludes_point"] == 0.0
    assert s["percentile"]["coverage"] < 0.5
