"""Coverage of the gate's Δ intervals where the true Δ is known (issue 13, point 6).

A binary target (prevalence 0.3) and a binary group (minority share 15% or 30%). The dense
model's false-negative rate per group is fixed (``regime``); the pruned model is made by
flipping dense predictions of positives with known probabilities (``case``), so the true
change of the max − min FNR gap, Δ = |F₁ − F₀| − |f₁ − f₀| (pruned F, dense f, population
rates), is known exactly. Every repetition draws a fresh evaluation set and runs the
project's own paired bootstrap (``bootstrap_weights`` + ``confusion_counts`` +
``rates_from_counts``, B = 1000) and interval code on it.

regimes (dense FNR majority / minority): ``interior`` 0.20 / 0.20 (no dense gap),
``gap`` 0.15 / 0.25, ``zero`` 0 / 0, ``one`` 1 / 1.
cases: ``none`` (no flips, Δ = 0), ``flip2`` / ``flip5`` (each positive's prediction flips
with probability 2% / 5% in both groups: Δ = 0 except for ``gap``, where balanced flips
shrink the gap), ``up`` (2% balanced flips plus 8% of the minority's correctly predicted
positives turn into misses: Δ > 0).

Methods, each judged on the same replicates:

- ``percentile``: percentile interval of the Δ replicates (the tool before issue 13);
- ``sign-aware``: issue 13's rule — the dense signed gap's 95% CI excludes 0: the oriented
  percentile CI of the signed Δ; otherwise ±(the larger end of that CI in absolute value);
- ``projection``: ``audit.metrics.abs_change_projection_ci`` (what the gate uses).

Per cell and method: coverage of the true Δ, rate of intervals excluding their own point
estimate (before any widening), mean width, and the gate's non-pass rate at the default
limit 0.05 (``hi > 0.05``: fail or inconclusive; a *false* failure where Δ ≤ 0.05).

Run: uv run python benchmarks/bench_coverage.py [--reps 400] [--boot 1000] [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from audit import metrics as M

PREVALENCE = 0.3
LIMIT = 0.05
REGIMES = {"interior": (0.20, 0.20), "gap": (0.15, 0.25), "zero": (0.0, 0.0), "one": (1.0, 1.0)}
CASES = {"none": (0.0, 0.0), "flip2": (0.02, 0.0), "flip5": (0.05, 0.0), "up": (0.02, 0.08)}
METHODS = ("percentile", "sign-aware", "projection")


def true_delta(regime: str, case: str) -> float:
    """Population Δ of the max − min FNR gap (cell 1 = minority)."""
    f = np.array(REGIMES[regime])
    q, extra = CASES[case]
    # a dense miss is fixed with prob q; a dense hit becomes a miss with prob q (+ extra)
    e = np.array([0.0, extra])
    pruned = f * (1 - q) + (1 - f) * np.minimum(1.0, q + e)
    return float(abs(pruned[1] - pruned[0]) - abs(f[1] - f[0]))


@dataclass
class Result:
    """Per-method arrays of shape (reps,)."""

    truth: float
    point: np.ndarray
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    excluded: dict[str, np.ndarray]


def _population(
    rng: np.random.Generator, n: int, share: float, regime: str, case: str, reps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One evaluation set: group and label per sample; ``reps`` columns of predictions.

    Only positives enter an FNR, so only their predictions are drawn: dense (N_pos, R) and
    pruned (N_pos, R), each column an independent dense model and pruning of it.
    """
    group = (rng.random(n) < share).astype(np.int64)
    pos = np.flatnonzero(rng.random(n) < PREVALENCE)
    g = group[pos]
    f = np.asarray(REGIMES[regime])[g][:, None]
    miss = rng.random((len(pos), reps)) < f
    q, extra = CASES[case]
    flip_prob = np.where(miss, q, np.minimum(1.0, q + extra * g[:, None]))
    pruned_miss = miss ^ (rng.random((len(pos), reps)) < flip_prob)
    return pos, g, ~miss, ~pruned_miss


