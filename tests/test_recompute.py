"""Every per-level number of report.json recomputes from predictions.npz alone (issue 13.5).

The recomputation below is independent of the tool's disaggregation engine: plain numpy
masks per group cell, on the float64 probabilities and thresholds predictions.npz stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from tests.conftest import check_args

TOL = 1e-9
RATES = ("accuracy", "tpr", "fpr", "fnr", "selection_rate", "uncertainty_rate")
NEEDS = {"tpr": "positives", "fnr": "positives", "fpr": "negatives"}


def _rates(y: np.ndarray, pred: np.ndarray, unc: np.ndarray) -> dict[str, float | None]:
    pos, neg = y == 1, y == 0

    def share(num: np.ndarray, den: np.ndarray) -> float | None:
        return float(num.sum() / den.sum()) if den.sum() else None

    return {
        "accuracy": share(pred == y, np.ones_like(y, dtype=bool)),
        "tpr": share(pos & (pred == 1), pos),
        "fpr": share(neg & (pred == 1), neg),
        "fnr": share(pos & (pred == 0), pos),
        "selection_rate": share(pred == 1, np.ones_like(y, dtype=bool)),
        "uncertainty_rate": share(unc, np.ones_like(y, dtype=bool)),
    }


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    bins = np.minimum((p * 10).astype(int), 9)
    return float(
        sum(
            (bins == b).sum() / len(p) * abs(p[bins == b].mean() - y[bins == b].mean())
            for b in range(10)
            if (bins == b).any()
        )
    )


def _block(z: dict, probs: np.ndarray, mode: str, band: list[float], minimum: int) -> dict:
    """{target: {"cells": [rates per cell], "gaps": {...}, "acc": overall accuracy}}."""
    thresholds = z[f"thresholds_{mode}"]
    labels, groups = z["labels"], z["groups"][:, 0]
    out = {}
    for a, target in enumerate(z["target_names"]):
        y, p = labels[:, a], probs[:, a]
        pred = (p > thresholds[a]).astype(int)
        unc = (p > band[0]) & (p < band[1])
        cells = []
        for v in np.unique(groups):
            sel = groups == v
            r = _rates(y[sel], pred[sel], unc[sel])
            counts = {
                "samples": sel.sum(),
                "positives": (y[sel] == 1).sum(),
                "negatives": (y[sel] == 0).sum(),
            }
            for rate in RATES:
                if counts[NEEDS.get(rate, "samples")] < minimum:
                    r[rate] = None
            r["ece"] = _ece(y[sel], p[sel])
            cells.append(r)
        gaps = {}
        for rate, name in (
            ("accuracy", "accuracy_gap"),
            ("fpr", "fpr_gap"),
            ("fnr", "fnr_gap"),
            ("tpr", "tpr_gap"),
            ("selection_rate", "demographic_parity_difference"),
            ("uncertainty_rate", "uncertainty_gap"),
        ):
            vals = [c[rate] for c in cells if c[rate] is not None]
            gaps[name] = max(vals) - min(vals) if len(vals) >= 2 else None
            if len(cells) == 2 and rate in ("accuracy", "fpr", "fnr"):
                both = cells[0][rate] is not None and cells[1][rate] is not None
                gaps[f"signed_{name}"] = cells[1][rate] - cells[0][rate] if both else None
        out[str(target)] = {"cells": cells, "gaps": gaps, "acc": float((pred == y).mean())}
    return out


def _close(expected: float | None, got: float | None, where: str) -> None:
    if expected is None:
        assert got is None, where
    else:
        assert got is not None and abs(expected - got) <= TOL, (where, expected, got)


@pytest.fixture(scope="module")
def audit(tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path_factory) -> Path:
    ckpt, data, _ = tiny_audit_inputs
    out = tmp_path_factory.mktemp("recompute") / "out"
    args = check_args(ckpt, data, out)
    args[args.index("--sparsity") + 1] = "0.5,0.8"
    res = CliRunner().invoke(app, args)
    assert res.exit_code in (0, 1), res.output
    return out


def test_every_level_metric_recomputes_from_predictions_npz(audit: Path) -> None:
    report = json.loads((audit / "report.json").read_text())
    with np.load(audit / "predictions.npz") as f:
        z = {k: f[k] for k in f.files}
    assert z["dense_probs"].dtype == np.float64 and z["pruned_probs"].dtype == np.float64
    band = report["inputs"]["uncertainty_band"]
    minimum = report["gate"]["policy"]["min_group_size"]
    models = [("dense", z["dense_probs"], report["dense"])] + [
        (f"level {s:g}", z["pruned_probs"][i], lv["metrics"])
        for i, (s, lv) in enumerate(
            zip(z["sparsities"], report["validation"]["levels"], strict=True)
        )
    ]
    checked = 0
    recomputed = {}
    for name, probs, metrics in models:
        for mode in ("default", "calibrated"):
            mine = _block(z, probs, mode, band, minimum)
            recomputed[(name, mode)] = mine
            for target, entry in metrics[mode].items():
                group = next(iter(entry["by_group"].values()))
                for c, cell in enumerate(group["cells"]):
                    for rate in (*RATES, "ece"):
                        _close(mine[target]["cells"][c][rate], cell[rate], f"{name} {mode} {rate}")
                        checked += 1
                for metric, value in mine[target]["gaps"].items():
                    _close(value, group["gaps"][metric]["value"], f"{name} {mode} {metric}")
                    checked += 1
    # every level's Δ values: pruned − dense, from the same recomputation
    for i, lv in enumerate(report["validation"]["levels"]):
        name = f"level {z['sparsities'][i]:g}"
        for mode in ("default", "calibrated"):
            for target, d in lv["delta"][mode].items():
                p, q = recomputed[(name, mode)][target], recomputed[("dense", mode)][target]
                _close(p["acc"] - q["acc"], d["accuracy"]["value"], f"{name} Δ accuracy")
                group = next(iter(d["by_group"].values()))
                for metric, value in p["gaps"].items():
                    dense_value = q["gaps"][metric]
                    want = None if value is None or dense_value is None else value - dense_value
                    _close(want, group[metric]["value"], f"{name} {mode} Δ {metric}")
                    checked += 1
                rows = next(iter(d["excess_accuracy_change"].values()))
                for c, row in enumerate(rows):
                    pa, qa = p["cells"][c]["accuracy"], q["cells"][c]["accuracy"]
                    want = None if pa is None or qa is None else (pa - qa) - (p["acc"] - q["acc"])
                    _close(want, row["value"], f"{name} excess accuracy")
                    checked += 1
    assert checked > 300
