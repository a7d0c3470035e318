from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.data import Dataset, build_image_cache, default_image_size, load_dataset
from audit.errors import DataError
from tests.conftest import CELEBA_ATTRS


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """A flat image whose every pixel is (value, value+1, value+2) (or value in L mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "L":
        arr = np.full((h, w), value, np.uint8)
    else:
        arr = np.empty((h, w, 3), np.uint8)
        arr[...] = (value, value + 1, value + 2)
    Image.fromarray(arr, mode).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pixel(ds: Dataset, size: int) -> np.ndarray:
    """The (n, 3) colour of each cached image's top-left pixel, all rows cached."""
    cache = build_image_cache(ds, np.arange(ds.n), image_size=size, workers=1)
    return cache.images[:, :, 0, 0].numpy()


# ---------------------------------------------------------------------------- manifest
@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    for i in range(4):
        _png(tmp_path / "imgs" / f"{i}.png", 10 * i)
    _write(
        tmp_path / "labels.csv",
        "image, split ,Smiling,Male,age\n"
        "imgs/0.png,train, 1,0,2\n"
        "imgs/1.png,train,-1,1,0\n"
        "\n"
        "./imgs/2.png,val,-1,1,1\n"
        "imgs/3.png , test ,1,0,2\n",
    )
    return tmp_path


def test_manifest_layout(manifest: Path) -> None:
    ds = load_dataset(manifest)
    assert ds.layout == "manifest" and ds.root == manifest.resolve()
    assert ds.ids.tolist() == ["imgs/0.png", "imgs/1.png", "imgs/2.png", "imgs/3.png"]
    assert ds.splits is not None and ds.splits.tolist() == ["train", "train", "val", "test"]
    assert ds.columns["Smiling"].tolist() == [1, 0, 0, 1]  # -1/1 -> 0/1
    assert ds.columns["Male"].tolist() == [0, 1, 1, 0]
    assert ds.columns["age"].tolist() == [2, 0, 1, 2]  # classes kept
    assert all(c.dtype == np.int64 for c in ds.columns.values())
    assert ds.default_targets == ("Smiling", "Male", "age") and ds.default_groups == ()
    assert ds.paths == [(manifest / "imgs" / f"{i}.png").resolve() for i in range(4)]
    assert ds.array is None and ds.n == 4
    assert default_image_size(ds) == 8
    assert _pixel(ds, 8).tolist() == [[10 * i, 10 * i + 1, 10 * i + 2] for i in range(4)]


def test_manifest_labels_elsewhere(manifest: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("meta") / "my labels.csv"
    other.write_text("image,Smiling\nimgs/1.png,1\nimgs/0.png,0\n")
    ds = load_dataset(manifest, labels_file=other)
    assert ds.ids.tolist() == ["imgs/1.png", "imgs/0.png"] and ds.splits is None


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("imgs/1.png,-2", r"Label column 'Smiling' in .*labels\.csv has value -2 at line 3"),
        ("imgs/1.png,yes", r"Label column 'Smiling' in .*labels\.csv has value 'yes' at line 3"),
        ("imgs/1.png,", r"Label column 'Smiling' in .*labels\.csv is empty at line 3"),
        ("imgs/1.png,0.5", r"has value '0\.5' at line 3"),
        ("imgs/1.png,-1", r"'Smiling' .* value -1 at line 3 and value 0 at line 2"),
        ("imgs/1.png,1,1", r"Line 3 of .*labels\.csv has 3 cells but the header has 2"),
        ("imgs/0.png,1", r"lists 1 image\(s\) more than once: 'imgs/0\.png'"),
    ],
    ids=["negative", "word", "empty", "fraction", "mixed-minus-one", "extra-cell", "duplicate"],
)
def test_manifest_bad_label_values(manifest: Path, row: str, match: str) -> None:
    _write(manifest / "labels.csv", f"image,Smiling\nimgs/0.png,0\n{row}\n")
    with pytest.raises(DataError, match=match):
        load_dataset(manifest)


