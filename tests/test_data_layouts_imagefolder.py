"""Hugging Face imagefolder (images + metadata.csv/.jsonl): round trip, splits, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from audit.data import build_image_cache, load_dataset
from audit.errors import DataError
from tests.conftest import check_args
from tests.layout_samples import (
    Sample,
    audit_probabilities,
    png_bytes,
    write_imagefolder,
    write_manifest,
)

runner = CliRunner()
Inputs = tuple[Path, Path, torch.nn.Module]
PNG = png_bytes(np.full((8, 8, 3), 7, np.uint8))


def _images(root: Path, *names: str) -> Path:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(PNG)
    return root


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- round trip
def test_imagefolder_decodes_exactly_the_manifest_images(
    layout_samples: list[Sample], tmp_path: Path
) -> None:
    man = load_dataset(write_manifest(tmp_path / "manifest", layout_samples))
    ds = load_dataset(write_imagefolder(tmp_path / "hf", layout_samples))
    assert ds.layout == "imagefolder" and ds.n == man.n
    first = layout_samples[0]
    assert ds.ids[0] == f"{first.hub_split}/{first.name}.png"
    assert ds.splits.tolist() == man.splits.tolist()
    assert list(ds.columns) == list(man.columns)  # captions and text are not labels
    for k in man.columns:
        np.testing.assert_array_equal(ds.columns[k], man.columns[k])
    rows = np.arange(man.n)
    a = build_image_cache(man, rows, image_size=12, workers=1).images
    assert torch.equal(a, build_image_cache(ds, rows, image_size=12, workers=1).images)


def test_imagefolder_audit_gives_the_manifest_probabilities(
    tiny_audit_inputs: Inputs,
    layout_samples: list[Sample],
    manifest_probabilities: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    data = write_imagefolder(tmp_path / "hf", layout_samples)
    dense, pruned, layout = audit_probabilities(tiny_audit_inputs[0], data, tmp_path / "out")
    assert layout == "imagefolder"
    assert np.array_equal(dense, manifest_probabilities[0])
    assert np.array_equal(pruned, manifest_probabilities[1])


# ---------------------------------------------------------------------------- splits
def test_one_metadata_file_with_split_folders_in_file_name(tmp_path: Path) -> None:
    _images(tmp_path, "train/a.png", "test/b.png", "validation/c.png")
    _write(
        tmp_path / "metadata.csv", "file_name,y\ntrain/a.png,1\ntest/b.png,0\nvalidation/c.png,1\n"
    )
    ds = load_dataset(tmp_path)
    assert ds.splits.tolist() == ["train", "test", "val"]
    assert ds.columns["y"].tolist() == [1, 0, 1]


def test_no_split_folders_means_no_splits(tmp_path: Path) -> None:
    _images(tmp_path, "imgs/a.png", "imgs/b.png")
    _write(
        tmp_path / "metadata.jsonl",
        '{"file_name": "imgs/a.png", "y": true}\n{"file_name": "imgs/b.png", "y": false}\n',
    )
    ds = load_dataset(tmp_path)
    assert ds.splits is None and ds.columns["y"].tolist() == [1, 0]


def test_a_split_column_wins(tmp_path: Path) -> None:
    _images(tmp_path, "train/a.png", "train/b.png")
    _write(tmp_path / "metadata.csv", "file_name,split,y\ntrain/a.png,test,1\ntrain/b.png,val,0\n")
    assert load_dataset(tmp_path).splits.tolist() == ["test", "val"]


def test_a_file_named_like_a_split_is_not_a_split(tmp_path: Path) -> None:
    _images(tmp_path, "test_photo.png")
    _write(tmp_path / "metadata.csv", "file_name,y\ntest_photo.png,1\n")
    assert load_dataset(tmp_path).splits is None


# ---------------------------------------------------------------------------- bad inputs
def _refused(data: Path, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_dataset(data)


def test_escaping_file_name(tmp_path: Path) -> None:
    _images(tmp_path, "data/a.png", "outside.png")
    _write(tmp_path / "data/metadata.csv", "file_name,y\na.png,1\n../outside.png,0\n")
    _refused(tmp_path / "data", r"'\.\./outside\.png' at line 3 of .*metadata\.csv escapes DATA")


def test_absolute_file_name(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "train/metadata.csv", f"file_name,y\n{tmp_path / 'a.png'},1\n")
    _refused(tmp_path, r"escapes DATA")


def test_missing_image(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\nb.png,0\n")
    _refused(tmp_path, r"1 of the 2 images listed in the metadata files do not exist .*'b\.png'")


def test_unlisted_image(tmp_path: Path) -> None:
    _images(tmp_path, "a.png", "sub/b.png")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\n")
    _refused(tmp_path, r"1 image\(s\) under DATA .* have no row in any metadata file: 'sub/b\.png'")


def test_duplicate_row(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\n./a.png,0\n")
    _refused(tmp_path, r"the metadata files of DATA lists 1 image\(s\) more than once: 'a\.png'")


def test_both_metadata_files(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\n")
    _write(tmp_path / "metadata.jsonl", '{"file_name": "a.png", "y": 1}\n')
    _refused(tmp_path, r"holds both metadata\.csv and metadata\.jsonl; keep one")


def test_missing_file_name(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.jsonl", '{"y": 1}\n')
    _refused(tmp_path, r"Line 1 of .*metadata\.jsonl has no 'file_name' value")


def test_bad_jsonl_line(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.jsonl", '{"file_name": "a.png", "y": 1}\n{oops\n')
    _refused(tmp_path, r"Line 2 of .*metadata\.jsonl is not valid JSON")
    _write(tmp_path / "metadata.jsonl", '["a.png", 1]\n')
    _refused(tmp_path, r"Line 1 of .*metadata\.jsonl holds a JSON list, not an object")


def test_label_column_with_a_gap_or_a_word(tmp_path: Path) -> None:
    _images(tmp_path, "a.png", "b.png")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\nb.png,\n")
    _refused(
        tmp_path,
        r"'y' in the metadata files of DATA holds integers but has no value at "
        r"line 3 of metadata\.csv",
    )
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\nb.png,yes\n")
    _refused(tmp_path, r"holds integers but has value 'yes' at line 3 of metadata\.csv")
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\nb.png,7\n")
    assert load_dataset(tmp_path).columns["y"].tolist() == [1, 7]
    _write(tmp_path / "metadata.csv", "file_name,y\na.png,1\nb.png,-2\n")
    _refused(tmp_path, r"'y' in the metadata files of DATA has value -2 at line 3 of metadata\.csv")


def test_no_label_column(tmp_path: Path) -> None:
    _images(tmp_path, "a.png")
    _write(tmp_path / "metadata.csv", "file_name,caption\na.png,a face\n")
    _refused(tmp_path, r"have no label column; add one integer column")


def test_some_images_in_split_folders_only(tmp_path: Path) -> None:
    _images(tmp_path, "train/a.png", "other/b.png")
    _write(tmp_path / "metadata.csv", "file_name,y\ntrain/a.png,1\nother/b.png,0\n")
    _refused(tmp_path, r"Some images of DATA are in split folders .* and 1 are not: 'other/b\.png'")


def test_split_column_with_a_gap(tmp_path: Path) -> None:
    _images(tmp_path, "a.png", "b.png")
    _write(tmp_path / "metadata.csv", "file_name,split,y\na.png,train,1\nb.png,,0\n")
    _refused(tmp_path, r"Column 'split' is empty or missing at line 3 of metadata\.csv")


def test_cli_corrupt_image_exits_3_and_writes_nothing(
    tiny_audit_inputs: Inputs, layout_samples: list[Sample], tmp_path: Path
) -> None:
    data = write_imagefolder(tmp_path / "hf", layout_samples)
    victim = layout_samples[5]
    rel = f"{victim.hub_split}/{victim.name}.png"
    (data / rel).write_bytes(victim.png[:30])
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out))
    assert res.exit_code == 3, res.output
    assert re.search(rf"Cannot decode image '{re.escape(rel)}' in .*--skip-bad-images", res.stderr)
    assert not out.exists() or not any(out.iterdir())
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out, "--skip-bad-images"))
    assert res.exit_code in (0, 1), res.output
    skipped = json.loads((out / "report.json").read_text())["inputs"]["skipped_images"]
    assert [s["id"] for s in skipped] == [rel]
