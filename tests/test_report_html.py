from __future__ import annotations

import base64
import hashlib
import json
import re
from html import unescape
from importlib import resources
from pathlib import Path

import pytest

from audit.report import render_html

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture()
def html(report: dict) -> str:
    return render_html(report)


def expected_plot_keys(report: dict) -> set[str]:
    keys = set()
    validated = report["validation"] is not None
    for target, block in report["dense"]["default"].items():
        for group in block["by_group"]:
            keys.add(f"uncertainty|{target}|{group}")
            if validated:
                for mode in ("default", "calibrated"):
                    for rate in ("fnr", "fpr", "accuracy"):
                        keys.add(f"metric|{mode}|{target}|{group}|{rate}")
    keys |= {f"calibration|{t}" for t in report.get("calibration_curves", {})}
    for target, by_key in report.get("uncertainty_histograms", {}).get("targets", {}).items():
        for group, cells in by_key.items():
            keys |= {f"histogram|{target}|{group}|{c['value']}" for c in cells}
    return keys


def test_templates_ship_as_package_files() -> None:
    templates = resources.files("audit.report") / "templates"
    for name in ("report.html.j2", "report.css", "report.js", "report-head.js"):
        assert (templates / name).is_file(), name


def test_page_is_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    # the only URL on the page is the SVG namespace, which is a name, never fetched
    without_data = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", html)
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>)]*", without_data))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|iframe|object|embed|base)\b", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assert "@import" not in html and "url(" not in html
    for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', html):
        assert src.startswith("data:image/png;base64,")


def test_csp_allows_exactly_the_inline_scripts_and_style(html: str) -> None:
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    csp = unescape(meta)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert "unsafe-inline" not in csp

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 2 and len(styles) == 1
    script_src = re.search(r"script-src ([^;]+)", csp).group(1).split()
    assert sorted(script_src) == sorted(digest(s) for s in scripts)
    assert re.search(r"style-src ([^;]+)", csp).group(1).strip() == digest(styles[0])
    assert not re.search(r"\sstyle=", html), "inline style attributes would be blocked by CSP"


def test_verdict_banner_comes_first(html: str, report: dict) -> None:
    body = html.split("<body>", 1)[1]
    banner = body.split("</header>", 1)[0]
    assert 'class="banner failed"' in banner and "Gate failed" in banner
    assert report["verdict"]["headline"] in banner
    assert '<dd class="big">0.8</dd>' in banner
    assert "<dd>high</dd>" in banner


def test_every_plot_is_present(html: str, report: dict) -> None:
    found = re.findall(r'<svg [^>]*class="plot [^"]*" data-plot="([^"]+)"', html)
    assert len(found) == len(set(found))
    assert set(found) == expected_plot_keys(report)


def test_ci_band_is_dense_gap_plus_delta_ci(html: str, report: dict) -> None:
    dense = report["dense"]["default"]["Blond_Hair"]["by_group"]["Male"]["gaps"]["fnr_gap"]["value"]
    lv = report["validation"]["levels"][1]
    ci = lv["delta"]["default"]["Blond_Hair"]["by_group"]["Male"]["fnr_gap"]["ci"]
    pruned = lv["metrics"]["default"]["Blond_Hair"]["by_group"]["Male"]["gaps"]["fnr_gap"]["value"]
    svg = html.split('data-plot="metric|default|Blond_Hair|Male|fnr"')[1].split("</svg>")[0]
    assert f"@ 0.9: {pruned:.3f} [{dense + ci[0]:.3f}, {dense + ci[1]:.3f}]" in svg
    assert svg.count('class="band"') == 1


def test_uncertainty_bars_are_labelled_as_rates(html: str, report: dict) -> None:
    section = html.split('id="uncertainty"')[1].split("</section>")[0]
    assert "uncertainty rates" in section and "sparsity 0.95" in section
    assert "the histograms below show the whole distribution of p" in section
    rate = report["dense"]["default"]["Smiling"]["by_group"]["Young"]["cells"][0][
        "uncertainty_rate"
    ]
    assert f"dense, 0: {rate:.3f}" in section.split('data-plot="uncertainty|Smiling|Young"')[1]


def _cell_block(html: str, outcome: str, confident: bool) -> str:
    cell = "confident" if confident else "uncertain"
    return html.split(f'data-cell="{outcome}-{cell}"')[1].split('data-cell="')[0]