def test_manifest_accepts_integral_decimals(manifest: Path) -> None:
    _write(manifest / "labels.csv", "image,Smiling\nimgs/0.png,1.0\nimgs/1.png,0.0\n")
    assert load_dataset(manifest).columns["Smiling"].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "path,Smiling\nimgs/0.png,1\n",
            r"labels\.csv has no 'image' column \(columns: path, Smiling\)",
        ),
        ("image,split\nimgs/0.png,train\n", r"labels\.csv has no label columns"),
        ("image,Smiling,Smiling\nimgs/0.png,1,1\n", r"names column 'Smiling' twice"),
        ("image,split,Smiling\nimgs/0.png,,1\n", r"Column 'split' of .* is empty at line 2"),
        ("", r"labels\.csv is empty; it needs a header row"),
    ],
)
def test_manifest_bad_header(manifest: Path, text: str, match: str) -> None:
    _write(manifest / "labels.csv", text)
    with pytest.raises(DataError, match=match):
        load_dataset(manifest)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        ("../outside.png", r"'\.\./outside\.png' at line 2 of .*labels\.csv escapes DATA"),
        ("imgs/../../outside.png", r"escapes DATA"),
        ("/etc/hostname", r"'/etc/hostname' at line 2 .*escapes DATA.*relative to DATA"),
        ("C:\\data\\x.png", r"escapes DATA"),
        ("link/x.png", r"'link/x\.png' .*escapes DATA.*resolves \(through a symlink\) to"),
    ],
    ids=["dotdot", "inner-dotdot", "absolute", "windows-absolute", "symlink-out"],
)
def test_paths_escaping_data(manifest: Path, tmp_path_factory, image: str, match: str) -> None:
    outside = tmp_path_factory.mktemp("outside")
    _png(outside / "x.png", 0)
    (manifest / "link").symlink_to(outside, target_is_directory=True)
    _write(manifest / "labels.csv", f"image,Smiling\n{image},1\n")
    with pytest.raises(DataError, match=match):
        load_dataset(manifest)


def test_symlink_inside_data_is_fine(manifest: Path) -> None:
    os.symlink(manifest / "imgs" / "2.png", manifest / "imgs" / "alias.png")
    _write(manifest / "labels.csv", "image,Smiling\nimgs/alias.png,1\n")
    assert load_dataset(manifest).ids.tolist() == ["imgs/alias.png"]


def test_missing_images_are_named_and_counted(manifest: Path) -> None:
    _write(
        manifest / "labels.csv",
        "image,Smiling\nimgs/0.png,1\nimgs/gone.png,0\nimgs/lost.png,1\n",
    )
    with pytest.raises(
        DataError, match=r"2 of the 3 images listed in .*labels\.csv do not exist.*'imgs/gone\.png'"
    ):
        load_dataset(manifest)


def test_missing_data_and_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"DATA path '.*nope' does not exist"):
        load_dataset(tmp_path / "nope")
    _write(tmp_path / "readme.txt", "hello")
    with pytest.raises(DataError, match="matches no known layout"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="is a file but not an .npz bundle"):
        load_dataset(tmp_path / "readme.txt")
    with pytest.raises(DataError, match="Labels file .*missing.csv' does not exist"):
        load_dataset(tmp_path, labels_file=tmp_path / "missing.csv")


# ---------------------------------------------------------------------------- CelebA
def _celeba(root: Path, n: int = 3, *, count: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRS)))
    values[:, CELEBA_ATTRS.index("Male")] = [1, -1, 1][:n]
    lines = [str(n if count is None else count), " ".join(CELEBA_ATTRS) + " "]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        _png(root / "img_align_celeba" / name, 40 * i, size=(6, 8))  # PNG bytes, .jpg name
        cells = "".join(f"{v:>3d}" if j % 2 else f" {v}" for j, v in enumerate(values[i]))
        lines.append(f"{name}{cells}")
    _write(root / "list_attr_celeba.txt", "\n".join(lines) + "\n")
    _write(
        root / "list_eval_partition.txt",
        "".join(f"{i + 1:06d}.jpg {i % 3}\n" for i in range(n)),
    )
    np.save(root / "values.npy", values)
    return root


