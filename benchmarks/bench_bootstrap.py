"""Time the paired bootstrap at the default scale (SPEC §6.3, §9).

B = 1000 resamples, N = 20000 samples, A = 40 targets, a binary group attribute (2 cells),
one dense and 3 pruned models evaluated on the same resamples; per model: counts, rates,
FNR/FPR/accuracy gaps and equalized odds, and the paired deltas' percentile CIs.

Run: uv run python benchmarks/bench_bootstrap.py
"""

from __future__ import annotations

import time

import numpy as np

from audit.metrics import (
    between_groups,
    bias_amplification_from_counts,
    bootstrap_weights,
    confusion_counts,
    equalized_odds_from_rates,
    percentile_ci,
    rates_from_counts,
)

B, N, A, CELLS, PRUNED = 1000, 20_000, 40, 2, 3


def gaps(counts: np.ndarray) -> dict[str, np.ndarray]:
    rates = rates_from_counts(counts)
    return {
        "fnr_gap": between_groups(rates["fnr"]),
        "fpr_gap": between_groups(rates["fpr"]),
        "accuracy_gap": between_groups(rates["accuracy"]),
        "equalized_odds": equalized_odds_from_rates(rates["tpr"], rates["fpr"]),
        "ba": bias_amplification_from_counts(counts, majority_cell=np.ones(A, dtype=int)),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((N, A)) < 0.3
    cells = rng.integers(0, CELLS, N)
    dense = y ^ (rng.random((N, A)) < 0.1)
    pruned = [dense ^ (rng.random((N, A)) < 0.05 * (j + 1)) for j in range(PRUNED)]

    t0 = time.perf_counter()
    weights = bootstrap_weights(N, n_resamples=B, seed=0)
    t1 = time.perf_counter()
    dense_gaps = gaps(confusion_counts(y, dense, cells, n_cells=CELLS, weights=weights))
    t2 = time.perf_counter()
    for pred in pruned:
        pruned_gaps = gaps(confusion_counts(y, pred, cells, n_cells=CELLS, weights=weights))
        for name, value in pruned_gaps.items():
            percentile_ci(value - dense_gaps[name], level=0.95)
    t3 = time.perf_counter()

    print(f"B={B} N={N} A={A} cells={CELLS} models=1 dense + {PRUNED} pruned (paired)")
    print(f"  bootstrap_weights          {t1 - t0:6.2f} s")
    print(f"  dense counts + gaps        {t2 - t1:6.2f} s")
    print(f"  {PRUNED} pruned + deltas + CIs  {t3 - t2:6.2f} s")
    print(f"  total                      {t3 - t0:6.2f} s")


if __name__ == "__main__":
    main()