def test_gallery_grid_shows_gallery_items_by_outcome_and_confidence(
    html: str, report: dict
) -> None:
    for item in report["gallery"]:
        block = _cell_block(html, item["outcome"], item["confident"])
        assert item["id"] in block and item["thumbnail"] in block
        assert f"#0 {item['id']}" not in block  # rank 0 = not ranked, not shown
    assert "none" in _cell_block(html, "FP", True)  # the fixture has no confident FP
    strip = html.split("Most susceptible (ranked)")[1].split('<div class="gallery">')[0]
    for item in report["susceptible"]:
        assert f"#{item['rank']} {item['id']}" in strip
    thumbs = [s["thumbnail"] for s in report["susceptible"] + report["gallery"] if s["thumbnail"]]
    assert html.count('<img src="data:image/png;base64,') == len(thumbs)


def test_without_gallery_key_the_grid_shows_the_susceptible_items(report: dict) -> None:
    del report["gallery"]
    html = render_html(report)
    assert "Most susceptible (ranked)" not in html
    for item in report["susceptible"]:
        block = _cell_block(html, item["outcome"], item["confident"])
        assert f"#{item['rank']} {item['id']}" in block and item["thumbnail"] in block
    assert html.count('<img src="data:image/png;base64,') == len(report["susceptible"])


def test_non_inline_thumbnail_is_refused(report: dict) -> None:
    report["susceptible"][0]["thumbnail"] = "https://example.com/track.png"
    html = render_html(report)
    assert "example.com" not in html
    assert "thumbnail refused (not an inline image)" in html


def test_undefined_values_read_na_with_reason(html: str) -> None:
    assert (
        '<span class="na">n/a</span> <span class="why">(no positives in Male×Young=1×0)</span>'
        in html
    )
    assert "Dense fnr gap: n/a (fnr undefined in cell 1×0 (no positives))" in html


def test_tables_are_sortable_with_numeric_keys(html: str) -> None:
    tables = re.findall(r'<table class="sortable" id="t-([^"]+)">', html)
    for name in (
        "gate-checks",
        "forecast-pairs",
        "forecast-agreement",
        "ranking-quality",
        "cells-default",
        "changes-default",
        "flips",
        "susceptible",
        "thresholds",
    ):
        assert name in tables
    gate = html.split('id="t-gate-checks"')[1].split("</table>")[0]
    assert '<td data-v="0.541' in gate  # numeric sort key next to the formatted value
    assert '<th scope="col" data-type="num"' in gate


def test_forecast_and_grading_sections(html: str, report: dict) -> None:
    assert report["forecast"]["rule"] in html
    assert "direction hit rate <b>50.0%</b>, forecast interval held the measured Δ in" in html
    assert "risk hit rate <b>62.5%</b>" in html


def test_forecast_only_report_renders_without_validation(report: dict) -> None:
    report["validation"] = None
    del report["calibration_curves"]
    html = render_html(report)
    found = set(re.findall(r'data-plot="([^"]+)"', html))
    assert found == expected_plot_keys(report)
    assert "not validated (forecast only)" in html
    assert 'id="grading"' not in html


def _svg(html: str, key: str) -> str:
    return html.split(f'data-plot="{key}"')[1].split("</svg>")[0]


_BIN_TIP = re.compile(r"<title>p in \[([0-9.]+), ([0-9.]+)[)\]]: ([^<]*)</title>")


def _bin_counts(svg: str) -> dict[str, list[int]]:
    """Counts per model read back from the per-bin tooltips of a histogram panel."""
    out: dict[str, list[int]] = {}
    for _, _, listing in _BIN_TIP.findall(svg):
        for part in listing.split("; "):
            model, count = part.rsplit(" ", 1)
            out.setdefault(model, []).append(int(count))
    return out


def test_histograms_have_one_panel_per_group_value_summing_to_its_size(
    html: str, report: dict
) -> None:
    hist = report["uncertainty_histograms"]
    section = html.split('id="histograms"')[1].split("</section>")[0]
    panels = re.findall(r'data-plot="histogram\|([^|"]+)\|([^|"]+)\|([^"]+)"', section)
    expected = [
        (target, group, cell["value"])
        for target, block in report["dense"]["default"].items()
        for group, entry in block["by_group"].items()
        for cell in entry["cells"]
    ]
    assert sorted(panels) == sorted(expected)  # one panel per group value, none extra
    levels = [str(lv["sparsity"]) for lv in report["validation"]["levels"]]
    for target, group, value in expected:
        cell = next(
            c
            for c in report["dense"]["default"][target]["by_group"][group]["cells"]
            if c["value"] == value
        )
        svg = _svg(section, f"histogram|{target}|{group}|{value}")
        counts = _bin_counts(svg)
        assert set(counts) == {"dense"} | {f"sparsity {s}" for s in levels}
        for model, per_bin in counts.items():
            assert len(per_bin) == len(hist["edges"]) - 1
            assert sum(per_bin) == cell["n"], (target, group, value, model)
        # the drawn numbers are the report's
        stored = next(c for c in hist["targets"][target][group] if c["value"] == value)
        assert counts["dense"] == stored["counts"]["dense"]
        assert "uncertainty band (0.1, 0.9)" in svg and svg.count('class="band"') == 1


