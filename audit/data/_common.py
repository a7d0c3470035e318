"""Validation and decoding shared by every dataset layout.

Owns: turning raw label cells into int64 columns (with -1/1 normalised to 0/1), checking that
image paths stay inside DATA and are regular files, reading small CSV tables with line
numbers for error messages, and decoding one image (any Pillow mode) to 8-bit RGB
(:func:`decode_image`, :func:`rgb_array`). Must not touch devices, cache images, or know
about any one layout.

Image modes
-----------
:func:`rgb_array` maps every mode Pillow produces to uint8 RGB, or refuses it:

* 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV``) use
  Pillow's own conversion (``1`` → 0/255; ``P`` → its palette; CMYK → (255−C)(255−K)/255;
  YCbCr → the JFIF/BT.601 full-range matrix).
* Alpha (``LA``, ``PA``, ``RGBA``, ``P`` with transparency, premultiplied ``La``/``RGBa``) is
  dropped: the stored colour of each pixel is kept, as ``Image.convert("RGB")`` and
  torchvision's loaders do (premultiplied modes are un-premultiplied first).
* 16-bit samples (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, 16-bit PNG/TIFF/PGM) keep their
  high byte, ``v >> 8`` — the rule Pillow applies to 16-bit RGB PNGs — so 0..65535 spans
  0..255 instead of clipping everything above 255 to white.
* ``I`` (32-bit integer: 16-bit PGM, integer TIFF) is read as 16-bit samples when every
  value is in 0..65535 (``v >> 8``); other values are refused.
* ``F`` (32-bit float) is read as intensities in [0, 1] (``round(255 v)``); NaN, infinities
  or values outside [0, 1] are refused, since no scale can be inferred safely.
* ``LAB`` is refused: Pillow's conversion to RGB copies channels without colour management.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from audit.errors import DataError

#: File name suffixes treated as images when scanning folders (lower case).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

#: How many offending items an error message lists before saying "and N more".
SHOWN = 5

#: Formats Pillow may open (JPEG covers MPO). Deliberately short: e.g. EPS would run
#: Ghostscript on the file.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")

#: Errors Pillow (and the codecs under it) raise for unreadable, corrupt or truncated files.
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def image_formats() -> tuple[str, ...]:
    """Return the allowed formats this Pillow build can open.

    A missing codec (e.g. WebP) is left out rather than making every ``Image.open`` fail.
    """
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


class BadImage(Exception):
    """An image that cannot be decoded.

    ``bomb`` marks the too-large ones, ``unreadable`` the files that cannot even be opened
    (no read permission, removed since the labels were read, not a regular file).
    """

    def __init__(self, reason: str, *, bomb: bool = False, unreadable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bomb = bomb
        self.unreadable = unreadable


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a decoded image of any Pillow mode to uint8 RGB ``(H, W, 3)``.

    The rule per mode is in this module's docstring.

    Parameters
    ----------
    img : PIL.Image.Image
        The image (its pixels are decoded here if they were not yet).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    BadImage
        See :func:`to_rgb`.
    """
    return np.asarray(to_rgb(img))


