"""WebDataset tar shards: round trip, splits, decoding by index, path tricks and bombs."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from audit.data import build_image_cache, default_image_size, load_dataset
from audit.data.layouts import webdataset
from audit.errors import DataError
from tests.conftest import check_args
from tests.layout_samples import (
    Sample,
    add_tar_member,
    audit_probabilities,
    png_bytes,
    write_manifest,
    write_webdataset,
)

runner = CliRunner()
Inputs = tuple[Path, Path, torch.nn.Module]
PNG = png_bytes(np.full((8, 8, 3), 7, np.uint8))


def _shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_tar_member(tar, name, data)
    return path


def _labels(**kw: object) -> bytes:
    return json.dumps(kw).encode()


# ---------------------------------------------------------------------------- round trip
def test_shards_decode_exactly_the_manifest_images(
    layout_samples: list[Sample], tmp_path: Path
) -> None:
    man = load_dataset(write_manifest(tmp_path / "manifest", layout_samples))
    ds = load_dataset(write_webdataset(tmp_path / "wds", layout_samples))
    assert ds.layout == "webdataset" and ds.n == man.n
    assert ds.ids.tolist() == [s.name for s in layout_samples]
    assert ds.splits.tolist() == man.splits.tolist()
    assert list(ds.columns) == list(man.columns)  # the caption is not a label
    for k in man.columns:
        np.testing.assert_array_equal(ds.columns[k], man.columns[k])
    assert default_image_size(ds) == 16
    rows = np.arange(man.n)
    a = build_image_cache(man, rows, image_size=12, workers=1).images
    assert torch.equal(a, build_image_cache(ds, rows, image_size=12, workers=2).images)


def test_webdataset_audit_gives_the_manifest_probabilities(
    tiny_audit_inputs: Inputs,
    layout_samples: list[Sample],
    manifest_probabilities: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    data = write_webdataset(tmp_path / "wds", layout_samples)
    dense, pruned, layout = audit_probabilities(tiny_audit_inputs[0], data, tmp_path / "out")
    assert layout == "webdataset"
    assert np.array_equal(dense, manifest_probabilities[0])
    assert np.array_equal(pruned, manifest_probabilities[1])


def test_store_reads_only_the_requested_members(tmp_path: Path) -> None:
    pngs = [png_bytes(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(6)]
    members = [m for i in range(6) for m in ((f"{i}.png", pngs[i]), (f"{i}.cls", b"%d" % (i % 2)))]
    ds = load_dataset(_shard(tmp_path / "a.tar", members))
    assert ds.columns["class"].tolist() == [0, 1, 0, 1, 0, 1]
    got = {k: data for batch in ds.store.read(np.array([4, 1, 4])) for k, data in batch}
    assert got == {0: pngs[4], 1: pngs[1], 2: pngs[4]}
    part = build_image_cache(ds, np.array([5, 0]), image_size=4, workers=1).images
    assert part[:, 0, 0, 0].tolist() == [50, 0]


# ---------------------------------------------------------------------------- splits
def test_split_from_shard_names_and_folders(tmp_path: Path) -> None:
    _shard(tmp_path / "train-000000.tar", [("a.png", PNG), ("a.cls", b"0")])
    _shard(tmp_path / "validation" / "000000.tar", [("b.png", PNG), ("b.cls", b"1")])
    _shard(tmp_path / "shards" / "test_000.tar", [("c.png", PNG), ("c.cls", b"1")])
    ds = load_dataset(tmp_path)
    assert dict(zip(ds.ids.tolist(), ds.splits.tolist(), strict=True)) == {
        "c": "test",
        "a": "train",
        "b": "val",
    }


def test_split_from_the_json(tmp_path: Path) -> None:
    _shard(
        tmp_path / "all.tar",
        [
            ("a.jpg", PNG),
            ("a.json", _labels(y=1, split="test")),
            ("b.jpg", PNG),
            ("b.json", _labels(y=0, split="train")),
        ],
    )
    assert load_dataset(tmp_path / "all.tar").splits.tolist() == ["test", "train"]


def test_keys_keep_their_folder_and_hidden_members_are_ignored(tmp_path: Path) -> None:
    # As webdataset splits names: key up to the first dot of the file name, the rest is the
    # extension ("seg.png" is another member of the sample, not its image).
    members = [
        ("faces/001.png", PNG),
        ("faces/001.seg.png", b"mask"),
        ("faces/001.cls", b"1"),
        ("faces/._001.png", b"resource fork"),
    ]
    ds = load_dataset(_shard(tmp_path / "a.tar", members))
    assert ds.ids.tolist() == ["faces/001"] and ds.columns["class"].tolist() == [1]
    assert ds.store.where(0) == "shard 'a.tar' member 'faces/001.png'"


# ---------------------------------------------------------------------------- bad inputs
def _refused(data: Path, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_dataset(data)


def _special(path: Path, info: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tar:
        add_tar_member(tar, "a.png", PNG)
        add_tar_member(tar, "a.cls", b"1")
        tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        (tarfile.SYMTYPE, "is a symbolic link"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.CHRTYPE, "is a device or FIFO"),
        (tarfile.FIFOTYPE, "is a device or FIFO"),
    ],
)
def test_link_and_device_members_are_refused(tmp_path: Path, kind: bytes, pattern: str) -> None:
    info = tarfile.TarInfo("b.png")
    info.type = kind
    info.linkname = "/etc/passwd"
    _refused(
        _special(tmp_path / "s.tar", info), rf"Shard 's\.tar' has member 'b\.png', which {pattern}"
    )


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "x/../../evil.png"])
def test_path_tricks_are_refused(tmp_path: Path, name: str) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.cls", b"0"), (name, PNG)])
    _refused(tmp_path, rf"member '{re.escape(name)}', which has an absolute path or '\.\.'")


def test_huge_declared_size_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.cls", b"0")])
    monkeypatch.setattr(webdataset, "MAX_MEMBER_BYTES", 50)
    _refused(tmp_path, rf"'a\.png', which declares {len(PNG)} bytes, more than the limit of 50")


def test_member_past_the_end_of_a_truncated_shard(tmp_path: Path) -> None:
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    shard = _shard(tmp_path / "s.tar", [("a.png", big), ("a.cls", b"0")])
    shard.write_bytes(shard.read_bytes()[: 512 + len(big) // 2])
    _refused(tmp_path, r"'a\.png', which declares \d+ bytes at offset 512, past the end")


def test_duplicate_key_in_a_shard(tmp_path: Path) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.cls", b"0"), ("a.png", PNG)])
    _refused(tmp_path, r"Shard 's\.tar' holds sample 'a' twice \(member 'a\.png' repeats its image")


def test_two_images_for_one_key(tmp_path: Path) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.jpg", PNG), ("a.cls", b"0")])
    _refused(tmp_path, r"holds sample 'a' twice \(member 'a\.jpg' repeats its image")


def test_duplicate_key_across_shards(tmp_path: Path) -> None:
    _shard(tmp_path / "a.tar", [("k.png", PNG), ("k.cls", b"0")])
    _shard(tmp_path / "b.tar", [("k.png", PNG), ("k.cls", b"1")])
    _refused(tmp_path, r"Sample key 'k' appears in shard 'a\.tar' and again in shard 'b\.tar'")


def test_sample_without_image(tmp_path: Path) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.cls", b"0"), ("b.cls", b"1")])
    _refused(
        tmp_path,
        r"1 sample\(s\) of the shards in DATA have no image member .*'b' \(in shard 's\.tar'\)",
    )


def test_bad_json_and_cls(tmp_path: Path) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.json", b"{not json")])
    _refused(tmp_path, r"Member 'a\.json' of shard 's\.tar' is not valid JSON")
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.json", b"[1, 2]")])
    _refused(tmp_path, r"'a\.json' of shard 's\.tar' holds a JSON list, not an object")
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.cls", b"cat")])
    _refused(tmp_path, r"Member 'a\.cls' of shard 's\.tar' holds 'cat'; a \.cls file holds")


def test_label_missing_in_one_sample(tmp_path: Path) -> None:
    _shard(
        tmp_path / "s.tar",
        [
            ("a.png", PNG),
            ("a.json", _labels(smiling=1)),
            ("b.png", PNG),
            ("b.json", _labels(other="x")),
        ],
    )
    _refused(
        tmp_path,
        r"'smiling' in the shards' \.json/\.cls members holds integers but has no "
        r"value at sample 'b' of shard 's\.tar'",
    )


def test_no_labels_at_all(tmp_path: Path) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.txt", b"a caption")])
    _refused(tmp_path, "have no integer labels")


def test_compressed_shard(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "s.tar", "w:gz") as tar:
        add_tar_member(tar, "a.png", PNG)
    _refused(tmp_path, r"Cannot read shard 's\.tar' in DATA as an uncompressed tar archive")


def test_split_named_by_some_shards_only(tmp_path: Path) -> None:
    _shard(tmp_path / "train-0.tar", [("a.png", PNG), ("a.cls", b"0")])
    _shard(tmp_path / "more.tar", [("b.png", PNG), ("b.cls", b"0")])
    _refused(tmp_path, r"Some shards of DATA name a split in their path and 1 do not: 'more\.tar'")


def test_cli_corrupt_image_exits_3_and_writes_nothing(
    tiny_audit_inputs: Inputs, layout_samples: list[Sample], tmp_path: Path
) -> None:
    broken = [
        s if i != 3 else Sample(s.name, s.hub_split, s.png[:30], s.labels)
        for i, s in enumerate(layout_samples)
    ]
    data = write_webdataset(tmp_path / "wds", broken)
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out))
    assert res.exit_code == 3, res.output
    name = broken[3].name
    assert re.search(
        rf"Cannot decode image '{name}' \(shard 'test-000000\.tar' member '{name}\.png' in .*"
        r"--skip-bad-images",
        res.stderr,
    ), res.stderr
    assert not out.exists() or not any(out.iterdir())
    res = runner.invoke(app, check_args(tiny_audit_inputs[0], data, out, "--skip-bad-images"))
    assert res.exit_code in (0, 1), res.output
    skipped = json.loads((out / "report.json").read_text())["inputs"]["skipped_images"]
    assert [s["id"] for s in skipped] == [name]


def test_never_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _shard(tmp_path / "s.tar", [("a.png", PNG), ("a.json", _labels(y=1))])

    def no(*a: object, **kw: object) -> None:
        raise AssertionError("extracted to disk")

    monkeypatch.setattr(tarfile.TarFile, "extract", no)
    monkeypatch.setattr(tarfile.TarFile, "extractall", no)
    ds = load_dataset(tmp_path)
    build_image_cache(ds, np.arange(1), image_size=8, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]
