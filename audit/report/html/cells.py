"""View-model types of the page (tables, cells, plots) and the cell constructors.

Owns: how one value becomes a table cell -- its display text, its sort key and its CSS
class -- including the "n/a (reason)" cells for undefined values. Must not read the report
dict beyond the value it is given, or compute a metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from markupsafe import Markup

from audit.report._format import fmt_ci, fmt_num, fmt_signed, fmt_sparsity, is_number, sort_key


@dataclass(frozen=True)
class Col:
    """A table column; ``num`` columns sort numerically."""

    label: str
    kind: Literal["num", "text"] = "text"


@dataclass(frozen=True)
class Td:
    """A table cell: display text (str is escaped by the template) and its sort key."""

    text: str | Markup
    sort: str | None = None
    cls: str = ""


@dataclass
class Table:
    """A sortable table."""

    id: str
    caption: str
    columns: list[Col]
    rows: list[list[Td]] = field(default_factory=list)


@dataclass(frozen=True)
class Plot:
    """One chart with its caption."""

    svg: Markup
    caption: str = ""


@dataclass
class PlotGroup:
    """Charts shown together under one heading."""

    heading: str
    plots: list[Plot] = field(default_factory=list)


def na_markup(reason: str | None) -> Markup:
    """``n/a`` with its reason in a muted span (the reason is escaped by ``format``)."""
    if reason:
        return Markup('<span class="na">n/a</span> <span class="why">({})</span>').format(reason)
    return Markup('<span class="na">n/a</span>')


def num_cell(value: Any, *, digits: int = 3, reason: str | None = None) -> Td:
    """A number to ``digits`` decimals, sorting numerically; n/a with ``reason`` if none."""
    if not is_number(value):
        return Td(na_markup(reason), "", "na-cell")
    return Td(fmt_num(value, digits=digits), sort_key(value), "num")


def signed_cell(value: Any, *, reason: str | None = None) -> Td:
    """A signed change (``+0.012``), sorting numerically; n/a with ``reason`` if none."""
    if not is_number(value):
        return Td(na_markup(reason), "", "na-cell")
    return Td(fmt_signed(value), sort_key(value), "num")


def interval_cell(value: Any) -> Td:
    """A ``[lo, hi]`` interval sorted by its lower end; a dash if not two numbers."""
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(map(is_number, value))):
        return Td("—", "")
    return Td(fmt_ci(value), sort_key(value[0]), "num")


def text_cell(value: Any) -> Td:
    """Plain text (a dash for None), sorted as text."""
    return Td("—" if value is None else str(value), None if value is None else str(value))


def sparsity_cell(value: Any) -> Td:
    """A sparsity as the reports write it, sorted numerically."""
    return Td(fmt_sparsity(value) if value is not None else "—", sort_key(value), "num")


def hit_cell(value: Any) -> Td:
    """Whether a forecast hit: yes, no, or n/a (undefined)."""
    if value is True:
        return Td("✔ yes", "1")
    if value is False:
        return Td("✘ no", "0")
    return Td(na_markup("undefined"), "")


def outcome_cell(value: Any) -> Td:
    """A gate outcome with its symbol and the CSS class that colours it."""
    # Text symbols rather than emoji: they render with any system font.
    label = {
        "pass": "✔ pass",
        "fail": "✘ fail",
        "inconclusive": "? inconclusive",
        "undefined": "⚠ undefined",
    }
    return Td(
        label.get(str(value), str(value)), str(value), f"outcome-{value}" if value in label else ""
    )