def _gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(values[:, :, None], 3, axis=2), mode="RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to an 8-bit ``RGB`` image (rules: module docstring).

    Parameters
    ----------
    img : PIL.Image.Image
        The image.

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB`` (``img`` itself when it already is).

    Raises
    ------
    BadImage
        For modes or values with no safe 8-bit reading (``LAB``, ``I`` outside 0..65535,
        ``F`` outside [0, 1] or not finite, unknown modes).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(img)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise BadImage(
                f"32-bit integer image (mode I) with values {int(values.min())}..."
                f"{int(values.max())}, outside the 16-bit range 0..65535, so there is no safe "
                "8-bit reading; convert it to 8-bit RGB"
            )
        return _gray((values.astype(np.uint32) >> 8).astype(np.uint8))
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            raise BadImage(
                f"32-bit float image (mode F) with values {lo:g}..{hi:g}"
                f"{' and NaN/Inf' if not np.isfinite(values).all() else ''}; float images are "
                "read as intensities in [0, 1], so convert it to 8-bit RGB (or rescale to [0, 1])"
            )
        return _gray(np.rint(values * 255.0).astype(np.uint8))
    if mode == "LAB":
        raise BadImage(
            "CIELAB image (mode LAB): Pillow has no colour-managed LAB→RGB conversion; convert "
            "it to RGB"
        )
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # what Pillow asks for before dropping alpha
    elif mode in ("La", "RGBa"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")  # un-premultiply first
    try:
        return img.convert("RGB")
    except ValueError as e:  # "conversion from X to RGB not supported"
        raise BadImage(f"image mode {mode!r} cannot be converted to RGB ({e})") from e


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading without blocking, refusing anything but a regular file.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; ``fstat`` on the opened descriptor
    then decides, so a file swapped after the labels were read cannot slip through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadImage("it is a symlink loop", unreadable=True) from e
        raise BadImage(f"{type(e).__name__}: {e.strerror}", unreadable=True) from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadImage(f"it is {describe_non_file(mode)}, not an image file", unreadable=True)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def describe_non_file(mode: int) -> str:
    """Name a non-regular file type from its ``st_mode`` ("a folder", "a FIFO", ...)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def decode_image(source: Path | BinaryIO, size: int, max_pixels: int) -> np.ndarray:
    """Decode one image to uint8 ``(3, size, size)`` RGB.

    Parameters
    ----------
    source : Path or binary file object
        A file path (opened without following it into a FIFO or device) or an open binary
        stream (e.g. ``io.BytesIO`` of an image inside a Parquet or tar file).
    size : int
        Output side; the image is resized with Pillow's bilinear filter, which widens its
        kernel when shrinking (antialiasing).
    max_pixels : int
        Refuse images whose header declares more pixels (checked before decoding).

    Returns
    -------
    numpy.ndarray
        ``(3, size, size)`` uint8, modes converted by :func:`rgb_array`.

    Raises
    ------
    BadImage
        Unreadable, not a regular file, corrupt or truncated, too large, or a mode with no
        safe 8-bit reading. Callers turn it into a ``DataError`` or a skip.
    """
    try:
        stream = _open_regular(source) if isinstance(source, (str, os.PathLike)) else source
        with stream, Image.open(stream, formats=image_formats()) as img:
            w, h = img.size  # from the header: nothing is decoded yet
            if w * h > max_pixels:
                raise BadImage(
                    f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}", bomb=True
                )
            rgb = to_rgb(img)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"Pillow refused it as a decompression bomb ({e})", bomb=True) from e
    except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
        raise BadImage(f"{type(e).__name__}: {e.strerror}", unreadable=True) from e
    except DECODE_ERRORS as e:
        raise BadImage(f"{type(e).__name__}: {e}") from e
    return arr.transpose(2, 0, 1)


def show_list(items: Sequence[str], *, total: int | None = None) -> str:
    """Format the first few of ``items`` for an error message.

    Parameters
    ----------
    items : sequence of str
        The offending items, in the order they were found.
    total : int, optional
        How many there are in all (defaults to ``len(items)``).

    Returns
    -------
    str
        ``'a', 'b', 'c' and 4 more``.
    """
    total = len(items) if total is None else total
    shown = ", ".join(repr(s) for s in items[:SHOWN])
    return shown + (f" and {total - SHOWN} more" if total > SHOWN else "")


def parse_int_cell(text: str) -> int | None:
    """Parse one label cell as an integer; ``None`` when it is not one.

    Accepts surrounding whitespace, a sign, and integral decimals such as ``1.0`` (what
    spreadsheet and pandas exports write for integer columns).
    """
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return None
    if np.isfinite(f) and f == int(f):
        return int(f)
    return None


def int_column(
    cells: Sequence[str],
    *,
    column: str,
    source: str,
    where: Callable[[int], str],
) -> np.ndarray:
    """Convert the text cells of one label column to int64, rejecting anything else.

    Parameters
    ----------
    cells : sequence of str
        The column's cells, one per sample.
    column : str
        Column name, for messages.
    source : str
        The file the cells come from, for messages.
    where : callable
        Maps a sample index to its position in the file (``"line 17"``).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64, not yet normalised (see :func:`normalise_labels`).

    Raises
    ------
    DataError
        On the first empty or non-integer cell, naming file, line and column.
    """
    try:
        # Fast path: numpy parses plain integer text (with whitespace and signs) in C.
        return np.asarray(cells, dtype=np.int64).reshape(len(cells))
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.empty(len(cells), dtype=np.int64)
    for i, text in enumerate(cells):
        value = parse_int_cell(text)
        if value is None:
            what = "is empty" if not text.strip() else f"has value {text.strip()!r}"
            raise DataError(
                f"Label column {column!r} in {source} {what} at {where(i)}; every label cell "
                "must be an integer: 0/1 or -1/1 for binary attributes, 0..K-1 for classes. "
                "Fill in or remove that row."
            )
        out[i] = value
    return out


def normalise_labels(
    values: np.ndarray,
    *,
    column: str,
    source: str,
    where: Callable[[int], str],
) -> np.ndarray:
    """Check a label column's values and map binary -1/1 to 0/1.

    A column is accepted when its values are all in {-1, 1} (mapped to {0, 1}: -1 → 0) or all
    non-negative integers (kept: {0, 1} binary attributes or 0..K-1 classes).

    Parameters
    ----------
    values : numpy.ndarray
        ``(N,)`` integer values of one column.
    column, source : str
        Column and file names, for messages.
    where : callable
        Maps a sample index to its position in the file (``"line 17"``).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64.

    Raises
    ------
    DataError
        Naming the first offending value, its position, the column and the file.
    """
    values = np.asarray(values, dtype=np.int64)
    negative = values < 0
    if not negative.any():
        return values
    if np.isin(values, (-1, 1)).all():
        return (values == 1).astype(np.int64)
    bad = np.flatnonzero(negative & (values != -1))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"Label column {column!r} in {source} has value {int(values[i])} at {where(i)}; "
            "expected 0/1 or -1/1 for binary attributes, or non-negative integer classes "
            "0..K-1. Fix that value (or drop the column from the file)."
        )
    # Only -1 is negative, but the column also holds 0 or values above 1.
    i = int(np.flatnonzero(negative)[0])
    j = int(np.flatnonzero(~np.isin(values, (-1, 1)))[0])
    raise DataError(
        f"Label column {column!r} in {source} has value -1 at {where(i)} and value "
        f"{int(values[j])} at {where(j)}; -1 is accepted only in binary columns whose values "
        "are all -1 or 1, otherwise values must be 0/1 or non-negative integer classes. "
        "Recode the column consistently."
    )


_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|[\\/]{2})")


def safe_image_path(
    root: Path, rel: str, *, source: str, where: str, dirs: dict[str, str] | None = None
) -> tuple[str, Path]:
    """Check that an image path from a label file stays inside DATA.

    Parameters
    ----------
    root : Path
        DATA, already resolved.
    rel : str
        The path as written in the file (relative to DATA; a backslash is read as a separator).
    source, where : str
        File and position, for messages.
    dirs : dict, optional
        Cache of resolved folders shared by the calls of one load (resolving each folder once
        keeps this at one ``lstat`` per image for CelebA-sized lists).

    Returns
    -------
    (str, Path)
        The normalised relative id (POSIX form) and the resolved file path.

    Raises
    ------
    DataError
        When the path is empty, absolute, contains ``..`` or resolves (through symlinks)
        outside DATA.
    """
    raw = rel.strip()
    parts = raw.replace("\\", "/").split("/")
    clean = "/".join(p for p in parts if p not in ("", "."))
    if not clean:
        raise DataError(
            f"The image path at {where} of {source} is empty; every row needs a path "
            "relative to DATA. Fill it in or remove the row."
        )
    if raw.startswith(("/", "\\")) or _WINDOWS_ABSOLUTE.match(raw) or ".." in parts:
        raise DataError(
            f"The image path {raw!r} at {where} of {source} escapes DATA ({root}): "
            "paths must be relative to DATA, without '..' or a leading '/' or drive. "
            "Move the image under DATA and write its relative path."
        )
    base = str(root)
    cache = {} if dirs is None else dirs
    head, _, name = clean.rpartition("/")
    real_dir = cache.get(head)
    if real_dir is None:
        real_dir = os.path.realpath(os.path.join(base, head)) if head else base
        cache[head] = real_dir
    candidate = os.path.join(real_dir, name)
    resolved = os.path.realpath(candidate) if os.path.islink(candidate) else candidate
    if resolved != base and not resolved.startswith(base.rstrip(os.sep) + os.sep):
        raise DataError(
            f"The image path {raw!r} at {where} of {source} escapes DATA ({root}): "
            f"it resolves (through a symlink) to {resolved!r}. Copy the image into DATA "
            "instead of linking to a location outside it."
        )
    return clean, Path(resolved)


def require_files(paths: Sequence[Path], ids: Sequence[str], *, root: Path, source: str) -> None:
    """Raise a DataError naming the first missing image files, if any.

    Parameters
    ----------
    paths : sequence of Path
        Resolved image paths.
    ids : sequence of str
        Their ids (paths relative to DATA), for the message.
    root : Path
        DATA.
    source : str
        Which file listed them.
    """
    problems: dict[str, list[str]] = {}
    for i, p in enumerate(paths):
        kind = _not_a_file(p)
        if kind is not None:
            problems.setdefault(kind, []).append(ids[i])
    if not problems:
        return
    missing = problems.pop("missing", [])
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(paths)} images listed in {source} do not exist under "
            f"DATA ({root}): {show_list(missing)}. Fix the paths (they are relative to DATA) or "
            "remove those rows."
        )
    kind, bad = next(iter(problems.items()))
    raise DataError(
        f"{len(bad)} of the {len(paths)} image paths listed in {source} are {kind}, not image "
        f"files: {show_list(bad)} (under DATA, {root}). Point those rows at regular image files "
        "or remove them."
    )


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file (``None`` when it is one), without opening it.

    ``stat`` never blocks, unlike opening a FIFO; a symlink loop raises ELOOP there.
    """
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loops"
        return "missing"  # a broken symlink too: paths arrive resolved
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "folders"
    if stat.S_ISFIFO(st.st_mode):
        return "FIFOs (named pipes)"
    if stat.S_ISSOCK(st.st_mode):
        return "sockets"
    return "device files"


def _check_delimiter(path: Path, header: list[str]) -> None:
    """Refuse a CSV whose header is one cell holding another delimiter (``;``, tab, ``|``).

    Spreadsheet exports in many locales use ``;``; read with ``,`` the whole header becomes
    one column name, and the real problem (the delimiter) would be reported as a missing
    column.
    """
    if len(header) != 1:
        return
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        if sep in header[0]:
            raise DataError(
                f"{path} is not comma-separated: its header {header[0]!r} is one column "
                f"holding {name}. Save it as a comma-separated CSV (e.g. "
                "'image,split,Smiling'), or convert it with "
                f'`python -c "import csv,sys; w=csv.writer(sys.stdout); '
                f"[w.writerow(r) for r in csv.reader(open(sys.argv[1]), delimiter='{sep}')]\" "
                f"{path.name} > labels.csv`."
            )


def read_csv_table(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Read a small CSV file with a header row.

    Parameters
    ----------
    path : Path
        The CSV file (UTF-8, an optional byte-order mark is ignored).

    Returns
    -------
    (header, rows, lines)
        Stripped column names, stripped cells per row, and each row's line number in the
        file (1-based; the header is line 1). Blank lines are skipped.

    Raises
    ------
    DataError
        When the file cannot be read, is empty, repeats or leaves empty a column name, or
        has a row with the wrong number of cells.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise DataError(
                    f"{path} is empty; it needs a header row naming the columns (e.g. "
                    "'image,split,Smiling') and one row per image."
                ) from None
            _check_delimiter(path, header)
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"Line {reader.line_num} of {path} has {len(row)} cells but the header "
                        f"has {len(header)} columns ({', '.join(header)}); every row needs one "
                        "cell per column. Fix that row (quote cells that contain commas)."
                    )
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"Cannot read {path} as a UTF-8 CSV file ({type(e).__name__}: {e}); check that it "
            "exists, is readable and is plain comma-separated text."
        ) from e
    seen: set[str] = set()
    for h in header:
        if not h:
            raise DataError(
                f"The header of {path} has an empty column name ({','.join(header)!r}); name "
                "every column."
            )
        if h in seen:
            raise DataError(
                f"The header of {path} names column {h!r} twice; column names must be unique."
            )
        seen.add(h)
    return header, rows, lines


