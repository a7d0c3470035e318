"""The layout registry: detection order, names derived from it, a layout added in one place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import audit.data.layouts as layouts
from audit.data import Dataset, Layout, load_dataset
from audit.errors import DataError


def test_names_come_from_the_registry_in_detection_order() -> None:
    assert layouts.LAYOUT_NAMES == tuple(layout.name for layout in layouts.LAYOUTS)
    assert len(set(layouts.LAYOUT_NAMES)) == len(layouts.LAYOUT_NAMES)
    # Specific markers first, the generic class-folder layout last.
    assert layouts.LAYOUT_NAMES[0] == "npz" and layouts.LAYOUT_NAMES[-1] == "folder"
    assert layouts.get_layout("celeba") is layouts.LAYOUTS[layouts.LAYOUT_NAMES.index("celeba")]
    with pytest.raises(ValueError, match=r"unknown layout 'hdf5'; registered layouts: npz, "):
        layouts.get_layout("hdf5")


def test_report_schema_enumerates_exactly_the_registered_layouts() -> None:
    schema = json.loads(
        (Path(layouts.__file__).parents[2] / "report" / "report.schema.json").read_text()
    )
    enum = schema["$defs"]["inputs"]["properties"]["data"]["properties"]["layout"]["enum"]
    assert sorted(enum) == sorted(layouts.LAYOUT_NAMES)


def _toy_read(path: Path) -> Dataset:
    n = int((path / "toy.txt").read_text())
    return Dataset(
        root=path,
        layout="toy",
        ids=np.asarray([f"row-{i}" for i in range(n)], dtype=str),
        columns={"y": np.zeros(n, dtype=np.int64)},
        splits=None,
        default_targets=("y",),
        default_groups=(),
        class_names={},
        paths=None,
        array=np.zeros((n, 3, 2, 2), dtype=np.uint8),
    )


def test_a_layout_registered_in_one_place_is_detected_and_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "toy.txt").write_text("3")
    with pytest.raises(DataError, match="matches no known layout"):
        load_dataset(tmp_path)
    toy = Layout(
        name="toy",
        summary="a toy.txt holding the row count",
        detect=lambda path: (path / "toy.txt").is_file(),
        read=_toy_read,
    )
    monkeypatch.setattr(layouts, "LAYOUTS", (*layouts.LAYOUTS, toy))
    ds = load_dataset(tmp_path)
    assert ds.layout == "toy" and ds.n == 3
    (tmp_path / "toy.txt").unlink()
    with pytest.raises(DataError, match=r"one sub-folder of images per class; a toy\.txt holding"):
        load_dataset(tmp_path)


def test_detection_stops_at_the_first_layout_that_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "toy.txt").write_text("2")
    seen: list[str] = []

    def probe(name: str, answer: bool) -> Layout:
        def detect(path: Path) -> bool:
            seen.append(name)
            return answer

        return Layout(name=name, summary=name, detect=detect, read=_toy_read)

    monkeypatch.setattr(layouts, "LAYOUTS", (probe("a", False), probe("b", True), probe("c", True)))
    assert load_dataset(tmp_path).n == 2
    assert seen == ["a", "b"]
