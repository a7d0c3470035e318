"""Look-ups into the report dict that several sections share.

Owns: the target order, cells by group value, a model's display label, and the sort order
of plot keys. Must not compute a metric; which level was graded and which plot key is a
level's are asked of :mod:`audit.report._format` (typed results), not parsed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report._format import fmt_sparsity, get, level_label


def targets(report: Mapping[str, Any]) -> list[str]:
    """The audited targets, in the order ``inputs.targets`` lists them, then any others."""
    block = get(report, "dense", "default") or {}
    listed = [t for t in get(report, "inputs", "targets") or [] if t in block]
    return listed + [t for t in block if t not in listed]


def cells_by_value(entry: Any) -> dict[str, Mapping[str, Any]]:
    """A group entry's cells keyed by their value as text."""
    cells = get(entry, "cells") or []
    return {str(c.get("value")): c for c in cells if isinstance(c, Mapping)}


def model_label(level: Mapping[str, Any] | None) -> str:
    """``dense``, ``sparsity 0.9`` or a supplied model's own label."""
    if level is not None and level.get("source") == "supplied":
        return level_label(level)
    return "dense" if level is None else f"sparsity {fmt_sparsity(level.get('sparsity'))}"


def float_or_inf(key: str) -> float:
    """A sparsity key as a float; infinity for a label that is not a number (sorts last)."""
    try:
        return float(key)
    except ValueError:
        return float("inf")
