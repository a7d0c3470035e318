"""Every Pillow image mode decodes to the right 8-bit RGB, or is refused (issue 11, fix 3).

Each case writes a real file (PNG, TIFF, PGM, or a PNG assembled byte by byte where Pillow
cannot write the mode), decodes it with ``audit.data._common.decode_image`` at its own size
(no resize) and compares with a reference computed here with numpy from the source values,
exactly unless a tolerance is stated.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.data._common import BadImage, decode_image, rgb_array

rng = np.random.default_rng(11)
MAX_PIXELS = 10_000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(path: Path, samples: np.ndarray, color_type: int) -> Path:
    """Write a 16-bit PNG by hand: ``samples`` is (H, W, C) uint16, big-endian on disk."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2).astype(np.uint8)


S = 6  # square test images so decode_image(…, S) does not resize


def _check(path: Path, expected: np.ndarray, *, atol: int = 0) -> None:
    got = decode_image(path, S, MAX_PIXELS).transpose(1, 2, 0)
    assert got.dtype == np.uint8 and got.shape == (S, S, 3)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= atol, (diff.max(), got[..., 0], expected[..., 0])


def test_16bit_grayscale_png_is_not_white(tmp_path: Path) -> None:
    """The issue's case: values 160..199 (as 16-bit, x257) decoded as solid white."""
    v8 = rng.integers(160, 200, size=(S, S)).astype(np.uint16)
    samples = v8 * 257
    path = _png16(tmp_path / "g16.png", samples[:, :, None], color_type=0)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I;16B", "I")
    _check(path, _gray3(samples >> 8))
    _check(path, _gray3(v8))  # x257 then >>8 gives the 8-bit values back exactly


def test_16bit_rgb_and_gray_alpha_png(tmp_path: Path) -> None:
    rgb = rng.integers(0, 65536, size=(S, S, 3)).astype(np.uint16)
    _check(_png16(tmp_path / "rgb16.png", rgb, color_type=2), (rgb >> 8).astype(np.uint8))
    la = rng.integers(0, 65536, size=(S, S, 2)).astype(np.uint16)
    _check(_png16(tmp_path / "la16.png", la, color_type=4), _gray3(la[..., 0] >> 8))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I;16L", "TIFF")],
)
def test_16bit_modes_written_by_pillow(tmp_path: Path, mode: str, fmt: str) -> None:
    samples = rng.integers(0, 65536, size=(S, S)).astype(np.uint16)
    raw = samples.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    img = Image.frombytes(mode, (S, S), raw)
    assert np.array_equal(np.asarray(img).astype(np.uint16), samples)
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt)
    _check(path, _gray3(samples >> 8))


def test_mode_i_from_16bit_pgm(tmp_path: Path) -> None:
    samples = rng.integers(0, 65536, size=(S, S)).astype(np.uint16)
    path = tmp_path / "x.pgm"
    path.write_bytes(f"P5 {S} {S} 65535\n".encode() + samples.astype(">u2").tobytes())
    with Image.open(path) as img:
        assert img.mode in ("I", "I;16", "I;16B")
    _check(path, _gray3(samples >> 8))


def test_mode_i_outside_16_bits_is_refused(tmp_path: Path) -> None:
    values = rng.integers(0, 65536, size=(S, S)).astype(np.int32)
    values[0, 0], values[0, 1] = -5, 70000
    path = tmp_path / "i32.tif"
    Image.fromarray(values, mode="I").save(path)
    with pytest.raises(BadImage, match=r"mode I\) with values -\d+\.\.\.\d+.*convert it to 8-bit"):
        decode_image(path, S, MAX_PIXELS)