def simulate(
    n: int, share: float, regime: str, case: str, *, reps: int, boot: int, seed: int
) -> Result:
    """``reps`` audits of one grid cell: a fresh evaluation set and bootstrap per 25 columns.

    Within a batch the columns share the samples' groups and labels and the resample matrix
    (one ``bootstrap_weights`` call), and differ in the dense and pruned predictions.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    points = []
    per_batch = 25
    for b0 in range(0, reps, per_batch):
        r = min(per_batch, reps - b0)
        pos, g, dense, pruned = _population(rng, n, share, regime, case, r)
        w = M.bootstrap_weights(n, n_resamples=boot, seed=int(rng.integers(2**31)))[:, pos]
        y = np.ones_like(dense)
        fnr = {}
        for name, pred in (("dense", dense), ("pruned", pruned)):
            point = M.rates_from_counts(M.confusion_counts(y, pred, g, n_cells=2))["fnr"]
            reps_ = M.rates_from_counts(M.confusion_counts(y, pred, g, n_cells=2, weights=w))["fnr"]
            fnr[name] = (point, reps_)  # (R, 2) and (B, R, 2)
        x = fnr["dense"][0][..., 1] - fnr["dense"][0][..., 0]
        bx = fnr["dense"][1][..., 1] - fnr["dense"][1][..., 0]
        d = fnr["pruned"][0][..., 1] - fnr["pruned"][0][..., 0] - x
        bd = fnr["pruned"][1][..., 1] - fnr["pruned"][1][..., 0] - bx
        point = np.abs(x + d) - np.abs(x)
        points.append(point)
        boot_delta = M.between_groups(fnr["pruned"][1]) - M.between_groups(fnr["dense"][1])
        intervals = {
            "percentile": M.percentile_ci(boot_delta, level=0.95),
            "sign-aware": _sign_aware(x, bx, bd),
            "projection": M.abs_change_projection_ci(x, d, bx, bd, level=0.95),
        }
        for m, (lo, hi) in intervals.items():
            out.setdefault(f"{m}:lo", []).append(np.asarray(lo))
            out.setdefault(f"{m}:hi", []).append(np.asarray(hi))
    return _result(true_delta(regime, case), points, out, METHODS)


def _sign_aware(x: np.ndarray, bx: np.ndarray, bd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Issue 13's rule on the signed gap x and its change d (replicates bx, bd)."""
    xlo, xhi = M.percentile_ci(bx, level=0.95)
    dlo, dhi = M.percentile_ci(bd, level=0.95)
    s = np.sign(x)
    oriented = (xlo > 0) | (xhi < 0)
    big = np.maximum(np.abs(dlo), np.abs(dhi))
    lo = np.where(oriented, np.where(s > 0, dlo, -dhi), -big)
    hi = np.where(oriented, np.where(s > 0, dhi, -dlo), big)
    return lo, hi


CELL_SHARES = (0.55, 0.25, 0.15, 0.05)  # an intersection of two binary attributes
CELL_REGIMES = {
    "interior": (0.2, 0.2, 0.2, 0.2),
    "gap": (0.15, 0.2, 0.2, 0.25),
    "zero": (0.0,) * 4,
    "one": (1.0,) * 4,
}
CELL_METHODS = ("percentile", "box")


def true_cell_delta(regime: str, case: str) -> float:
    """Population Δ of the max − min FNR gap over the 4 cells (the last one is the smallest)."""
    f = np.array(CELL_REGIMES[regime])
    q, extra = CASES[case]
    e = np.array([0.0, 0.0, 0.0, extra])
    pruned = f * (1 - q) + (1 - f) * np.minimum(1.0, q + e)
    return float(np.ptp(pruned) - np.ptp(f))


