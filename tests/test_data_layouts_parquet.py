"""Parquet layout (as the Hugging Face Hub serves data sets): round trip, splits, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from audit.data import build_image_cache, default_image_size, load_dataset
from audit.data.layouts import parquet
from audit.errors import DataError
from tests.conftest import check_args
from tests.layout_samples import (
    Sample,
    audit_probabilities,
    png_bytes,
    write_manifest,
    write_parquet,
)

runner = CliRunner()
Inputs = tuple[Path, Path, torch.nn.Module]


def _table(n: int = 4, **extra: pa.Array) -> pa.Table:
    rng = np.random.default_rng(0)
    pngs = [png_bytes(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]
    image = pa.StructArray.from_arrays(
        [pa.array(pngs, pa.binary()), pa.array([f"{i}.png" for i in range(n)])],
        names=["bytes", "path"],
    )
    cols = {"image": image, "smiling": pa.array([i % 2 for i in range(n)], pa.int64())}
    return pa.table({**cols, **extra})


def _write(path: Path, table: pa.Table, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


# ---------------------------------------------------------------------------- round trip
def test_parquet_decodes_exactly_the_manifest_images(
    layout_samples: list[Sample], tmp_path: Path
) -> None:
    man = load_dataset(write_manifest(tmp_path / "manifest", layout_samples))
    ds = load_dataset(write_parquet(tmp_path / "hub", layout_samples))
    assert ds.layout == "parquet" and ds.n == man.n == len(layout_samples)
    assert ds.ids[0] == "data/test-00000-of-00001.parquet#0"
    assert ds.splits is not None and ds.splits.tolist() == man.splits.tolist()
    assert ds.columns.keys() == man.columns.keys()
    for k in man.columns:
        np.testing.assert_array_equal(ds.columns[k], man.columns[k])
    assert ds.class_names == {"tinted": ["no", "yes"]}
    assert default_image_size(ds) == default_image_size(man) == 16
    rows = np.arange(man.n)
    a = build_image_cache(man, rows, image_size=12, workers=1).images
    b = build_image_cache(ds, rows, image_size=12, workers=2).images
    assert torch.equal(a, b)


def test_parquet_audit_gives_the_manifest_probabilities(
    tiny_audit_inputs: Inputs,
    layout_samples: list[Sample],
    manifest_probabilities: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    data = write_parquet(tmp_path / "hub", layout_samples)
    dense, pruned, layout = audit_probabilities(tiny_audit_inputs[0], data, tmp_path / "out")
    assert layout == "parquet"
    assert np.array_equal(dense, manifest_probabilities[0])
    assert np.array_equal(pruned, manifest_probabilities[1])


def test_store_reads_only_the_row_groups_that_hold_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 rows in row groups of 3: rows 4 and 5 are in group 1 alone, row 9 in group 3.
    _write(tmp_path / "train.parquet", _table(10), row_group_size=3)
    ds = load_dataset(tmp_path)
    read: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, i: int, *a: object, **kw: object) -> pa.Table:
        read.append(i)
        return real(self, i, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    rows = np.array([9, 5, 4, 5])
    got = [item for batch in ds.store.read(rows) for item in batch]
    assert read == [1, 3]
    assert sorted(k for k, _ in got) == [0, 1, 2, 3]
    whole = build_image_cache(ds, np.arange(10), image_size=8, workers=1).images
    part = build_image_cache(ds, rows, image_size=8, workers=1).images
    assert torch.equal(part, whole[rows])


# ---------------------------------------------------------------------------- splits
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"], ["train"]),
        (["train/0000.parquet", "validation/0000.parquet"], ["train", "val"]),
        (["default/test/0000.parquet", "default/dev/0000.parquet"], ["test", "val"]),
        (["plain.parquet"], None),
    ],
)
def test_split_comes_from_the_file_path(
    tmp_path: Path, files: list[str], expected: list[str] | None
) -> None:
    for f in files:
        _write(tmp_path / f, _table(2))
    ds = load_dataset(tmp_path)
    if expected is None:
        assert ds.splits is None
    else:
        assert ds.splits is not None and sorted(set(ds.splits.tolist())) == sorted(expected)


def test_a_split_column_wins_over_the_path(tmp_path: Path) -> None:
    _write(tmp_path / "train.parquet", _table(3, split=pa.array(["train", "test", "val"])))
    assert load_dataset(tmp_path).splits.tolist() == ["train", "test", "val"]


def test_a_single_file_is_data_too(tmp_path: Path) -> None:
    f = _write(tmp_path / "test-0.parquet", _table(3))
    ds = load_dataset(f)
    assert ds.root == tmp_path.resolve() and ds.splits.tolist() == ["test"] * 3
    assert ds.ids.tolist() == ["test-0.parquet#0", "test-0.parquet#1", "test-0.parquet#2"]


# ---------------------------------------------------------------------------- bad inputs
def _refused(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_dataset(tmp_path)


def test_split_named_by_some_paths_only(tmp_path: Path) -> None:
    _write(tmp_path / "data/train-0.parquet", _table(2))
    _write(tmp_path / "data/extra.parquet", _table(2))
    _refused(tmp_path, r"name a split in their path and 1 do not: 'data/extra\.parquet'")


def test_path_naming_two_splits(tmp_path: Path) -> None:
    _write(tmp_path / "train/test-0.parquet", _table(2))
    _refused(tmp_path, r"'train/test-0\.parquet' of DATA's Parquet files names more than one")


def test_files_with_different_columns(tmp_path: Path) -> None:
    _write(tmp_path / "a.parquet", _table(2))
    _write(tmp_path / "b.parquet", _table(2, young=pa.array([0, 1])))
    _refused(tmp_path, r"'b\.parquet' and 'a\.parquet' in DATA have different columns")


def test_no_image_column(tmp_path: Path) -> None:
    _write(tmp_path / "a.parquet", pa.table({"smiling": [0, 1]}))
    _refused(tmp_path, r"'a\.parquet' has no image column \(columns: smiling\)")


def test_several_image_columns(tmp_path: Path) -> None:
    t = _table(2)
    t = t.rename_columns(["face", "smiling"]).append_column("crop", t.column(0))
    _write(tmp_path / "a.parquet", t)
    _refused(tmp_path, r"several image columns \(face, crop\) and none is named 'image'")


def test_no_label_column(tmp_path: Path) -> None:
    _write(
        tmp_path / "a.parquet", _table(2).drop(["smiling"]).append_column("t", pa.array(["x", "y"]))
    )
    _refused(tmp_path, r"'a\.parquet' has no label column \(columns: image, t\)")


def test_null_label(tmp_path: Path) -> None:
    _write(tmp_path / "a.parquet", _table(3, young=pa.array([1, None, 0], pa.int64())))
    _refused(tmp_path, r"Column 'young' of 'a\.parquet' is null at row 1")


def test_bad_label_value(tmp_path: Path) -> None:
    _write(tmp_path / "a.parquet", _table(3, young=pa.array([1, -3, 0], pa.int64())))
    _refused(tmp_path, r"'young' in 'a\.parquet' has value -3 at file 'a\.parquet' row 1")


def test_numeric_split_column(tmp_path: Path) -> None:
    _write(tmp_path / "a.parquet", _table(2, split=pa.array([0, 1])))
    _refused(tmp_path, r"Column 'split' of 'a\.parquet' has type int64; it must hold split names")


def test_not_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"PAR1 this is not parquet")
    _refused(tmp_path, r"Cannot read 'a\.parquet' in DATA as a Parquet file")


def test_symlinked_file_outside_data(tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere" / "x.parquet", _table(2))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").symlink_to(outside)
    with pytest.raises(DataError, match=r"'train\.parquet' .*escapes DATA.*symlink"):
        load_dataset(tmp_path / "data")


def test_declared_sizes_out_of_proportion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "a.parquet", _table(2))
    monkeypatch.setattr(parquet, "_BOMB_RATIO", 0)
    monkeypatch.setattr(parquet, "_BOMB_SLACK", 0)
    _refused(tmp_path, r"Refusing to read column 'image\.bytes' of 'a\.parquet' \(row group 0\)")


def test_null_image_is_a_bad_image(tmp_path: Path) -> None:
    t = _table(3)
    image = t.column("image").combine_chunks()
    nulled = pa.StructArray.from_arrays(
        [image.field("bytes"), image.field("path")],
        names=["bytes", "path"],
        mask=pa.array([False, True, False]),
    )
    _write(tmp_path / "a.parquet", t.set_column(0, "image", nulled))
    ds = load_dataset(tmp_path)
    with pytest.raises(
        DataError, match=r"image 'a\.parquet#1' \('a\.parquet' row 1 \(column 'image'\)"
    ):
        build_image_cache(ds, np.arange(3), image_size=8, workers=1)
    cache = build_image_cache(ds, np.arange(3), image_size=8, workers=1, skip_bad=True)
    assert cache.indices.tolist() == [0, 2]
    assert cache.skipped == [("a.parquet#1", "the container stores no image bytes for it")]


def _corrupt_hub(tmp_path: Path, layout_samples: list[Sample]) -> Path:
    data = write_parquet(tmp_path / "hub", layout_samples)
    f = data / "data" / "test-00000-of-00001.parquet"
    t = pq.read_table(f)
    image = t.column("image").combine_chunks()
    blobs = image.field("bytes").to_pylist()
    blobs[2] = blobs[2][:40]  # truncated PNG
    fixed = pa.StructArray.from_arrays(
        [pa.array(blobs, pa.binary()), image.field("path")], names=["bytes", "path"]
    )
    pq.write_table(t.set_column(0, "image", fixed), f, row_group_size=16)
    return data


def test_cli_corrupt_image_exits_3_and_writes_nothing(
    tiny_audit_inputs: Inputs, layout_samples: list[Sample], tmp_path: Path
) -> None:
    data = _corrupt_hub(tmp_path, layout_samples)
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out))
    assert res.exit_code == 3, res.output
    assert re.search(
        r"Cannot decode image 'data/test-00000-of-00001\.parquet#2' \('data/test-00000-of-00001"
        r"\.parquet' row 2 \(column 'image'\).*--skip-bad-images",
        res.stderr,
    ), res.stderr
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir())
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out, "--skip-bad-images"))
    assert res.exit_code in (0, 1), res.output
    skipped = json.loads((out / "report.json").read_text())["inputs"]["skipped_images"]
    assert [s["id"] for s in skipped] == ["data/test-00000-of-00001.parquet#2"]
