"""The susceptible-sample gallery (outcome × confidence grid), its top-k strip and table.

Thumbnails are accepted only as ``data:image/...;base64`` URIs, so the page never fetches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from audit.report._format import fmt_num, get, is_number
from audit.report.html.cells import Col, Table, num_cell, text_cell

_THUMBNAIL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$")


_OUTCOMES = ("TP", "FP", "TN", "FN")


_OUTCOME_NAMES = {
    "TP": "true positives",
    "FP": "false positives",
    "TN": "true negatives",
    "FN": "false negatives",
}


def gallery_section(
    report: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Table]:
    """Gallery grid rows, the top-k strip (only when the grid has its own items), the table.

    The grid shows ``report["gallery"]`` when present (examples picked per
    outcome × confidence cell); otherwise the susceptible top-k, which are mostly uncertain.
    """
    items = [s for s in report.get("susceptible") or [] if isinstance(s, Mapping)]
    own = report.get("gallery")
    grid_items = [g for g in own if isinstance(g, Mapping)] if isinstance(own, list) else items
    strip = [_card(s) for s in items] if isinstance(own, list) else []
    rows = []
    for outcome in _OUTCOMES:
        row = {"outcome": outcome, "name": _OUTCOME_NAMES[outcome], "cells": []}
        for confident in (True, False):
            cards = [
                _card(s)
                for s in grid_items
                if s.get("outcome") == outcome and bool(s.get("confident")) is confident
            ]
            row["cells"].append({"confident": confident, "cards": cards})
        rows.append(row)
    table = Table(
        "susceptible",
        "Susceptible samples, most susceptible first",
        [
            Col("rank", "num"),
            Col("id"),
            Col("target"),
            Col("susceptibility", "num"),
            Col("p", "num"),
            Col("outcome"),
            Col("confident"),
            Col("groups"),
        ],
    )
    for s in items:
        p = get(s, "probs", s.get("target"))
        table.rows.append(
            [
                num_cell(s.get("rank")),
                text_cell(s.get("id")),
                text_cell(s.get("target")),
                num_cell(s.get("susceptibility")),
                num_cell(p),
                text_cell(s.get("outcome")),
                text_cell("yes" if s.get("confident") else "no"),
                text_cell(_pairs(s.get("groups"))),
            ]
        )
    return rows, strip, table


def _pairs(mapping: Any) -> str:
    if not isinstance(mapping, Mapping):
        return "—"
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def _card(s: Mapping[str, Any]) -> dict[str, Any]:
    thumb = s.get("thumbnail")
    target = s.get("target")
    probs = s.get("probs") or {}
    p = probs.get(target) if isinstance(probs, Mapping) else None
    rank = s.get("rank")
    return {
        # gallery-only examples carry rank 0: they are not part of the ranked top-k
        "rank": rank if is_number(rank) and rank >= 1 else None,
        "id": str(s.get("id", "")),
        "target": str(target),
        "p": fmt_num(p),
        "susceptibility": fmt_num(s.get("susceptibility")),
        "labels": _pairs(s.get("labels")),
        "groups": _pairs(s.get("groups")),
        "probs": ", ".join(f"{k}={fmt_num(v)}" for k, v in probs.items())
        if isinstance(probs, Mapping)
        else "—",
        # Only inline images: a URL here would make the page fetch from the network.
        "thumbnail": thumb if isinstance(thumb, str) and _THUMBNAIL.match(thumb) else None,
        "thumbnail_refused": isinstance(thumb, str) and not _THUMBNAIL.match(thumb),
    }