def test_celeba_layout(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    values = np.load(root / "values.npy")
    ds = load_dataset(root)
    assert ds.layout == "celeba"
    assert ds.ids.tolist() == [f"img_align_celeba/00000{i}.jpg" for i in (1, 2, 3)]
    assert list(ds.columns) == CELEBA_ATTRS
    for j, name in enumerate(CELEBA_ATTRS):
        assert ds.columns[name].tolist() == ((values[:, j] + 1) // 2).tolist()
    assert ds.columns["Male"].tolist() == [1, 0, 1]
    assert ds.splits is not None and ds.splits.tolist() == ["train", "val", "test"]
    assert ds.default_groups == ("Male", "Young")
    assert ds.default_targets == tuple(a for a in CELEBA_ATTRS if a not in ("Male", "Young"))
    assert len(ds.default_targets) == 38
    assert default_image_size(ds) == 8  # max(6 wide, 8 high)
    assert _pixel(ds, 8)[:, 0].tolist() == [0, 40, 80]


def test_celeba_without_partition(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    (root / "list_eval_partition.txt").unlink()
    assert load_dataset(root).splits is None


def test_celeba_count_mismatch(tmp_path: Path) -> None:
    root = _celeba(tmp_path, count=5)
    with pytest.raises(
        DataError, match=r"list_attr_celeba\.txt says it lists 5 images \(line 1\) but has 3"
    ):
        load_dataset(root)


def test_celeba_bad_rows(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    text = (root / "list_attr_celeba.txt").read_text().splitlines()
    bad = text.copy()
    bad[3] = bad[3][:-3] + "  0"  # last attribute (Young) of the 2nd image
    _write(root / "list_attr_celeba.txt", "\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"'Young' .* value -1 at line \d and value 0 at line 4"):
        load_dataset(root)
    bad[3] = text[3] + " 1"
    _write(root / "list_attr_celeba.txt", "\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"Line 4 of .* has 41 values but the header names 40"):
        load_dataset(root)
    bad[3] = text[3][:-2] + " x"
    _write(root / "list_attr_celeba.txt", "\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"'Young' in .* has value 'x' at line 4"):
        load_dataset(root)
    _write(root / "list_attr_celeba.txt", "\n".join(text) + "\n")
    _write(root / "list_eval_partition.txt", "000001.jpg 0\n000002.jpg 1\n")
    with pytest.raises(DataError, match=r"no partition for 1 of the 3 images.*'000003\.jpg'"):
        load_dataset(root)


# ---------------------------------------------------------------------------- image folder
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _png(tmp_path / "dog" / "a.png", 100)
    _png(tmp_path / "cat" / "b.png", 50, mode="L")
    _png(tmp_path / "cat" / "sub" / "c.png", 60)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    _png(tmp_path / ".cache" / "x.png", 1)
    _write(
        tmp_path / "groups.csv",
        "image,skin,age\ndog/a.png,1,-1\ncat/sub/c.png,0,1\ncat/b.png,1,1\n",
    )
    return tmp_path


def test_folder_layout_with_groups(folder: Path) -> None:
    ds = load_dataset(folder)
    assert ds.layout == "folder"
    assert ds.ids.tolist() == ["cat/b.png", "cat/sub/c.png", "dog/a.png"]
    assert ds.columns["class"].tolist() == [0, 0, 1]
    assert ds.class_names == {"class": ["cat", "dog"]}
    assert ds.columns["skin"].tolist() == [1, 0, 1]
    assert ds.columns["age"].tolist() == [1, 1, 0]
    assert ds.default_targets == ("class",) and ds.default_groups == ("skin", "age")
    assert ds.splits is None
    # Grayscale is replicated to three equal channels.
    assert _pixel(ds, 4).tolist() == [[50, 50, 50], [60, 61, 62], [100, 101, 102]]


def test_folder_with_split_folders(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "cat" / "1.png", 1)
    _png(tmp_path / "train" / "dog" / "2.png", 2)
    _png(tmp_path / "test" / "dog" / "3.png", 3)
    ds = load_dataset(tmp_path)
    assert ds.ids.tolist() == ["test/dog/3.png", "train/cat/1.png", "train/dog/2.png"]
    assert ds.splits is not None and ds.splits.tolist() == ["test", "train", "train"]
    assert ds.columns["class"].tolist() == [1, 0, 1]


def test_groups_csv_missing_and_extra_entries(folder: Path) -> None:
    _write(folder / "groups.csv", "image,skin\ndog/a.png,1\n")
    with pytest.raises(
        DataError,
        match=r"groups\.csv has no row for 2 of the 3 images .*'cat/b\.png', 'cat/sub/c\.png'",
    ):
        load_dataset(folder)
    _write(
        folder / "groups.csv", "image,skin\ndog/a.png,1\ncat/b.png,1\ncat/sub/c.png,0\nd.png,1\n"
    )
    with pytest.raises(DataError, match=r"lists 1 image\(s\) that are not in any class folder"):
        load_dataset(folder)
    _write(folder / "groups.csv", "file,skin\ndog/a.png,1\n")
    with pytest.raises(DataError, match=r"groups\.csv has no 'image' column \(columns: file, skin"):
        load_dataset(folder)
    _write(folder / "groups.csv", "image,skin\ndog/a.png,1\ncat/b.png,3\ncat/sub/c.png,-1\n")
    with pytest.raises(DataError, match=r"'skin' in .*groups\.csv has value -1 at line 4"):
        load_dataset(folder)


def test_folder_symlink_out_of_data(folder: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    _png(outside / "z.png", 9)
    os.symlink(outside / "z.png", folder / "dog" / "z.png")
    with pytest.raises(DataError, match=r"'dog/z\.png'.*escapes DATA.*symlink"):
        load_dataset(folder)


# ---------------------------------------------------------------------------- npz
def _bundle(n: int = 6, h: int = 4, w: int = 4, c: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "images": rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8),
        "labels": np.array([[1, -1], [-1, 1], [1, 1], [-1, -1], [1, -1], [-1, 1]])[:n],
        "groups": np.array([0, 1, 2, 0, 1, 2])[:n],
        "label_names": np.array(["smile", "hat"]),
        "group_names": np.array(["age"]),
        "split": np.array(["train", "train", "val", "val", "test", "test"])[:n],
    }


@pytest.mark.parametrize("nchw", [False, True], ids=["NHWC", "NCHW"])
@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_layout(tmp_path: Path, nchw: bool, compressed: bool) -> None:
    arrays = _bundle()
    nhwc = arrays["images"]
    if nchw:
        arrays["images"] = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "data.npz", **arrays)
    ds = load_dataset(tmp_path)
    assert ds.layout == "npz" and ds.root == tmp_path.resolve() and ds.paths is None
    assert ds.ids.tolist() == [f"row-{i}" for i in range(6)]
    assert ds.columns["smile"].tolist() == [1, 0, 1, 0, 1, 0]
    assert ds.columns["age"].tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.default_targets == ("smile", "hat") and ds.default_groups == ("age",)
    assert ds.splits is not None and ds.splits.tolist()[::2] == ["train", "val", "test"]
    assert ds.array is not None and ds.array.shape == (6, 3, 4, 4)
    # An uncompressed bundle is memory-mapped instead of read into memory.
    assert isinstance(ds.array.base, np.memmap) or isinstance(ds.array, np.memmap) or compressed
    np.testing.assert_array_equal(ds.array, nhwc.transpose(0, 3, 1, 2))
    cache = build_image_cache(ds, np.array([5, 0, 3]), image_size=4)
    np.testing.assert_array_equal(cache.images.numpy(), nhwc[[5, 0, 3]].transpose(0, 3, 1, 2))
    assert default_image_size(ds) == 4


def test_npz_file_as_data_with_ids_and_one_channel(tmp_path: Path) -> None:
    arrays = _bundle(c=1)
    arrays["ids"] = np.array([f"img{i}" for i in range(6)])
    del arrays["groups"], arrays["group_names"], arrays["split"]
    np.savez(tmp_path / "b.npz", **arrays)
    ds = load_dataset(tmp_path / "b.npz")
    assert ds.ids.tolist() == [f"img{i}" for i in range(6)]
    assert ds.default_groups == () and ds.splits is None and ds.array.shape == (6, 1, 4, 4)
    cache = build_image_cache(ds, np.arange(6), image_size=4)
    assert cache.images.shape == (6, 3, 4, 4)
    for ch in range(3):
        np.testing.assert_array_equal(cache.images[:, ch].numpy(), arrays["images"][..., 0])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"label_names": None}, r"lacks label_names"),
        ({"images": np.zeros((6, 4, 4, 3), np.float32)}, r"dtype float32; .*uint8"),
        ({"images": np.zeros((6, 5, 4, 2), np.uint8)}, r"shape \(6, 5, 4, 2\); expected"),
        ({"labels": np.zeros((5, 2), np.int64)}, r"'labels' in .* has shape \(5, 2\)"),
        ({"labels": np.full((6, 2), 0.5)}, r"'labels' .* value 0\.5 at row 0 \(0-based\)"),
        ({"labels": np.full((6, 2), -3)}, r"'smile' in .* has value -3 at row 0 \(0-based\)"),
        ({"label_names": np.array(["a", "b", "c"])}, r"'label_names' .* has 3 entries but 2"),
        ({"label_names": np.array(["age", "hat"])}, r"'age' in both 'label_names' and"),
        ({"label_names": np.array(["a", "b"], dtype=object)}, r"only be read by unpickling"),
        ({"group_names": None}, r"only one of 'groups' and 'group_names'"),
    ],
)
def test_npz_bad_bundles(tmp_path: Path, change: dict, match: str) -> None:
    arrays = _bundle()
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(tmp_path / "b.npz", **arrays, allow_pickle=True)
    with pytest.raises(DataError, match=match):
        load_dataset(tmp_path)


def test_several_npz_files_are_ambiguous(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", **_bundle())
    np.savez(tmp_path / "b.npz", **_bundle())
    with pytest.raises(DataError, match=r"holds 2 \.npz files \(a\.npz, b\.npz\).*file itself"):
        load_dataset(tmp_path)


def test_non_square_npz_needs_image_size(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", **_bundle(h=4, w=6))
    ds = load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"are 4x6 \(not square\).*--image-size"):
        default_image_size(ds)
    assert build_image_cache(ds, np.arange(2), image_size=5).images.shape == (2, 3, 5, 5)
