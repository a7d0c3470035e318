"""The whole pipeline end to end on a tiny npz dataset (seconds)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from audit import AuditConfig, Policy, run_audit
from tests.conftest import TINY_ARCH as ARCH
from tests.conftest import assert_same_results


def _cfg(ckpt: Path, data: Path, out: Path, **kw: object) -> AuditConfig:
    base = dict(
        model=ckpt,
        data=data,
        out=out,
        arch=ARCH,
        groups=("tinted",),
        sparsities=(0.5, 0.9, 0.97),
        bootstrap=60,
        top_k=10,
        device="cpu",
        policy=Policy(min_group_size=5),
    )
    base.update(kw)
    return AuditConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def audited(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
):
    ckpt, data, model = tiny_audit_inputs
    out = tmp_path_factory.mktemp("out")
    return run_audit(_cfg(ckpt, data, out)), out, model, data


def test_report_has_spec_sections(audited) -> None:
    result, out, _, _ = audited
    rep = result.report
    for key in (
        "schema_version",
        "tool",
        "inputs",
        "dense",
        "forecast",
        "susceptible",
        "validation",
        "gate",
    ):
        assert key in rep
    assert rep["inputs"]["task"] == "multilabel"
    assert rep["inputs"]["targets"] == ["red", "green", "blue"]
    assert rep["inputs"]["splits"]["eval"] == "test" and rep["inputs"]["splits"]["calib"] == "val"
    assert [lv["sparsity"] for lv in rep["validation"]["levels"]] == [0.5, 0.9, 0.97]
    for lv in rep["validation"]["levels"]:
        assert abs(lv["achieved_sparsity"] - lv["sparsity"]) < 1e-3
        d = lv["delta"]["default"]["red"]["by_group"]["tinted"]["fnr_gap"]
        assert d["value"] is None or d["ci"] is None or d["ci"][0] <= d["ci"][1]
    assert len(rep["susceptible"]) == 10 and rep["susceptible"][0]["thumbnail"].startswith(
        "data:image/png"
    )
    assert {p.name for p in result.files} >= {
        "report.json",
        "report.md",
        "report.html",
        "predictions.npz",
    }


def test_predictions_npz_recomputes_the_report(audited) -> None:
    result, out, model, data = audited
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    n = result.report["inputs"]["n_samples"]
    assert arrays["dense_probs"].shape == (n, 3) and arrays["labels"].shape == (n, 3)
    assert arrays["groups"].shape == (n, 1) and arrays["pruned_probs"].shape == (3, n, 3)
    assert list(arrays["target_names"]) == ["red", "green", "blue"]
    # The dense probabilities are the in-memory model's on the same (test) images.
    with np.load(data / "bundle.npz") as z:
        test = z["split"] == "test"
        x = torch.from_numpy(z["images"][test]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = torch.sigmoid(model((x - 0.5) / 0.25)).numpy()
    np.testing.assert_allclose(arrays["dense_probs"], expected, atol=1e-5)
    # …and the report's accuracy is recomputable from the arrays.
    acc = ((arrays["dense_probs"][:, 0] > 0.5) == arrays["labels"][:, 0]).mean()
    assert result.report["dense"]["default"]["red"]["overall"]["accuracy"] == pytest.approx(acc)


def test_forecast_does_not_depend_on_pruning(audited, tmp_path: Path) -> None:
    result, _, _, data = audited
    ckpt = Path(result.report["inputs"]["model"]["path"])
    alone = run_audit(_cfg(ckpt, data, tmp_path / "fc", validate=False))
    assert alone.report["validation"] is None
    assert_same_results(alone.report["forecast"], result.report["forecast"], where="forecast")
    assert_same_results(alone.report["susceptible"], result.report["susceptible"])
    assert alone.report["gate"]["mode"] == "forecast"


def test_uncertainty_histograms_count_every_sample_of_every_group(audited) -> None:
    result, out, _, _ = audited
    rep = result.report
    hist = rep["uncertainty_histograms"]
    assert hist["quantity"] == "probability" and hist["band"] == [0.1, 0.9]
    assert len(hist["edges"]) == 21 and hist["edges"][2] == 0.1 and hist["edges"][18] == 0.9
    assert list(hist["targets"]) == rep["inputs"]["targets"]
    models = {"dense"} | {f"{lv['sparsity']:g}" for lv in rep["validation"]["levels"]}
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        dense, groups = z["dense_probs"], z["groups"][:, 0]
    for a, target in enumerate(rep["inputs"]["targets"]):
        cells = rep["dense"]["default"][target]["by_group"]["tinted"]["cells"]
        entries = hist["targets"][target]["tinted"]
        assert [e["value"] for e in entries] == [c["value"] for c in cells]
        for e, c in zip(entries, cells, strict=True):
            assert set(e["counts"]) == models
            assert e["n"] == c["n"]
            assert all(sum(counts) == c["n"] for counts in e["counts"].values())
            # the dense counts are those of the saved probabilities (group codes are 0/1)
            p = dense[groups == int(e["value"]), a].astype(np.float64)
            expected = np.bincount(np.minimum(np.floor(p * 20), 19).astype(int), minlength=20)
            assert e["counts"]["dense"] == expected.tolist()


def test_multiclass_histograms_count_the_top_class_probability() -> None:
    from audit import criteria
    from audit.runner import _uncertainty_histograms

    # 6 samples, 3 classes, two group attributes (so an intersection key too)
    probs = np.array(
        [
            [0.96, 0.02, 0.02],  # top 0.96 -> bin 19
            [0.30, 0.40, 0.30],  # top 0.40 -> bin 8
            [0.10, 0.10, 0.80],  # top 0.80 -> bin 16
            [0.50, 0.49, 0.01],  # top 0.50 -> bin 10
            [0.34, 0.33, 0.33],  # top 0.34 -> bin 6
            [0.00, 1.00, 0.00],  # top 1.00 -> bin 19 (the last bin holds p = 1)
        ]
    )
    labels = np.eye(3, dtype=np.int8)[[0, 1, 2, 0, 1, 1]]
    groups = np.array([[0, 1], [0, 0], [1, 1], [1, 0], [0, 1], [1, 1]])
    pop = criteria.build_population(
        ("cat", "dog", "eel"),
        "multiclass",
        labels,
        groups,
        ("g", "h"),
        train_labels=labels,
        train_groups=groups,
        min_group_size=1,
        band=(0.1, 0.9),
    )
    level = {"sparsity": 0.5}
    hist = _uncertainty_histograms(pop, probs, [level], [probs[::-1]], class_column="animal")
    assert hist["quantity"] == "top_class_probability"
    assert list(hist["targets"]) == ["animal"]  # one entry, not one per class
    by_key = hist["targets"]["animal"]
    assert list(by_key) == ["g", "h", "g×h"]
    g0, g1 = by_key["g"]
    assert (g0["value"], g0["n"], g1["value"], g1["n"]) == ("0", 3, "1", 3)
    assert [b for b, c in enumerate(g0["counts"]["dense"]) for _ in range(c)] == [6, 8, 19]
    assert [b for b, c in enumerate(g1["counts"]["dense"]) for _ in range(c)] == [10, 16, 19]
    for cells in by_key.values():
        assert sum(c["n"] for c in cells) == 6
        for c in cells:
            assert set(c["counts"]) == {"dense", "0.5"}
            assert all(sum(v) == c["n"] for v in c["counts"].values())


def test_report_validates_against_schema(audited) -> None:
    from audit.report import validate_report

    validate_report(audited[0].report)


def test_results_do_not_depend_on_batch_size(audited, tmp_path: Path) -> None:
    result, _, _, data = audited
    ckpt = Path(result.report["inputs"]["model"]["path"])
    other = run_audit(_cfg(ckpt, data, tmp_path / "bs", batch_size=7, validate=False))
    # Other batch sizes sum in other orders (ECE differed at 1e-10 on an AVX-512 CPU): every
    # count and outcome is the same, every float within FLOAT_ATOL -- in both threshold modes
    # and for every target, and the forecast built on them too.
    assert_same_results(other.report["dense"], result.report["dense"], where="dense")
    assert_same_results(other.report["forecast"], result.report["forecast"], where="forecast")


def test_save_pruned_checkpoints_load_back(audited, tmp_path: Path) -> None:
    result, _, _, data = audited
    ckpt = Path(result.report["inputs"]["model"]["path"])
    out = tmp_path / "sp"
    res = run_audit(_cfg(ckpt, data, out, sparsities=(0.9,), bootstrap=0, save_pruned=True))
    saved = out / "pruned-0.9.pt"
    assert saved in res.files and saved.is_file()
    # The saved model is the pruned one: auditing it reproduces the level's probabilities.
    again = run_audit(_cfg(saved, data, tmp_path / "again", validate=False))
    with (
        np.load(out / "predictions.npz") as z1,
        np.load(tmp_path / "again" / "predictions.npz") as z2,
    ):
        np.testing.assert_allclose(z2["dense_probs"], z1["pruned_probs"][0], atol=1e-5)
    assert again.report["inputs"]["model"]["format"] == "prune-audit"


def test_finetune_recovery_runs_on_the_train_split(audited, tmp_path: Path) -> None:
    result, _, _, data = audited
    ckpt = Path(result.report["inputs"]["model"]["path"])
    res = run_audit(
        _cfg(
            ckpt,
            data,
            tmp_path / "ft",
            sparsities=(0.9,),
            bootstrap=0,
            recovery="finetune",
            finetune_epochs=1,
            finetune_seeds=(0, 1),
            validate=True,
        )
    )
    (level,) = res.report["validation"]["levels"]
    assert res.report["validation"]["recovery"] == "finetune"
    assert abs(level["achieved_sparsity"] - 0.9) < 1e-3
    assert level["cie"]["count"] >= 0 and "any" in level["ranking_quality"]


def test_modal_prediction_over_seeds() -> None:
    from audit.runner import _modal_prediction

    dense = np.array([[1], [0], [1]], dtype=np.int8)
    seeds = [np.array([[0], [1], [1]]), np.array([[0], [0], [0]]), np.array([[1], [1], [0]])]
    # votes: 1/3 → 0, 2/3 → 1, 1/3 → 0
    assert _modal_prediction(seeds, dense, "binary").ravel().tolist() == [0, 1, 0]
    # two seeds that disagree: a tie keeps the dense prediction
    assert _modal_prediction(seeds[:2], dense, "binary").ravel().tolist() == [0, 0, 1]
    dense_mc = np.eye(3, dtype=np.int8)[[0, 1]]
    seeds_mc = [np.eye(3)[[2, 0]], np.eye(3)[[2, 1]]]
    # sample 0: both seeds say class 2 → 2; sample 1: tie between 0 and 1 (dense) → keep 1
    assert _modal_prediction(seeds_mc, dense_mc, "multiclass").argmax(1).tolist() == [2, 1]


class _TableRows(HTMLParser):
    """Collect the text of every body row of every ``<table id=...>`` in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_shows_every_metric_dense_and_pruned_under_both_thresholds(audited) -> None:
    # SPEC §4.6/§6.3 and issue 4: every per-cell metric for the dense model and each sparsity,
    # and every gap/BA change with its paired CI, under default AND calibrated thresholds.
    result, out, _, _ = audited
    rep = result.report
    parser = _TableRows()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    sparsities = [lv["sparsity"] for lv in rep["validation"]["levels"]]
    for mode in ("default", "calibrated"):
        cells = parser.tables[f"t-cells-{mode}"]
        models = {row[0] for row in cells}
        assert len(models) == 1 + len(sparsities), models
        changes = parser.tables[f"t-changes-{mode}"]
        seen = {(row[0], row[1], row[2], row[3]) for row in changes}
        checked = 0
        for lv in rep["validation"]["levels"]:
            for target, entry in lv["delta"][mode].items():
                for group, deltas in entry["by_group"].items():
                    for metric, d in deltas.items():
                        key = (f"{lv['sparsity']:g}", target, group, metric.replace("_", " "))
                        assert key in seen, (mode, key)
                        checked += 1
                        row = next(r for r in changes if tuple(r[:4]) == key)
                        if d["ci"] is not None:  # Δ with its CI, both as printed numbers
                            assert row[7].startswith("[") and f"{d['value']:+.3f}" in row[6]
                        else:  # undefined: the reason is shown, never a number
                            assert d["reason"] and row[6] != "" and "[" not in row[7]
        # 3 levels × 3 targets × 1 group key × (gaps + signed gaps + BA)
        assert checked >= 3 * 3 * 6, checked


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_arch_given_for_a_torchscript_model_is_reported_as_ignored(audited, tmp_path: Path) -> None:
    _, _, model, data = audited
    ts = tmp_path / "model.ts.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(ts))
    result = run_audit(_cfg(ts, data, tmp_path / "out", validate=False))
    assert result.report["inputs"]["model"]["format"] == "torchscript"
    assert any("--arch tests.conftest:tiny_net was ignored" in w for w in result.report["warnings"])