def check_unique_ids(ids: Sequence[str], *, source: str) -> None:
    """Raise a DataError when an image appears twice.

    Parameters
    ----------
    ids : sequence of str
        Normalised ids.
    source : str
        The file that lists them.
    """
    seen: set[str] = set()
    dupes: list[str] = []
    for i in ids:
        if i in seen:
            dupes.append(i)
        seen.add(i)
    if dupes:
        raise DataError(
            f"{source} lists {len(dupes)} image(s) more than once: {show_list(dupes)}. Each "
            "image must appear in exactly one row; remove the duplicates."
        )


#: Split names read from file and folder names, as Hugging Face's data-files patterns read
#: them (a whole word of a path component: ``data/train-00000-of-00002.parquet``,
#: ``test/0000.tar``), mapped to the names the runner picks by default.
SPLIT_KEYWORDS = {
    "train": "train",
    "training": "train",
    "validation": "val",
    "valid": "val",
    "val": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}

#: What separates the words of a path component for split keywords (Hugging Face's set).
_SPLIT_WORD_SEPARATORS = re.compile(r"[-._ 0-9]+")


def split_from_path(rel: str, *, source: str) -> str | None:
    """Read a split name from the words of a relative path.

    Parameters
    ----------
    rel : str
        POSIX path relative to DATA (``data/train-00000-of-00002.parquet``).
    source : str
        What the path names, for messages.

    Returns
    -------
    str or None
        ``"train"``, ``"val"`` or ``"test"`` when a component holds a split keyword as a
        whole word (``SPLIT_KEYWORDS``), None when none does.

    Raises
    ------
    DataError
        When the path names two different splits (``train/test-0.parquet``).
    """
    found = {
        SPLIT_KEYWORDS[word]
        for part in rel.split("/")
        for word in _SPLIT_WORD_SEPARATORS.split(part.lower())
        if word in SPLIT_KEYWORDS
    }
    if len(found) > 1:
        raise DataError(
            f"The path {rel!r} of {source} names more than one split "
            f"({', '.join(sorted(found))}); split names are read from file and folder names "
            "(train/validation/test words). Rename it so at most one split word appears."
        )
    return found.pop() if found else None