def test_mode_f(tmp_path: Path) -> None:
    values = rng.random((S, S)).astype(np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    _check(path, _gray3(np.rint(values * 255)))
    out_of_range = ((values * 300, r"values [\d.]+\.\.[\d.]+;.*\[0, 1\]"), (values - 1, "values -"))
    for bad, match in out_of_range:
        Image.fromarray(bad.astype(np.float32), mode="F").save(path)
        with pytest.raises(BadImage, match=rf"float image \(mode F\) with {match}"):
            decode_image(path, S, MAX_PIXELS)
    nan = values.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(path)
    with pytest.raises(BadImage, match=r"NaN/Inf.*convert it to 8-bit"):
        decode_image(path, S, MAX_PIXELS)


def test_bilevel_gray_and_alpha(tmp_path: Path) -> None:
    bits = rng.integers(0, 2, size=(S, S)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    _check(tmp_path / "b.png", _gray3(bits * 255))
    gray = rng.integers(0, 256, size=(S, S)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    _check(tmp_path / "l.png", _gray3(gray))
    alpha = rng.integers(0, 256, size=(S, S)).astype(np.uint8)
    Image.fromarray(np.stack([gray, alpha], -1), mode="LA").save(tmp_path / "la.png")
    _check(tmp_path / "la.png", _gray3(gray))  # alpha dropped, stored value kept
    rgba = rng.integers(0, 256, size=(S, S, 4)).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    _check(tmp_path / "rgba.png", rgba[..., :3])


@pytest.mark.parametrize("transparency", [False, True])
def test_palette(tmp_path: Path, transparency: bool) -> None:
    palette = rng.integers(0, 256, size=(256, 3)).astype(np.uint8)
    idx = rng.integers(0, 256, size=(S, S)).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette.reshape(-1).tolist())
    path = tmp_path / "p.png"
    if transparency:
        img.save(path, transparency=int(idx[0, 0]))
        with Image.open(path) as check:
            assert "transparency" in check.info
    else:
        img.save(path)
    _check(path, palette[idx])


def test_palette_with_alpha_tiff(tmp_path: Path) -> None:
    palette = rng.integers(0, 256, size=(256, 3)).astype(np.uint8)
    idx = rng.integers(0, 256, size=(S, S)).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette.reshape(-1).tolist())
    pa = img.convert("PA")
    path = tmp_path / "pa.tif"
    pa.save(path)
    with Image.open(path) as check:
        assert check.mode == "PA"
    _check(path, palette[idx])


def test_cmyk(tmp_path: Path) -> None:
    cmyk = rng.integers(0, 256, size=(S, S, 4)).astype(np.uint8)
    path = tmp_path / "c.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    c, m, y, k = (cmyk[..., i].astype(float) for i in range(4))
    ref = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1)
    _check(path, np.rint(ref / 255))


def test_ycbcr(tmp_path: Path) -> None:
    """JFIF/BT.601 full range; Pillow's fixed-point arithmetic may differ by 1 level."""
    ycc = rng.integers(0, 256, size=(S, S, 3)).astype(np.uint8)
    path = tmp_path / "y.tif"
    Image.frombytes("YCbCr", (S, S), ycc.tobytes()).save(path)
    with Image.open(path) as check:
        assert check.mode == "YCbCr"
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    ref = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
         y + 1.772 * (cb - 128)], -1,
    )  # fmt: skip
    _check(path, np.clip(np.rint(ref), 0, 255), atol=1)


def test_lab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.frombytes("LAB", (S, S), bytes(3 * S * S)).save(path)
    with pytest.raises(BadImage, match=r"CIELAB.*convert it to RGB"):
        decode_image(path, S, MAX_PIXELS)


def test_premultiplied_modes_are_unpremultiplied() -> None:
    rgba = np.array([[[200, 100, 50, 255], [100, 50, 20, 128]]], dtype=np.uint8)
    straight = Image.fromarray(rgba, mode="RGBA")
    got = rgb_array(straight.convert("RGBa"))
    # Premultiply-then-unpremultiply loses precision where alpha < 255 (stated: 2 levels).
    assert np.abs(got.astype(int) - rgba[..., :3].astype(int)).max() <= 2
    la = Image.fromarray(np.array([[[90, 255], [90, 128]]], dtype=np.uint8), mode="LA")
    assert np.abs(rgb_array(la.convert("La")).astype(int) - 90).max() <= 2


def test_cache_uses_the_same_decoder(tmp_path: Path) -> None:
    from audit.data.cache import _decode

    samples = rng.integers(0, 65536, size=(S, S)).astype(np.uint16)
    path = _png16(tmp_path / "g16.png", samples[:, :, None], color_type=0)
    assert np.array_equal(_decode(path, S, MAX_PIXELS), decode_image(path, S, MAX_PIXELS))
    assert _decode(path, S, MAX_PIXELS).max() < 255 or samples.max() >= 65280
