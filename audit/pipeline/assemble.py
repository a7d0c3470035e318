"""Assemble stage (rank 0): the typed report and the per-sample predictions.

Owns: building the :class:`audit.results.Report` from the stages' results (inputs block,
plot data: calibration curves and per-cell probability histograms, warnings) and the
``predictions.npz`` arrays anyone can recompute every number from.
Must not: compute a metric outside metrics/ (the histograms' per-cell counts come from the
disaggregation engine, ``metrics.binned_sums``), or write files.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit import criteria
from audit import metrics as M
from audit._version import __version__
from audit.data import Dataset
from audit.model_io import LoadedModel
from audit.pipeline.context import RunContext
from audit.pipeline.decode import Decoded
from audit.pipeline.dense import DenseResults
from audit.pipeline.judge import Judgement
from audit.pipeline.levels import Levels
from audit.pipeline.measure import DensePass, Measured
from audit.pipeline.select import Selection
from audit.results import Report

SCHEMA_VERSION = "1.1"
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Audited:
    """Everything the stages produced, as the assemble stage receives it."""

    lm: LoadedModel
    ds: Dataset
    sel: Selection
    pre: dict[str, Any]
    decoded: Decoded
    dense_pass: DensePass
    measured: Measured
    levels: Levels
    dense: DenseResults
    judgement: Judgement


def assemble(ctx: RunContext, a: Audited) -> tuple[Report, dict[str, np.ndarray]]:
    """The assemble stage: the typed report and the predictions.npz arrays."""
    m, levels, probs = a.measured, a.levels.levels, a.levels.pruned_probs
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "prune-audit", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "verdict": a.judgement.verdict,
        "inputs": _inputs(ctx, a),
        "dense": a.dense.dense,
        "forecast": a.dense.forecast,
        "susceptible": a.dense.susceptible,
        "gallery": a.dense.gallery,
        "calibration_curves": calibration_curves(m.pop, m.dense_probs, levels, probs),
        "uncertainty_histograms": uncertainty_histograms(
            m.pop, m.dense_probs, levels, probs, class_column=a.sel.target_columns[0]
        ),
        "validation": a.judgement.validation,
        "gate": a.judgement.gate,
        "warnings": [*m.warnings, *a.levels.warnings, *a.judgement.warnings],
    }
    return Report.from_json(report), _predictions(a)


def _inputs(ctx: RunContext, a: Audited) -> dict[str, Any]:
    cfg, sel, m = ctx.cfg, a.sel, a.measured
    sizes = sel.splits["sizes"] | {"eval": int(m.pop.n), "calib": len(a.decoded.calib_idx)}
    return {
        "model": {
            "path": str(cfg.model),
            "format": a.lm.format,
            "arch": a.lm.arch,
            "n_parameters": a.lm.n_parameters,
        },
        "data": {"path": str(cfg.data), "layout": a.ds.layout},
        "n_samples": int(m.pop.n),
        "task": sel.task,
        "targets": list(sel.targets),
        "groups": list(sel.groups),
        "splits": sel.splits | {"sizes": sizes},
        "preprocessing": a.pre,
        "device": str(ctx.device),
        "precision": ctx.precision,
        "world_size": ctx.dist.world,
        "seed": cfg.seed,
        "bootstrap": cfg.bootstrap,
        "uncertainty_band": list(cfg.uncertainty_band),
        "thresholds": {
            mode: {t: float(v) for t, v in zip(sel.targets, arr, strict=True)}
            for mode, arr in m.thresholds.items()
        },
        "skipped_images": [{"id": i, "reason": r} for i, r in a.decoded.skipped],
    }


def _predictions(a: Audited) -> dict[str, np.ndarray]:
    m, levels, pruned = a.measured, a.levels.levels, a.levels.pruned_probs
    return {
        "ids": np.asarray([str(x) for x in a.ds.ids[a.decoded.eval_idx]]),
        "labels": m.labels,
        "groups": m.groups,
        # float64, exactly the probabilities every number in report.json was computed
        # from (float32 saturates at 1.0 and moved a recomputed AUROC by 4e-4); the dense
        # logits too, as the model produced them
        "dense_probs": m.dense_probs.astype(np.float64),
        "dense_logits": a.dense_pass.eval_logits,
        "sparsities": np.asarray([lv["sparsity"] for lv in levels], dtype=np.float64),
        "level_labels": np.asarray([str(lv["label"]) for lv in levels], dtype=np.str_),
        "pruned_probs": (
            np.stack(pruned).astype(np.float64)
            if pruned
            else np.zeros((0, *m.dense_probs.shape), dtype=np.float64)
        ),
        "thresholds_default": m.thresholds["default"].astype(np.float64),
        "thresholds_calibrated": m.thresholds["calibrated"].astype(np.float64),
        "target_names": np.asarray(a.sel.targets),
        "group_names": np.asarray(a.sel.groups),
    }


def _named_models(
    dense_probs: np.ndarray, levels: list[dict[str, Any]], pruned_probs: list[np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """``[("dense", probs), ("0.9", probs), ...]``: the model names the plot data is keyed by."""
    return [("dense", dense_probs)] + [
        (lv.get("label") or f"{lv['sparsity']:g}", p)
        for lv, p in zip(levels, pruned_probs, strict=True)
    ]


def calibration_curves(
    pop: criteria.Population,
    dense_probs: np.ndarray,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
) -> dict[str, Any]:
    """Reliability-curve points per target and model (non-empty bins only)."""
    out: dict[str, Any] = {}
    for a, t in enumerate(pop.targets):
        curves = {}
        for name, probs in _named_models(dense_probs, levels, pruned_probs):
            mean_p, mean_y, count = M.calibration_curve(pop.labels[:, a], probs[:, a])
            keep = np.asarray(count) > 0
            curves[name] = {
                "mean_p": [float(x) for x in np.asarray(mean_p)[keep]],
                "mean_y": [float(x) for x in np.asarray(mean_y)[keep]],
                "count": [int(x) for x in np.asarray(count)[keep]],
            }
        out[t] = curves
    return out


def _binned_counts(prob: np.ndarray, key: criteria.GroupKey, n_bins: int) -> np.ndarray:
    """Per-cell counts of the samples' ``prob`` in ``n_bins`` equal-width bins on [0, 1].

    Through the disaggregation engine (``metrics.binned_sums``, the per-cell calibration
    statistics; only its sample counts are used, so the labels passed are zeros); shape
    (n_cells, n_bins), the binning of ``metrics.probability_histogram``.
    """
    p = np.asarray(prob, dtype=np.float64)[:, None]
    sums = M.binned_sums(
        np.zeros_like(p, dtype=np.int8), p, key.cells, n_cells=key.n_cells, n_bins=n_bins
    )
    return np.rint(sums[0, :, :, 0]).astype(np.int64)


def uncertainty_histograms(
    pop: criteria.Population,
    dense_probs: np.ndarray,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
    *,
    class_column: str,
) -> dict[str, Any]:
    """Counts of p per group cell in 20 equal-width bins, dense and per pruned level.

    Binary/multilabel: one entry per target, of its positive-class p. Multiclass: one entry,
    keyed by the class column, of the top-class p (the per-class columns would all share it).
    """
    multiclass = pop.task == "multiclass"
    models = _named_models(dense_probs, levels, pruned_probs)
    outputs: list[tuple[str, Callable[[np.ndarray], np.ndarray]]]
    if multiclass:
        outputs = [(class_column, lambda probs: probs.max(axis=1))]
    else:
        outputs = [(t, lambda probs, a=a: probs[:, a]) for a, t in enumerate(pop.targets)]
    by_output: dict[str, Any] = {}
    for name, column in outputs:
        by_key: dict[str, Any] = {}
        for key in pop.keys:
            counts = {
                model: _binned_counts(column(probs), key, HISTOGRAM_BINS) for model, probs in models
            }
            by_key[key.name] = [
                {
                    "value": value,
                    "n": int(key.sizes[c]),
                    "counts": {model: [int(x) for x in h[c]] for model, h in counts.items()},
                }
                for c, value in enumerate(key.values)
            ]
        by_output[name] = by_key
    return {
        "quantity": "top_class_probability" if multiclass else "probability",
        "edges": [b / HISTOGRAM_BINS for b in range(HISTOGRAM_BINS + 1)],
        "band": [float(x) for x in pop.band],
        "targets": by_output,
    }
