"""README's demo figures are what ``prune-audit demo`` reports (issue 11, acceptance 4).

The demo audits the shipped checkpoint (``audit/demo_assets/model.pt``) on data generated
with seeded numpy, so its figures do not depend on the CPU: measured under
``ATEN_CPU_CAPABILITY=default``, ``avx2`` and AVX-512, probabilities differed by at most
7e-7, which left every printed (3-decimal) figure the same (README, "What the demo
shows"). The comparison allows ``TOLERANCE`` beyond the printed rounding in case a
sample or two flips on another CPU. Whoever moves the demo's numbers updates README.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from audit.demo import DEMO_GROUP, DEMO_TARGETS, shipped_model_path

README = Path(__file__).resolve().parents[1] / "README.md"
# Half a unit of the printed third decimal, plus about two samples of 3,000 in a rate.
TOLERANCE = 0.0005 + 2 / 3000
_NUM = r"[+\-−]?\d+\.\d+"


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _value_ci(cell: str) -> tuple[float, float, float] | None:
    """``+0.144 [0.116, 0.175]`` (maybe in ** and with escaped brackets) -> numbers."""
    nums = re.findall(_NUM, cell.replace("\\", ""))
    if "n/a" in cell:
        return None
    assert len(nums) == 3, cell
    value, lo, hi = map(_num, nums)
    return value, lo, hi


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### What the demo shows")
    return text[start : text.index("## Auditing your model", start)]


def _rows(section: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| " + first_cell):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def demo_report(demo_report_dir: Path) -> dict:
    return json.loads((demo_report_dir / "report.json").read_text(encoding="utf-8"))


def _close(readme: float, measured: float | None, what: str) -> None:
    assert measured is not None, what
    assert abs(readme - measured) <= TOLERANCE, f"{what}: README {readme}, demo {measured:.4f}"


def _level(report: dict, sparsity: float) -> dict:
    return next(lv for lv in report["validation"]["levels"] if lv["sparsity"] == sparsity)


def test_readme_summary_table_is_what_the_demo_reports(demo_report: dict) -> None:
    section = _readme_section()
    checked = 0
    for target in DEMO_TARGETS:
        (row,) = _rows(section, f"`{target}`")
        dense = demo_report["dense"]["default"][target]["by_group"][DEMO_GROUP]["gaps"]
        _close(_num(row[1]), dense["fnr_gap"]["value"], f"{target} dense FNR gap")
        for cell, s, metric in zip(
            row[2:], (0.8, 0.9, 0.95, 0.9), ("fnr_gap",) * 3 + ("bias_amplification",),
            strict=True,
        ):
            d = _level(demo_report, s)["delta"]["default"][target]["by_group"][DEMO_GROUP][metric]
            readme = _value_ci(cell)
            if readme is None:
                assert d["value"] is None, f"{target} {metric} @ {s}: README says n/a"
                continue
            for r, m, part in zip(readme, (d["value"], *d["ci"]), ("Δ", "low", "high"),
                                  strict=True):
                _close(r, m, f"{target} {metric} @ {s} {part}")
            checked += 1
    assert checked >= 10


def test_readme_excerpt_is_the_demo_report_md(demo_report: dict, demo_report_dir: Path) -> None:
    section = _readme_section()
    excerpt = section[section.index("```markdown") : section.index("```", section.index(
        "```markdown") + 3)]
    md = (demo_report_dir / "report.md").read_text(encoding="utf-8")
    # The headline and the gate's counts are decisions: exactly equal.
    for line in excerpt.splitlines():
        if line.startswith(("## ", "**Gate", "- **Gate:**", "- **Forecast risk:**",
                            "- **Max safe sparsity:**", "- **Targets:**", "- **Validation:**")):
            assert line in md.splitlines(), line
    names = {"fnr gap": "fnr_gap", "fpr gap": "fpr_gap", "accuracy gap": "accuracy_gap",
             "equalized odds difference": "equalized_odds_difference",
             "uncertainty gap": "uncertainty_gap", "bias amplification": "bias_amplification"}
    rows = [r for r in (_rows(excerpt, name) for name in names) for r in r]
    assert len(rows) == len(names)
    sparsities = [lv["sparsity"] for lv in demo_report["validation"]["levels"]]
    for row in rows:
        metric = names[row[0]]
        block = demo_report["dense"]["default"]["Warm"]["by_group"][DEMO_GROUP]
        # bias amplification sits next to the gaps, not among them
        dense = block["gaps"] if metric in block["gaps"] else block
        _close(_num(row[1]), dense[metric]["value"], f"Warm dense {metric}")
        for cell, s in zip(row[2:], sparsities, strict=True):
            d = _level(demo_report, s)["delta"]["default"]["Warm"]["by_group"][DEMO_GROUP]
            for r, m in zip(_value_ci(cell), (d[metric]["value"], *d[metric]["ci"]),
                            strict=True):
                _close(r, m, f"Warm {metric} @ {s}")


def test_the_demo_audits_the_shipped_checkpoint(demo_report: dict) -> None:
    path = Path(demo_report["inputs"]["model"]["path"])
    assert path == shipped_model_path()
    manifest = json.loads(path.with_name("manifest.json").read_text(encoding="utf-8"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["model_sha256"]
    # small enough to ship in the wheel
    assert path.stat().st_size < 1_000_000


def test_the_demo_data_are_the_shipped_models(demo_report: dict) -> None:
    from audit.demo import data_digest

    data = Path(demo_report["inputs"]["data"]["path"])
    manifest = json.loads(shipped_model_path().with_name("manifest.json").read_text("utf-8"))
    assert data_digest(data) == manifest["data_sha256"]
