from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from audit.report import md_escape, render_markdown, validate_report

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
CELL_SPLIT = re.compile(r"(?<!\\)\|")


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _tables(md: str) -> list[list[str]]:
    """Consecutive lines starting with '|' form one table."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _assert_tables_well_formed(md: str) -> None:
    for table in _tables(md):
        widths = {len(CELL_SPLIT.split(row)) for row in table}
        assert len(widths) == 1, f"ragged table: {table[:3]}"


def test_verdict_comes_first(report: dict) -> None:
    md = render_markdown(report)
    first, _, headline = md.splitlines()[:3]
    assert first.startswith("## ❌") and "gate failed" in first
    assert headline == f"**{md_escape(report['verdict']['headline'])}**"
    head = md.split("### Gate checks")[0]
    assert "**Forecast risk:** high" in head
    assert "**Max safe sparsity:** 0.8" in head


def test_passed_report_shows_a_tick(report: dict) -> None:
    report["verdict"]["passed"] = True
    report["gate"]["passed"] = True
    assert render_markdown(report).startswith("## ✅ prune-audit: gate passed")


def test_every_gate_check_is_listed_failures_first(report: dict) -> None:
    md = render_markdown(report)
    gate = md.split("### Gate checks")[1].split("###")[0]
    rows = [r for r in _tables(gate)[0][2:]]
    assert len(rows) == len(report["gate"]["checks"])
    outcomes = [CELL_SPLIT.split(r)[8].strip() for r in rows]
    assert outcomes[:2] == ["❌ fail", "❌ fail"]
    assert outcomes[2] == "⚠️ undefined"
    assert set(outcomes[3:]) == {"✅ pass"}
    header = [c.strip() for c in CELL_SPLIT.split(_tables(gate)[0][0])[1:-1]]
    assert header[:8] == [
        "check",
        "target",
        "group",
        "sparsity",
        "value",
        "95% CI",
        "limit",
        "outcome",
    ]


def _inconclusive(report: dict, n_needed: int | None, ci: list[float] | None) -> dict:
    check = copy.deepcopy(report["gate"]["checks"][0])
    check.update(
        name="delta_fpr_gap",
        value=0.02,
        ci=ci,
        limit=0.05,
        outcome="inconclusive",
        detail="Δ = +0.0200, 95% CI (projection) [-0.0200, +0.0600]",
        n_eval=500,
        n_needed=n_needed,
    )
    report["gate"]["checks"].append(check)
    return check


def test_inconclusive_checks_show_the_sample_size_they_need(report: dict) -> None:
    _inconclusive(report, 889, [-0.02, 0.06])
    md = render_markdown(report)
    gate = md.split("### Gate checks")[1].split("###")[0]
    rows = _tables(gate)[0][2:]
    row = next(r for r in rows if "inconclusive" in r)
    cells = [c.strip() for c in CELL_SPLIT.split(row)]
    assert cells[8] == "❔ inconclusive" and cells[6] == "[-0.020, 0.060]"
    assert "needs ≈ 889 samples (has 500)" in cells[9]
    # listed again below the table, with the reason it is neither a pass nor a fail
    assert "**Inconclusive** (the interval straddles the limit" in gate
    assert re.search(
        r"delta\\_fpr\\_gap for .*: 0\.020 \\\[-0\.020, 0\.060\\\], limit 0\.050 — "
        r"needs ≈ 889 samples \(has 500\)",
        gate,
    )
    assert "inconclusive" in md.split("### Gate checks")[0]  # counted in the header
    _assert_tables_well_formed(md)


def test_inconclusive_without_a_sample_size_says_why(report: dict) -> None:
    _inconclusive(report, None, None)
    assert "no interval (bootstrap disabled): rerun with --bootstrap" in render_markdown(report)
    report["gate"]["checks"][-1]["ci"] = [0.03, 0.07]
    assert "the estimate sits on the limit: no sample size settles it" in render_markdown(report)


def test_undefined_values_read_na_with_reason(report: dict) -> None:
    md = render_markdown(report)
    assert "n/a (fnr undefined in cell 1×0 (no positives))" in md
    assert "n/a (Male×Young is not a binary group attribute)" in md
    section = md.split("**Blond\\_Hair × Male×Young**")[1].split("**")[0]
    row = next(r for r in section.splitlines() if r.startswith("| fnr gap"))
    cells = [c.strip() for c in CELL_SPLIT.split(row)[2:-1]]
    assert len(cells) == 4 and all(c.startswith("n/a (") for c in cells)


def test_findings_show_delta_with_ci_per_level(report: dict) -> None:
    md = render_markdown(report)
    by_group = report["validation"]["levels"][1]["delta"]["default"]["Blond_Hair"]["by_group"]
    d = by_group["Male"]["fnr_gap"]
    text = f"+{d['value']:.3f} \\[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}\\]"
    section = md.split("**Blond\\_Hair × Male**")[1].split("**")[0]
    assert text in section
    assert "Δ @ 0.8 | Δ @ 0.9 | Δ @ 0.95" in section
    # the pair with the largest upper CI bound comes first
    assert md.index("**Blond\\_Hair × Male**") < md.index("**Smiling × Male**")


def test_forecast_and_grading_sections(report: dict) -> None:
    md = render_markdown(report)
    fc = md.split("### Forecast: high risk")[1].split("### Forecast grading")[0]
    assert "Rule: Pruning flips uncertain samples" in fc
    row = next(r for r in fc.splitlines() if r.startswith("| Blond\\_Hair × Male | fnr gap"))
    cells = [c.strip() for c in CELL_SPLIT.split(row)[1:-1]]
    # an older report: no interval, no per-sparsity forecast, no graded interval
    assert cells[2] == "+0.205" and cells[3] == "—" and cells[4] == "high"
    assert cells[5].startswith("+0.405") and cells[6] == "n/a" and cells[7] == "✅"
    grading = md.split("### Forecast grading")[1]
    assert "direction hit rate 50.0%, forecast interval held the measured Δ in n/a" in grading
    assert "risk hit rate 62.5%" in grading
    assert "| 0.9 | any | 0.898 |" in grading


def test_warnings_are_listed(report: dict) -> None:
    md = render_markdown(report)
    warnings = md.split("### Warnings")[1]
    assert "- 1 image could not be decoded" in warnings
    assert "Skipped images (1): img/002000.jpg (cannot decode: truncated JPEG)" in warnings


def test_forecast_only_report(report: dict) -> None:
    report["validation"] = None
    report["gate"]["mode"] = "forecast"
    del report["verdict"]
    validate_report(report)
    md = render_markdown(report)
    assert "**Max safe sparsity:** n/a (not validated: forecast only)" in md
    assert "not run (forecast from the dense model only)" in md
    assert "n/a (not validated)" in md
    assert "### Forecast grading" not in md
    _assert_tables_well_formed(md)


def test_tables_are_well_formed(report: dict) -> None:
    _assert_tables_well_formed(render_markdown(report))


def _huge(report: dict, n_targets: int) -> dict:
    """Clone the Blond_Hair entries under many target names (every place targets key)."""
    big = copy.deepcopy(report)
    names = [f"Target_{i:04d}" for i in range(n_targets)]
    blocks = [big["dense"]] + [lv["metrics"] for lv in big["validation"]["levels"]]
    for metrics in blocks:
        for mode in ("default", "calibrated"):
            for n in names:
                metrics[mode][n] = metrics[mode]["Blond_Hair"]
    for lv in big["validation"]["levels"]:
        for mode in ("default", "calibrated"):
            for n in names:
                lv["delta"][mode][n] = lv["delta"][mode]["Blond_Hair"]
        for n in names:
            lv["flips"][n] = lv["flips"]["Blond_Hair"]
            lv["ranking_quality"][n] = lv["ranking_quality"]["Blond_Hair"]
    for n in names:
        big["gate"]["checks"] += [dict(c, target=n) for c in report["gate"]["checks"]]
        big["forecast"]["pairs"] += [dict(p, target=n) for p in report["forecast"]["pairs"]]
        big["gate"]["failures"].append(f"max_delta_fnr_gap for {n} × Male: 0.541 > 0.05")
    big["inputs"]["targets"] += names
    big["warnings"] += [f"warning {i}" for i in range(2000)]
    return big


@pytest.mark.parametrize("n_targets", [40, 150])
def test_markdown_fits_a_pr_comment_even_when_huge(report: dict, n_targets: int) -> None:
    md = render_markdown(_huge(report, n_targets))
    assert len(md) < 65_000
    assert md.startswith("## ❌")
    assert "### Gate checks" in md
    assert "not shown (see report.html or report.json for everything)" in md
    _assert_tables_well_formed(md)


def test_md_escape_neutralises_markdown_and_html() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("*x* _y_ `z` [l](u) # h ~s~ $m$ !") == (
        "\\*x\\* \\_y\\_ \\`z\\` \\[l\\](u) \\# h \\~s\\~ \\$m\\$ \\!"
    )
    assert md_escape("<script>&amp;") == "&lt;script&gt;&amp;amp;"
    assert md_escape("back\\slash") == "back\\\\slash"
    assert md_escape("two\nlines\r\n\tand tab") == "two lines and tab"
    assert md_escape(3) == "3"
    assert md_escape("x" * 50, max_len=10) == "x" * 9 + "…"


def test_number_formatting_never_shows_minus_zero_or_zero_for_undefined() -> None:
    from audit.report._format import fmt_delta, fmt_num, fmt_signed

    assert fmt_num(-1e-17) == "0.000" and fmt_signed(-1e-17) == "+0.000"
    assert fmt_num(None, reason="no positives") == "n/a (no positives)"
    assert fmt_num(float("nan")) == "n/a"
    assert fmt_delta({"value": 0.0812, "ci": [0.052, 0.11], "reason": None}) == (
        "+0.081 [0.052, 0.110]"
    )
    assert fmt_delta({"value": None, "ci": None, "reason": "no positives"}) == "n/a (no positives)"


def _with_new_forecast(report: dict) -> dict:
    """The fixture with the forecast fields of the sparsity-aware forecast (v2) filled in."""
    from audit.forecast import load_model

    bench = load_model().benchmark
    fc = report["forecast"]
    fc["target_sparsity"] = 0.9
    fc["sparsities"] = [0.8, 0.9, 0.95]
    fc["model"] = {
        "recovery": "bn",
        "coefficients": {"intercept": -2.0, "margin": -0.5, "toward_majority": 1.0,
                         "group_tilt": 0.4},
        "interval_level": 0.9,
        "risk_thresholds": {"medium": 0.02, "high": 0.05},
        "benchmark": bench,
        "fitted_on": {"n_design_cases": 20},
        "notes": ["a note <b>escaped</b>"],
    }
    for p in fc["pairs"]:
        d = p["predicted_delta"]
        p["interval"] = {m: [round(v - 0.05, 5), round(v + 0.1, 5)] for m, v in d.items()}
        p["by_sparsity"] = [
            {"sparsity": s, "predicted_delta": {m: v * k for m, v in d.items()},
             "interval": p["interval"], "risk": p["risk"], "extrapolated": False}
            for s, k in ((0.8, 0.5), (0.9, 1.0), (0.95, 2.0))
        ]
    for a in report["validation"]["forecast_agreement"]["pairs"]:
        a["predicted_interval"] = [a["predicted_delta"] - 0.05, a["predicted_delta"] + 0.1]
        m = a["measured_delta"]
        a["interval_hit"] = None if m is None else bool(
            a["predicted_interval"][0] <= m <= a["predicted_interval"][1]
        )
    report["validation"]["forecast_agreement"]["interval_coverage"] = 0.25
    return report


def test_forecast_section_shows_intervals_per_sparsity_and_benchmark(report: dict) -> None:
    report = _with_new_forecast(report)
    validate_report(report)
    md = render_markdown(report)
    fc = md.split("### Forecast: high risk at sparsity 0.9")[1].split("### Forecast grading")[0]
    row = next(r for r in fc.splitlines() if r.startswith("| Blond\\_Hair × Male | fnr gap"))
    cells = [c.strip() for c in CELL_SPLIT.split(row)[1:-1]]
    assert cells[2] == "+0.205 \\[0.155, 0.305\\]"  # brackets escaped for Markdown
    assert cells[3] == "0.8: +0.103, 0.9: +0.205, 0.95: +0.411"
    assert "held-out part of the forecast benchmark" in fc
    assert "Risk levels at 0.9 — share with an event: high:" in fc
    assert "a note &lt;b&gt;escaped&lt;/b&gt;" in fc
    grading = md.split("### Forecast grading")[1]
    assert "forecast interval held the measured Δ in 25.0%" in grading
    assert "The rule in use, on the forecast benchmark" in grading
    _assert_tables_well_formed(md)