def test_histogram_shows_the_graded_level_and_offers_every_level(html: str, report: dict) -> None:
    graded = report["validation"]["forecast_agreement"]["sparsity"]
    select = html.split('<select id="hist-level">')[1].split("</select>")[0]
    options = re.findall(r'<option value="([^"]+)"( selected)?>', select)
    assert options == [
        (str(lv["sparsity"]), " selected" if lv["sparsity"] == graded else "")
        for lv in report["validation"]["levels"]
    ]
    svg = _svg(html, "histogram|Blond_Hair|Male|0")
    layers = re.findall(r'<g class="hist-level( off)?" data-level="([^"]+)">', svg)
    assert [level for off, level in layers if not off] == [str(graded)]
    assert len(layers) == len(report["validation"]["levels"])


def test_report_without_histograms_still_renders(report: dict) -> None:
    del report["uncertainty_histograms"]
    html = render_html(report)
    assert 'data-plot="histogram|' not in html and 'id="hist-level"' not in html
    assert "not histograms of p" in html
    assert set(re.findall(r'data-plot="([^"]+)"', html)) == expected_plot_keys(report)


def test_cli_rerenders_histograms_and_old_reports_without_them(
    report: dict, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from audit.cli import app

    old = dict(report)
    del old["uncertainty_histograms"]
    for name, data in (("new", report), ("old", old)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(data), encoding="utf-8")
        res = CliRunner().invoke(
            app, ["report", str(tmp_path / name / "report.json"), "--format", "html"]
        )
        assert res.exit_code == 0, res.output
    new_html = (tmp_path / "new" / "report.html").read_text(encoding="utf-8")
    old_html = (tmp_path / "old" / "report.html").read_text(encoding="utf-8")
    assert set(re.findall(r'data-plot="([^"]+)"', new_html)) == expected_plot_keys(report)
    assert set(re.findall(r'data-plot="([^"]+)"', old_html)) == expected_plot_keys(old)
    assert 'data-plot="histogram|' not in old_html


def test_forecast_only_histograms_have_no_level_selector(report: dict) -> None:
    report["validation"] = None
    for by_key in report["uncertainty_histograms"]["targets"].values():
        for cells in by_key.values():
            for cell in cells:
                cell["counts"] = {"dense": cell["counts"]["dense"]}
    html = render_html(report)
    assert (
        'id="hist-level"' not in html
        and "hist-level" not in html.split("<body>")[1].split("<script>")[0]
    )
    assert sum(
        len(cells)
        for by_key in report["uncertainty_histograms"]["targets"].values()
        for cells in by_key.values()
    ) == html.count('data-plot="histogram|')


def test_inconclusive_checks_are_marked_with_the_sample_size_they_need(report: dict) -> None:
    check = dict(report["gate"]["checks"][0])
    check.update(
        name="delta_fpr_gap",
        value=0.02,
        ci=[-0.02, 0.06],
        limit=0.05,
        outcome="inconclusive",
        detail="Δ = +0.0200, 95% CI (projection) [-0.0200, +0.0600]",
        n_eval=500,
        n_needed=889,
    )
    report["gate"]["checks"].append(check)
    gate = render_html(report).split('id="t-gate-checks"')[1].split("</table>")[0]
    header = [unescape(h) for h in re.findall(r"<th[^>]*>([^<]*)</th>", gate)]
    assert "95% CI" in header and "samples needed" in header
    row = next(r for r in gate.split("<tr") if "inconclusive" in r)
    assert 'class="outcome-inconclusive"' in row and "? inconclusive" in unescape(row)
    assert "needs ≈ 889 samples (has 500)" in unescape(row)
    assert "[-0.020, 0.060]" in row


def test_forecast_section_shows_intervals_per_sparsity_and_benchmark(report: dict) -> None:
    from tests.test_report_markdown import _with_new_forecast

    page = render_html(_with_new_forecast(report))
    section = page.split('<section id="forecast">')[1].split("</section>")[0]
    assert "forecast Δ BA" in section and "per sparsity (FNR / FPR / BA)" in section
    assert "[0.155, 0.305]" in section
    assert "0.8: +0.103 / +0.068 / " in unescape(section)
    assert "held-out part of the forecast benchmark" in section
    assert "a note &lt;b&gt;escaped&lt;/b&gt;" in section  # data never becomes markup
    grading = page.split('<section id="grading">')[1].split("</section>")[0]
    assert "forecast interval held the measured Δ in <b>25.0%</b>" in grading
    assert "in interval" in grading
