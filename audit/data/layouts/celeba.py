"""CelebA layout: ``list_attr_celeba.txt``, ``img_align_celeba/``, ``list_eval_partition.txt``.

Owns: parsing the original CelebA annotation files (count line, attribute-name line, then
``000001.jpg  -1  1 ...`` rows with variable whitespace) and the 0/1/2 partition file. Must
not decode images or pick targets/groups beyond the layout's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from audit.data._common import (
    check_unique_ids,
    int_column,
    normalise_labels,
    require_files,
    safe_image_path,
)
from audit.data.dataset import Dataset, Layout
from audit.errors import DataError

ATTR_FILE = "list_attr_celeba.txt"
IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
PARTITION_NAMES = {"0": "train", "1": "val", "2": "test"}
#: Protected attributes of the paper's CelebA experiments used when the user names none.
DEFAULT_GROUPS = ("Male", "Young")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Return ``(line number, text)`` of the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read {path} ({type(e).__name__}: {e}); check that it exists, is readable "
            "and is the plain-text CelebA annotation file."
        ) from e
    return [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]


def read_celeba(root: Path) -> Dataset:
    """Read the CelebA annotation files under ``root``.

    Parameters
    ----------
    root : Path
        DATA, resolved; holds ``list_attr_celeba.txt`` and ``img_align_celeba/``.

    Returns
    -------
    Dataset
        ``layout="celeba"``; ids are ``img_align_celeba/<file>``; attributes -1/1 → 0/1;
        splits from ``list_eval_partition.txt`` (0/1/2 → train/val/test) when present;
        default groups ``Male`` and ``Young`` (those present), default targets the others.

    Raises
    ------
    DataError
        Malformed header, a count line that disagrees with the rows, rows with the wrong
        number of values, bad label values, missing images or partition entries.
    """
    attr_path = root / ATTR_FILE
    source = str(attr_path)
    names, rows = _header_and_rows(_read_lines(attr_path), source)
    if not (root / IMAGE_DIR).is_dir():
        raise DataError(
            f"CelebA layout detected ({ATTR_FILE} in {root}) but the image folder "
            f"{IMAGE_DIR}/ is missing; put the aligned images in {root / IMAGE_DIR}."
        )
    line_no = [n for n, _ in rows]

    def where(i: int) -> str:
        return f"line {line_no[i]}"

    files, columns = _attribute_columns(names, rows, source, where)
    ids: list[str] = []
    paths: list[Path] = []
    dirs: dict[str, str] = {}
    for i, f in enumerate(files):
        rel, resolved = safe_image_path(
            root, f"{IMAGE_DIR}/{f}", source=source, where=where(i), dirs=dirs
        )
        ids.append(rel)
        paths.append(resolved)
    check_unique_ids(ids, source=source)
    splits = _read_partition(root, files) if (root / PARTITION_FILE).is_file() else None
    require_files(paths, ids, root=root, source=source)

    groups = tuple(g for g in DEFAULT_GROUPS if g in columns)
    return Dataset(
        root=root,
        layout="celeba",
        ids=np.asarray(ids, dtype=str),
        columns=columns,
        splits=splits,
        default_targets=tuple(n for n in names if n not in groups),
        default_groups=groups,
        class_names={},
        paths=paths,
        array=None,
    )


def _header_and_rows(
    lines: list[tuple[int, str]], source: str
) -> tuple[list[str], list[tuple[int, str]]]:
    """Check the count line and the attribute-name line; return the names and image rows."""
    if len(lines) < 2:
        raise DataError(
            f"{source} has {len(lines)} non-blank line(s); the CelebA format is a count line, "
            "a line of attribute names, then one '000001.jpg -1 1 ...' row per image."
        )
    count_text = lines[0][1].strip()
    if not count_text.isdigit():
        raise DataError(
            f"Line {lines[0][0]} of {source} should be the number of images but is "
            f"{count_text[:60]!r}; the CelebA format starts with a count line, then the "
            "attribute names. Restore the original file."
        )
    names = lines[1][1].split()
    if len(set(names)) != len(names):
        raise DataError(
            f"The attribute-name line (line {lines[1][0]}) of {source} repeats a name; "
            "attribute names must be unique."
        )
    rows = lines[2:]
    if int(count_text) != len(rows):
        raise DataError(
            f"{source} says it lists {int(count_text)} images (line {lines[0][0]}) but has "
            f"{len(rows)} image rows; the file is truncated or edited. Restore the original "
            "file, or correct the count line to the number of rows."
        )
    if not rows:
        raise DataError(f"{source} lists no images; add one row per image.")
    return names, rows


def _attribute_columns(
    names: list[str],
    rows: list[tuple[int, str]],
    source: str,
    where: Callable[[int], str],
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Split each row into its file name and -1/1 values; return files and 0/1 columns."""
    files: list[str] = []
    cells: list[list[str]] = []
    for n, text in rows:
        parts = text.split()
        if len(parts) != len(names) + 1:
            raise DataError(
                f"Line {n} of {source} has {len(parts) - 1} values but the header names "
                f"{len(names)} attributes; each row is an image file name followed by one "
                "-1/1 value per attribute. Fix or remove that row."
            )
        files.append(parts[0])
        cells.append(parts[1:])
    try:
        matrix = np.asarray(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        # Slow path only to find and name the offending cell.
        for j, name in enumerate(names):
            int_column([c[j] for c in cells], column=name, source=source, where=where)
        raise
    columns = {
        name: normalise_labels(matrix[:, j], column=name, source=source, where=where)
        for j, name in enumerate(names)
    }
    return files, columns


def _read_partition(root: Path, files: list[str]) -> np.ndarray:
    """Map each image file to train/val/test from ``list_eval_partition.txt``."""
    path = root / PARTITION_FILE
    split_of: dict[str, str] = {}
    for n, text in _read_lines(path):
        parts = text.split()
        if len(parts) != 2 or parts[1] not in PARTITION_NAMES:
            raise DataError(
                f"Line {n} of {path} is {text.strip()[:60]!r}; each line must be an image file "
                "name and a partition 0 (train), 1 (val) or 2 (test). Fix that line."
            )
        split_of[parts[0]] = PARTITION_NAMES[parts[1]]
    missing = [f for f in files if f not in split_of]
    if missing:
        shown = ", ".join(repr(f) for f in missing[:5])
        raise DataError(
            f"{path} has no partition for {len(missing)} of the {len(files)} images in "
            f"{ATTR_FILE} ({shown}{' ...' if len(missing) > 5 else ''}); it must list every "
            f"image. Restore the original file or delete it to audit without splits."
        )
    return np.asarray([split_of[f] for f in files], dtype=str)


LAYOUT = Layout(
    name="celeba",
    summary="the CelebA files (list_attr_celeba.txt and img_align_celeba/)",
    detect=lambda path: path.is_dir() and (path / ATTR_FILE).is_file(),
    read=read_celeba,
)
