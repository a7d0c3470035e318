"""Image-folder layout: one sub-folder per class, optional ``groups.csv``.

Owns: listing class folders and their images (also below ``train/``, ``val/``, ``test/``
split folders), and joining the optional ``groups.csv`` (``image`` + group columns, an
optional ``split`` column). Must not decode images or pick targets/groups beyond defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np

from audit.data._common import (
    IMAGE_SUFFIXES,
    int_column,
    normalise_labels,
    read_csv_table,
    safe_image_path,
    show_list,
)
from audit.data.dataset import Dataset, Layout
from audit.errors import DataError

GROUPS_FILE = "groups.csv"
CLASS_COLUMN = "class"
#: Top-level folder names read as splits (``DATA/train/<class>/...``) rather than classes.
SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _unreadable_folder(err: OSError) -> NoReturn:
    """``os.walk`` error hook: a folder that cannot be listed would silently lose its images."""
    raise DataError(
        f"Cannot list the image folder {err.filename!r} ({err.strerror or err}); the user "
        "running prune-audit needs read and execute permission on it (chmod u+rx)."
    ) from err


def _subdirs(path: Path) -> list[Path]:
    """Non-hidden sub-folders, sorted by name (as torchvision's ImageFolder orders classes)."""
    try:
        entries = list(path.iterdir())
    except OSError as e:
        _unreadable_folder(e)
    return sorted(
        (p for p in entries if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def _iter_images(path: Path) -> Iterator[Path]:
    """Yield image files below ``path`` (recursively, hidden entries skipped), unsorted."""
    for dirpath, dirnames, filenames in os.walk(path, onerror=_unreadable_folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / f


def _images_under(path: Path) -> list[Path]:
    """Image files below ``path`` (recursively, hidden entries skipped), sorted."""
    return sorted(_iter_images(path))


def _class_roots(root: Path) -> list[tuple[str | None, Path]]:
    """``(split, folder)`` pairs whose sub-folders are the classes."""
    top = _subdirs(root)
    if top and all(p.name.lower() in SPLIT_DIRS for p in top) and all(_subdirs(p) for p in top):
        return [(SPLIT_DIRS[p.name.lower()], p) for p in top]
    return [(None, root)]


def looks_like_folder(root: Path) -> bool:
    """Whether ``root`` has at least one sub-folder holding an image file.

    Parameters
    ----------
    root : Path
        DATA.

    Returns
    -------
    bool
        True for the image-folder layout.
    """
    for _, base in _class_roots(root):
        for d in _subdirs(base):
            if next(_iter_images(d), None) is not None:
                return True
    return False


def read_folder(root: Path) -> Dataset:
    """Read an image-folder dataset.

    Parameters
    ----------
    root : Path
        DATA, resolved: ``<class>/<image>`` (or ``<split>/<class>/<image>``), optionally
        ``groups.csv``.

    Returns
    -------
    Dataset
        ``layout="folder"``; column ``"class"`` holds 0..K-1 in sorted folder-name order
        (``class_names["class"]``); group columns come from ``groups.csv``.

    Raises
    ------
    DataError
        Images escaping DATA through symlinks; a folder that cannot be listed; a
        ``groups.csv`` that misses images, lists unknown ones, lacks the ``image`` column or
        has bad values.
    """
    bases = _class_roots(root)
    class_names = sorted({d.name for _, base in bases for d in _subdirs(base)})
    index = {name: k for k, name in enumerate(class_names)}
    ids: list[str] = []
    paths: list[Path] = []
    classes: list[int] = []
    split_list: list[str] = []
    dirs: dict[str, str] = {}
    for split, base in bases:
        for d in _subdirs(base):
            for f in _images_under(d):
                rel = f.relative_to(root).as_posix()
                rel, resolved = safe_image_path(
                    root, rel, source=f"class folder {d.name!r}", where=f"file {rel!r}", dirs=dirs
                )
                ids.append(rel)
                paths.append(resolved)
                classes.append(index[d.name])
                if split is not None:
                    split_list.append(split)
    if not ids:
        raise DataError(
            f"The class folders of {root} hold no images (looked for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}); put each class's images in its own "
            "sub-folder of DATA."
        )
    columns = {CLASS_COLUMN: np.asarray(classes, dtype=np.int64)}
    splits = np.asarray(split_list, dtype=str) if split_list else None
    groups: tuple[str, ...] = ()
    if (root / GROUPS_FILE).is_file():
        group_columns, csv_splits = _read_groups(root, ids)
        if csv_splits is not None and splits is not None:
            raise DataError(
                f"{root / GROUPS_FILE} has a 'split' column but DATA already has split "
                "folders (train/, val/, test/); keep one of the two."
            )
        if CLASS_COLUMN in group_columns:
            raise DataError(
                f"{root / GROUPS_FILE} has a column named {CLASS_COLUMN!r}, which the image "
                "folder layout reserves for the class folders; rename it."
            )
        columns.update(group_columns)
        groups = tuple(group_columns)
        splits = csv_splits if csv_splits is not None else splits
    return Dataset(
        root=root,
        layout="folder",
        ids=np.asarray(ids, dtype=str),
        columns=columns,
        splits=splits,
        default_targets=(CLASS_COLUMN,),
        default_groups=groups,
        class_names={CLASS_COLUMN: class_names},
        paths=paths,
        array=None,
    )


def _read_groups(root: Path, ids: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Group columns (and optional splits) of ``groups.csv``, in the order of ``ids``."""
    path = root / GROUPS_FILE
    source = str(path)
    header, rows, lines = read_csv_table(path)
    if "image" not in header:
        raise DataError(
            f"{source} has no 'image' column (columns: {', '.join(header)}); it needs a column "
            "named exactly 'image' with paths relative to DATA (e.g. 'cat/001.png') plus one "
            "integer column per group attribute."
        )
    names = [h for h in header if h not in ("image", "split")]
    if not names:
        raise DataError(
            f"{source} has no group columns (only {', '.join(header)}); add one integer column "
            "per protected attribute, or delete the file."
        )
    col = {h: j for j, h in enumerate(header)}
    row_of: dict[str, int] = {}
    dirs: dict[str, str] = {}
    for i, row in enumerate(rows):
        rel, _ = safe_image_path(
            root, row[col["image"]], source=source, where=f"line {lines[i]}", dirs=dirs
        )
        if rel in row_of:
            raise DataError(
                f"{source} lists {rel!r} twice (lines {lines[row_of[rel]]} and {lines[i]}); "
                "each image must appear once."
            )
        row_of[rel] = i
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise DataError(
            f"{source} has no row for {len(missing)} of the {len(ids)} images in the class "
            f"folders: {show_list(missing)}. Add a row for every image (paths relative to "
            "DATA), or delete groups.csv to audit without groups."
        )
    known = set(ids)
    extra = [r for r in row_of if r not in known]
    if extra:
        raise DataError(
            f"{source} lists {len(extra)} image(s) that are not in any class folder: "
            f"{show_list(extra)}. Fix the paths (relative to DATA, e.g. 'cat/001.png') or "
            "remove those rows."
        )
    order = [row_of[i] for i in ids]
    ordered_lines = [lines[r] for r in order]

    def where(k: int) -> str:
        return f"line {ordered_lines[k]}"

    columns: dict[str, np.ndarray] = {}
    for name in names:
        cells = [rows[r][col[name]] for r in order]
        raw = int_column(cells, column=name, source=source, where=where)
        columns[name] = normalise_labels(raw, column=name, source=source, where=where)
    splits = None
    if "split" in col:
        cells = [rows[r][col["split"]] for r in order]
        empty = [k for k, c in enumerate(cells) if not c]
        if empty:
            raise DataError(
                f"Column 'split' of {source} is empty at {where(empty[0])}; every row needs a "
                "split name (train, val or test), or drop the column."
            )
        splits = np.asarray(cells, dtype=str)
    return columns, splits


LAYOUT = Layout(
    name="folder",
    summary="one sub-folder of images per class",
    detect=lambda path: path.is_dir() and looks_like_folder(path),
    read=read_folder,
)
