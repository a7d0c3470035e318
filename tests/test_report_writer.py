from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

import audit.report.writer as writer
from audit.errors import OutputError
from audit.report import formats, render_markdown, write_reports

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI sets this; tests that want it set it themselves.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _break(monkeypatch: pytest.MonkeyPatch, name: str, render: object) -> None:
    """Swap a registered format's renderer for the test (restored afterwards)."""
    entry = dataclasses.replace(formats.get_report_format(name), render=render)
    monkeypatch.setitem(formats._REGISTRY, name, entry)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _predictions(n: int = 5) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "ids": np.array([f"img/{i:03d}.jpg" for i in range(n)], dtype=object),
        "labels": rng.integers(0, 2, size=(n, 2)),
        "groups": np.array([["0", "1"]] * n, dtype=object),
        "dense_probs": rng.random((n, 2)).astype(np.float32),
        "sparsities": np.array([0.8, 0.9, 0.95]),
        "pruned_probs": rng.random((3, n, 2)).astype(np.float32),
        "target_names": ["Blond_Hair", "Smiling"],
        "group_names": np.array(["Male"], dtype=object),
    }


def test_writes_all_formats(report: dict, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "run1"
    paths = write_reports(report, out, predictions=_predictions())
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html", "predictions.npz"]
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report
    assert (out / "report.md").read_text(encoding="utf-8") == render_markdown(report)
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # no staging directory or backup is left next to the output
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["run1"]


def test_predictions_load_without_pickle(report: dict, tmp_path: Path) -> None:
    write_reports(report, tmp_path, formats=["json"], predictions=_predictions())
    with np.load(tmp_path / "predictions.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(_predictions())
        assert npz["ids"].dtype.kind == "U" and npz["ids"][3] == "img/003.jpg"
        assert npz["groups"].shape == (5, 2) and npz["groups"].dtype.kind == "U"
        assert npz["target_names"].tolist() == ["Blond_Hair", "Smiling"]
        assert npz["pruned_probs"].shape == (3, 5, 2)
        assert npz["pruned_probs"].dtype == np.float32


def test_prediction_objects_that_need_pickle_are_refused(report: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = dict(_predictions(), ids=np.array(["a", None], dtype=object))
    with pytest.raises(
        TypeError,
        match=r"predictions\['ids'\] is an object array holding "
        r"NoneType.*allow_pickle=False",
    ):
        write_reports(report, out, predictions=bad)
    assert not out.exists()


def test_reserved_prediction_key_is_refused(report: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"predictions key 'file' cannot name an array"):
        write_reports(report, tmp_path / "o", predictions={"file": np.zeros(2)})


def test_only_requested_formats(report: dict, tmp_path: Path) -> None:
    paths = write_reports(report, tmp_path, formats=("md",))
    assert [p.name for p in paths] == ["report.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_unknown_format_is_refused(report: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown report format\(s\) \['pdf'\]"):
        write_reports(report, tmp_path / "o", formats=("json", "pdf"))
    assert not (tmp_path / "o").exists()


def test_invalid_report_writes_nothing(report: dict, tmp_path: Path) -> None:
    del report["gate"]
    with pytest.raises(ValueError, match="'gate' is a required property"):
        write_reports(report, tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_render_failure_leaves_nothing_new_in_a_new_dir(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_: dict) -> str:
        raise RuntimeError("template exploded")

    _break(monkeypatch, "html", boom)
    out = tmp_path / "a" / "b" / "reports"
    with pytest.raises(RuntimeError, match="template exploded"):
        write_reports(report, out, predictions=_predictions())
    assert list(tmp_path.iterdir()) == []  # not even the parents it had to create


def test_render_failure_keeps_an_existing_dir_as_it_was(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.json").write_text("old json")
    (out / "notes.txt").write_text("keep me")
    before = _tree(tmp_path)

    def boom(_: dict) -> str:
        raise RuntimeError("template exploded")

    _break(monkeypatch, "html", boom)
    with pytest.raises(RuntimeError):
        write_reports(report, out)
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_failure_while_moving_restores_the_old_files(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.json").write_text("old json")
    (out / "report.md").write_text("old md")
    before = _tree(tmp_path)
    real_replace = os.replace

    def flaky(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "report.html":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", flaky)
    with pytest.raises(OutputError, match=r"disk full \(while writing report.html\)"):
        write_reports(report, out)
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_overwrites_previous_reports(report: dict, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("old")
    write_reports(report, tmp_path, formats=["json"])
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_github_step_summary_is_appended(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_reports(report, tmp_path / "out", formats=["json"])
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n")
    assert text[len("# earlier step\n") :].rstrip("\n") == render_markdown(report).rstrip("\n")


def test_step_summary_untouched_when_rendering_fails(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("before\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    def boom(_: dict) -> str:
        raise RuntimeError("no")

    _break(monkeypatch, "json", boom)
    with pytest.raises(RuntimeError):
        write_reports(report, tmp_path / "out")
    assert summary.read_text(encoding="utf-8") == "before\n"


def test_summary_out_gets_the_markdown(report: dict, tmp_path: Path) -> None:
    dest = tmp_path / "comment.md"
    dest.write_text("stale")
    write_reports(report, tmp_path / "out", formats=["html"], summary_out=dest)
    assert dest.read_text(encoding="utf-8") == render_markdown(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comment.md", "out"]


def test_extra_files_join_the_atomic_write(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "pruned-0.9.pt"
    extra.write_bytes(b"weights")
    out = tmp_path / "out"
    files = write_reports(report, out, formats=["json"], extra_files=[extra])
    assert [f.name for f in files] == ["report.json", "pruned-0.9.pt"]
    assert (out / "pruned-0.9.pt").read_bytes() == b"weights" and not extra.exists()

    # a failure while rendering leaves neither the reports nor the extra file behind
    extra.write_bytes(b"weights")

    def boom(_: dict) -> str:
        raise RuntimeError("template exploded")

    _break(monkeypatch, "html", boom)
    out2 = tmp_path / "out2"
    with pytest.raises(RuntimeError, match="template exploded"):
        write_reports(report, out2, formats=["json", "html"], extra_files=[extra])
    assert not out2.exists()
    assert not list(tmp_path.glob(".out2.*"))