def find_files(root: Path, suffix: str | tuple[str, ...], *, depth: int = 3) -> list[Path]:
    """Files ending in ``suffix`` at most ``depth`` folders below ``root``, hidden ones skipped.

    Parameters
    ----------
    root : Path
        DATA, a folder.
    suffix : str or tuple of str
        Lower-case suffix(es), with the dot (``".parquet"``); one walk finds them all.
    depth : int, default 3
        How deep to look (``root/a/b/c.parquet`` is depth 2 folders below); Hugging Face
        repositories keep data at most ``<config>/<split>/`` deep.

    Returns
    -------
    list of Path
        Sorted by path.
    """
    found: list[Path] = []
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - base >= depth:
            dirnames[:] = []
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            here / f for f in filenames if not f.startswith(".") and f.lower().endswith(suffix)
        ]
    return sorted(found)


def safe_member_file(root: Path, path: Path, *, what: str) -> str:
    """Check that a container file found under DATA does not link outside it.

    Parameters
    ----------
    root : Path
        DATA, resolved (a folder).
    path : Path
        The file found below it.
    what : str
        What the file is, for messages (``"Parquet file"``).

    Returns
    -------
    str
        Its path relative to DATA (POSIX form).

    Raises
    ------
    DataError
        When it resolves (through a symlink) outside DATA.
    """
    rel = path.relative_to(root).as_posix()
    safe_image_path(root, rel, source=f"DATA ({what}s)", where=f"{what} {rel!r}")
    return rel


