"""Manifest CSV layout: ``DATA/labels.csv`` (or ``--labels FILE``) with an ``image`` column.

Owns: reading and validating the manifest (image paths relative to DATA, an optional
``split`` column, integer label columns). Must not decode images or pick targets/groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit.data._common import (
    check_unique_ids,
    int_column,
    normalise_labels,
    read_csv_table,
    require_files,
    safe_image_path,
)
from audit.data.dataset import Dataset, Layout
from audit.errors import DataError

LABELS_FILE = "labels.csv"
IMAGE_COLUMN = "image"
SPLIT_COLUMN = "split"


def read_manifest(root: Path, labels_file: Path) -> Dataset:
    """Read a manifest CSV whose image paths are relative to ``root``.

    Parameters
    ----------
    root : Path
        DATA, resolved.
    labels_file : Path
        The CSV file: header ``image[,split],ATTR,...``; one row per image.

    Returns
    -------
    Dataset
        ``layout="manifest"``; every non-``image``/``split`` column is an attribute and a
        default target; there are no default groups (the user passes ``--group``).

    Raises
    ------
    DataError
        Missing file or ``image`` column, no attribute column, empty or non-integer cells,
        label values outside the accepted sets, paths escaping DATA, missing images,
        duplicate rows.
    """
    if not labels_file.is_file():
        raise DataError(
            f"Labels file {str(labels_file)!r} does not exist or is not a file; pass an "
            "existing CSV with --labels, or put labels.csv in DATA."
        )
    source = str(labels_file)
    header, rows, lines = read_csv_table(labels_file)
    if IMAGE_COLUMN not in header:
        raise DataError(
            f"{source} has no {IMAGE_COLUMN!r} column (columns: {', '.join(header)}); the "
            f"manifest needs a column named exactly {IMAGE_COLUMN!r} holding image paths "
            "relative to DATA. Rename the path column to 'image'."
        )
    attrs = [h for h in header if h not in (IMAGE_COLUMN, SPLIT_COLUMN)]
    if not attrs:
        raise DataError(
            f"{source} has no label columns (only {', '.join(header)}); add one integer "
            "column per attribute (0/1, -1/1, or classes 0..K-1)."
        )
    if not rows:
        raise DataError(f"{source} has a header but no rows; add one row per image.")

    def where(i: int) -> str:
        return f"line {lines[i]}"

    col = {h: j for j, h in enumerate(header)}
    ids: list[str] = []
    paths: list[Path] = []
    dirs: dict[str, str] = {}
    for i, row in enumerate(rows):
        rel, resolved = safe_image_path(
            root, row[col[IMAGE_COLUMN]], source=source, where=where(i), dirs=dirs
        )
        ids.append(rel)
        paths.append(resolved)
    check_unique_ids(ids, source=source)

    splits = None
    if SPLIT_COLUMN in col:
        cells = [row[col[SPLIT_COLUMN]] for row in rows]
        empty = [i for i, c in enumerate(cells) if not c]
        if empty:
            raise DataError(
                f"Column {SPLIT_COLUMN!r} of {source} is empty at {where(empty[0])}; every row "
                "needs a split name (train, val or test), or drop the column to audit all rows."
            )
        splits = np.asarray(cells, dtype=str)

    columns: dict[str, np.ndarray] = {}
    for name in attrs:
        raw = int_column([row[col[name]] for row in rows], column=name, source=source, where=where)
        columns[name] = normalise_labels(raw, column=name, source=source, where=where)

    require_files(paths, ids, root=root, source=source)
    return Dataset(
        root=root,
        layout="manifest",
        ids=np.asarray(ids, dtype=str),
        columns=columns,
        splits=splits,
        default_targets=tuple(attrs),
        default_groups=(),
        class_names={},
        paths=paths,
        array=None,
    )


LAYOUT = Layout(
    name="manifest",
    summary="a labels.csv manifest (column 'image' plus label columns)",
    detect=lambda path: path.is_dir() and (path / LABELS_FILE).is_file(),
    read=lambda path: read_manifest(path, path / LABELS_FILE),
)