def simulate_cells(n: int, regime: str, case: str, *, reps: int, boot: int, seed: int) -> Result:
    """As :func:`simulate` for a 4-cell key: the percentile interval and the box bound."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    points = []
    for b0 in range(0, reps, 25):
        r = min(25, reps - b0)
        cells = rng.choice(4, size=n, p=CELL_SHARES)
        pos = np.flatnonzero(rng.random(n) < PREVALENCE)
        g = cells[pos]
        f = np.asarray(CELL_REGIMES[regime])[g][:, None]
        miss = rng.random((len(pos), r)) < f
        q, extra = CASES[case]
        flip_prob = np.where(miss, q, np.minimum(1.0, q + extra * (g == 3)[:, None]))
        pruned_miss = miss ^ (rng.random((len(pos), r)) < flip_prob)
        w = M.bootstrap_weights(n, n_resamples=boot, seed=int(rng.integers(2**31)))[:, pos]
        y = np.ones_like(miss)
        fnr = {}
        for name, pred in (("dense", ~miss), ("pruned", ~pruned_miss)):
            point = M.rates_from_counts(M.confusion_counts(y, pred, g, n_cells=4))["fnr"]
            reps_ = M.rates_from_counts(M.confusion_counts(y, pred, g, n_cells=4, weights=w))["fnr"]
            fnr[name] = (point, reps_)  # (R, 4), (B, R, 4)
        x, bx = fnr["dense"]
        d, bd = fnr["pruned"][0] - x, fnr["pruned"][1] - bx
        point = np.ptp(x + d, axis=-1) - np.ptp(x, axis=-1)
        points.append(point)
        # a replicate in which a cell lost all its positives is dropped, as the tool does
        broken = np.isnan(bx).any(-1) | np.isnan(bx + bd).any(-1)
        boot_delta = np.where(broken, np.nan, M.between_groups(bx + bd) - M.between_groups(bx))
        intervals = {
            "percentile": M.percentile_ci(boot_delta, level=0.95),
            "box": M.range_change_box_ci(x, d, bx, bd, level=0.95),
        }
        for m, (lo, hi) in intervals.items():
            out.setdefault(f"{m}:lo", []).append(np.asarray(lo))
            out.setdefault(f"{m}:hi", []).append(np.asarray(hi))
    return _result(true_cell_delta(regime, case), points, out, CELL_METHODS)


def _result(
    truth: float,
    points: list[np.ndarray],
    out: dict[str, list[np.ndarray]],
    methods: tuple[str, ...],
) -> Result:
    """Join the batches' points and each method's interval ends into one :class:`Result`."""
    point = np.concatenate(points)
    lo = {m: np.concatenate(out[f"{m}:lo"]) for m in methods}
    hi = {m: np.concatenate(out[f"{m}:hi"]) for m in methods}
    excluded = {m: (point < lo[m] - 1e-12) | (point > hi[m] + 1e-12) for m in methods}
    return Result(truth, point, lo, hi, excluded)


def summarise(res: Result) -> dict[str, dict[str, float]]:
    """Coverage, exclusion-of-point rate, mean width and non-pass rate per method."""
    rows = {}
    for m in res.lo:
        lo, hi = M.include_point(res.point, res.lo[m], res.hi[m])
        rows[m] = {
            "coverage": float(np.mean((lo <= res.truth + 1e-12) & (res.truth <= hi + 1e-12))),
            "excludes_point": float(np.mean(res.excluded[m])),
            "width": float(np.mean(hi - lo)),
            "not_pass": float(np.mean(hi > LIMIT + 1e-12)),
        }
    return rows


def _share_in(share: float, shares: tuple[float, ...]) -> bool:
    return any(abs(share - s) < 1e-9 for s in shares)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="N = 3000 only, 100 reps")
    ap.add_argument(
        "--sizes", default=None, help="comma-separated N values of the grid to run (default all)"
    )
    ap.add_argument(
        "--shares", default=None, help="comma-separated minority shares to run (e.g. 0.30)"
    )
    ap.add_argument(
        "--cell-reps", type=int, default=None, help="reps per 4-cell grid cell (default --reps)"
    )
    ap.add_argument(
        "--parts", default="two,cells", help="'two' (binary groups), 'cells' (4 cells), or both"
    )
    args = ap.parse_args()
    grid_sizes = (3000,) if args.quick else (500, 3000, 20000)
    sizes = grid_sizes
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
        unknown = sorted(set(sizes) - set(grid_sizes))
        if unknown:
            ap.error(f"--sizes {unknown} are not in the grid {grid_sizes}")
    shares = (0.15, 0.30)
    if args.shares:
        shares = tuple(float(x) for x in args.shares.split(","))
    parts = set(args.parts.split(","))
    reps = 100 if args.quick else args.reps
    cell_reps = args.cell_reps or reps
    t0 = time.perf_counter()
    print(
        f"B = {args.boot}, {reps} reps per cell; coverage / excludes-point / width / "
        f"not-pass at limit {LIMIT} (percentile | sign-aware | projection)"
    )
    header = "| N | minority | dense FNR | case | true Δ | " + " | ".join(
        f"{m} cov / excl / width / not-pass" for m in METHODS
    )
    print(header + " |")
    print("|" + "---|" * (5 + len(METHODS)))
    # Every cell's seed is fixed by its position in the whole grid, so a run of a part of
    # the grid (--sizes, --shares, --parts) reproduces the full run's figures for those cells.
    seed = args.seed
    for n in grid_sizes:
        for share in (0.15, 0.30):
            for regime in REGIMES:
                for case in CASES:
                    seed += 1
                    if "two" not in parts or n not in sizes or not _share_in(share, shares):
                        continue
                    res = simulate(n, share, regime, case, reps=reps, boot=args.boot, seed=seed)
                    s = summarise(res)
                    cells = " | ".join(
                        f"{s[m]['coverage']:.3f} / {s[m]['excludes_point']:.3f} / "
                        f"{s[m]['width']:.3f} / {s[m]['not_pass']:.2f}"
                        for m in METHODS
                    )
                    print(
                        f"| {n} | {share:.0%} | {regime} | {case} | {res.truth:+.3f} | {cells} |",
                        flush=True,
                    )
    print(
        f"\n4-cell key (shares {CELL_SHARES}, extra flips in the 5% cell): "
        "coverage / excludes-point / width / not-pass"
    )
    print("| N | dense FNR | case | true Δ | " + " | ".join(CELL_METHODS) + " |")
    print("|" + "---|" * (4 + len(CELL_METHODS)))
    for n in grid_sizes[1:] if len(grid_sizes) > 1 else grid_sizes:
        for regime in CELL_REGIMES:
            for case in CASES:
                seed += 1
                if "cells" not in parts or n not in sizes:
                    continue
                res = simulate_cells(n, regime, case, reps=cell_reps, boot=args.boot, seed=seed)
                s = summarise(res)
                cells = " | ".join(
                    f"{s[m]['coverage']:.3f} / {s[m]['excludes_point']:.3f} / "
                    f"{s[m]['width']:.3f} / {s[m]['not_pass']:.2f}"
                    for m in CELL_METHODS
                )
                print(f"| {n} | {regime} | {case} | {res.truth:+.3f} | {cells} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