#: Marks a record that has no value for a column.
MISSING = object()


def typed_label_columns(
    records: Sequence[dict[str, object]],
    *,
    skip: Sequence[str],
    source: str,
    where: Callable[[int], str],
) -> dict[str, np.ndarray]:
    """Pick the integer label columns of per-sample records and convert them to int64.

    A column is a label column when its values are integers (a boolean counts as 0/1) in
    every record; one with no integer value (text, floats, lists) is not a label and is left
    out; one that mixes integers with other values or misses them in some records is an
    error. Values are then checked and normalised as every layout's labels are.

    Parameters
    ----------
    records : sequence of dict
        One mapping per sample, column name → value (``MISSING`` need not be stored: an
        absent key is missing).
    skip : sequence of str
        Columns that are not labels (the image path, ``split``).
    source : str
        The file(s) the records come from, for messages.
    where : callable
        Maps a sample index to its position (``"line 17"``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``(N,)`` int64 per label column, in first-seen column order.

    Raises
    ------
    DataError
        Naming the column, the position and the fix.
    """
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if name in skip:
            continue
        values = [rec.get(name, MISSING) for rec in records]
        ints = [type(v) in (int, bool) for v in values]
        if not any(ints):
            continue
        if not all(ints):
            i = ints.index(False)
            v = values[i]
            what = "has no value" if v is MISSING or v is None else f"has value {v!r}"
            raise DataError(
                f"Label column {name!r} in {source} holds integers but {what} at {where(i)}; "
                "a label column needs an integer (0/1, -1/1, true/false, or a class 0..K-1) "
                "for every sample. Fill in that value, or drop the column."
            )
        raw = np.asarray([int(v) for v in values], dtype=np.int64)
        columns[name] = normalise_labels(raw, column=name, source=source, where=where)
    return columns
