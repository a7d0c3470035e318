"""Forecast stage (rank 0): the dense model's criteria, the forecast, the susceptible samples.

Owns: computing the dense metrics under both thresholds (through criteria), the
bias-increase forecast per requested sparsity (through forecast: nothing here may use a
pruned model), the top-k susceptible samples and the gallery, with their ids, group values
and thumbnails.
Must not: prune, or compute a metric itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit import criteria, forecast, pruning
from audit.config import DEFAULT_SPARSITIES, AuditConfig
from audit.data import Dataset
from audit.pipeline.context import RunContext
from audit.pipeline.decode import Decoded, thumbnail
from audit.pipeline.measure import Measured


@dataclass(frozen=True)
class DenseResults:
    """The dense criteria, the forecast and the reported samples (report.json's dicts)."""

    dense: dict[str, Any]
    forecast: dict[str, Any]
    susceptible: list[dict[str, Any]]
    gallery: list[dict[str, Any]]


def forecast_sparsities(cfg: AuditConfig) -> tuple[float, ...]:
    """The audited sparsities (with --no-validate: those that would be), or a fixed one."""
    fixed = pruning.get_method(cfg.method).fixed_sparsity
    if fixed is not None:
        return (round(fixed, 6),)
    return tuple(cfg.sparsities or DEFAULT_SPARSITIES)


def dense_results(ctx: RunContext, ds: Dataset, decoded: Decoded, m: Measured) -> DenseResults:
    """The forecast stage: dense criteria, forecast, susceptible samples and gallery."""
    cfg, pop, probs = ctx.cfg, m.pop, m.dense_probs
    with ctx.progress.task("Dense criteria", None):
        dense = criteria.model_metrics(pop, probs, m.thresholds)
        fc = forecast.forecast(
            pop,
            probs,
            m.thresholds[cfg.policy.thresholds],
            dense["interdependence"],
            # Per requested sparsity (the audited ones; with --no-validate the ones that
            # would be audited), plus the policy's target.
            sparsities=forecast_sparsities(cfg),
            target_sparsity=cfg.policy.target_sparsity,
            recovery=cfg.recovery,
        )
        susceptible = forecast.susceptible_samples(
            pop, probs, m.thresholds["default"], top_k=cfg.top_k
        )
        gallery = forecast.gallery_samples(pop, probs, m.thresholds["default"])
        items = [*susceptible, *gallery]
        for item in items:
            i = item["index"]
            item["id"] = str(ds.ids[decoded.eval_idx[i]])
            item["groups"] = {k.name: k.values[k.cells[i]] for k in pop.keys if "×" not in k.name}
        thumbs = decoded.decoder.rows(
            decoded.eval_images, decoded.eval_idx, sorted({item["index"] for item in items})
        )
        for item in items:
            item["thumbnail"] = thumbnail(thumbs[item["index"]])
    return DenseResults(dense, fc, susceptible, gallery)
