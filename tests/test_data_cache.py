from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audit.data import build_image_cache, load_dataset
from audit.data.cache import default_workers
from audit.errors import DataError, UsageError


def _image(i: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Twelve random 8x8 PNGs listed in a manifest."""
    (tmp_path / "imgs").mkdir()
    rows = ["image,y"]
    for i in range(12):
        Image.fromarray(_image(i)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append(f"imgs/{i}.png,{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _expected(i: int) -> np.ndarray:
    return _image(i).transpose(2, 0, 1)


@pytest.mark.parametrize("workers", [1, 3])
def test_cache_holds_the_pixels_in_request_order(data: Path, workers: int) -> None:
    ds = load_dataset(data)
    order = np.array([11, 0, 5, 5, 3])
    seen: list[int] = []
    cache = build_image_cache(ds, order, image_size=8, workers=workers, progress=seen.append)
    assert cache.images.dtype == torch.uint8 and cache.images.is_contiguous()
    assert cache.images.shape == (5, 3, 8, 8)
    for row, i in enumerate(order):
        np.testing.assert_array_equal(cache.images[row].numpy(), _expected(int(i)))
    assert cache.indices.tolist() == order.tolist() and cache.skipped == []
    assert sum(seen) == 5 and cache.file is None


def test_resize_matches_pillow_bilinear(data: Path) -> None:
    ds = load_dataset(data)
    cache = build_image_cache(ds, np.arange(2), image_size=5, workers=1)
    ref = Image.fromarray(_image(1)).resize((5, 5), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(cache.images[1].numpy(), np.asarray(ref).transpose(2, 0, 1))


def test_memmap_when_over_threshold_and_close_removes_it(data: Path, tmp_path_factory) -> None:
    ds = load_dataset(data)
    where = tmp_path_factory.mktemp("cache")
    cache = build_image_cache(
        ds, np.arange(12), image_size=8, memmap_threshold_bytes=100, cache_dir=where, workers=2
    )
    assert cache.file is not None and cache.file.parent == where and cache.file.exists()
    assert cache.file.stat().st_size == 12 * 3 * 8 * 8
    for i in range(12):
        np.testing.assert_array_equal(cache.images[i].numpy(), _expected(i))
    cache.close()
    assert not cache.file.exists() and cache.images.shape[0] == 0
    cache.close()  # idempotent

    with build_image_cache(ds, np.arange(3), image_size=8, memmap_threshold_bytes=0) as tmp:
        made = tmp.file
        assert made is not None and made.exists()
    assert not made.exists() and not made.parent.exists()  # its temporary folder too


def _corrupt(data: Path) -> None:
    (data / "imgs" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    raw = (data / "imgs" / "7.png").read_bytes()
    (data / "imgs" / "7.png").write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_and_truncated_images_fail_naming_the_file(data: Path, workers: int) -> None:
    _corrupt(data)
    ds = load_dataset(data)
    with pytest.raises(
        DataError,
        match=r"Cannot decode image 'imgs/3\.png' in .*\(OSError: .*\).*--skip-bad-images",
    ):
        build_image_cache(ds, np.arange(12), image_size=8, workers=workers)
    with pytest.raises(
        DataError,
        match=r"Cannot decode image 'imgs/7\.png' in .*\(OSError: image file is truncated\)",
    ):
        build_image_cache(ds, np.arange(4, 12), image_size=8, workers=workers)


@pytest.mark.parametrize("threshold", [2 << 30, 0], ids=["ram", "memmap"])
def test_skip_bad_images_counts_and_compacts(data: Path, threshold: int) -> None:
    _corrupt(data)
    (data / "imgs" / "9.png").write_bytes(b"")
    ds = load_dataset(data)
    seen: list[int] = []
    cache = build_image_cache(
        ds, np.arange(12), image_size=8, skip_bad=True, workers=2,
        memmap_threshold_bytes=threshold, progress=seen.append,
    )  # fmt: skip
    kept = [i for i in range(12) if i not in (3, 7, 9)]
    assert cache.indices.tolist() == kept and sum(seen) == 12
    assert [sid for sid, _ in cache.skipped] == ["imgs/3.png", "imgs/7.png", "imgs/9.png"]
    assert all(reason for _, reason in cache.skipped)
    assert cache.images.shape == (9, 3, 8, 8) and cache.images.is_contiguous()
    for row, i in enumerate(kept):
        np.testing.assert_array_equal(cache.images[row].numpy(), _expected(i))
    cache.close()


def test_decompression_bomb_refused_before_decoding(data: Path) -> None:
    Image.fromarray(_image(0, size=(40, 30))).save(data / "imgs" / "0.png")
    ds = load_dataset(data)
    with pytest.raises(
        DataError, match=r"Refusing to decode image 'imgs/0\.png'.*40x30 = 1200 pixels.*limit"
    ):
        build_image_cache(ds, np.arange(3), image_size=8, max_image_pixels=1000)
    cache = build_image_cache(ds, np.arange(3), image_size=8, max_image_pixels=1000, skip_bad=True)
    assert cache.indices.tolist() == [1, 2] and "exceeds the limit" in cache.skipped[0][1]


def test_pillow_bomb_warning_becomes_data_error(data: Path, monkeypatch) -> None:
    # Pillow's own guard (Image.MAX_IMAGE_PIXELS) only warns; the cache turns that into an error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    ds = load_dataset(data)
    with pytest.raises(DataError, match=r"'imgs/0\.png'.*decompression bomb"):
        build_image_cache(ds, np.arange(2), image_size=8, workers=1)


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pal = Image.fromarray(np.full((4, 4, 3), (200, 100, 0), np.uint8))
    pal = pal.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(buf, format="JPEG", quality=100)
    (tmp_path / "g.jpg").write_bytes(buf.getvalue())
    (tmp_path / "labels.csv").write_text("image,y\na.png,0\np.png,1\ng.jpg,0\n")
    cache = build_image_cache(load_dataset(tmp_path), np.arange(3), image_size=4, workers=1)
    px = cache.images[:, :, 0, 0].tolist()
    assert px[0] == [10, 20, 30] and px[1] == [200, 100, 0]
    assert px[2][0] == px[2][1] == px[2][2] and abs(px[2][0] - 77) <= 1


def test_npz_resize_matches_antialiased_interpolate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", images=images, labels=np.zeros(5, int), label_names=["y"])
    ds = load_dataset(tmp_path)
    cache = build_image_cache(ds, np.array([4, 1, 2]), image_size=5)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(images[[4, 1, 2]]).float(), size=(5, 5), mode="bilinear",
        antialias=True, align_corners=False,
    ).round().to(torch.uint8)  # fmt: skip
    torch.testing.assert_close(cache.images, ref, atol=0, rtol=0)


def test_bad_arguments(data: Path) -> None:
    ds = load_dataset(data)
    with pytest.raises(UsageError, match="--image-size must be a positive integer, got 0"):
        build_image_cache(ds, np.arange(2), image_size=0)
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        build_image_cache(ds, np.arange(2), image_size=8, workers=0)
    empty = build_image_cache(ds, np.arange(0), image_size=8)
    assert empty.images.shape == (0, 3, 8, 8) and empty.indices.tolist() == []
    assert 1 <= default_workers() <= 8
    # Tiny images decode serially by default; threads only pay off for larger ones.
    assert default_workers(ds.paths[0]) == 1
    Image.fromarray(_image(0, size=(200, 100))).save(data / "big.png")
    assert default_workers(data / "big.png") == default_workers()
