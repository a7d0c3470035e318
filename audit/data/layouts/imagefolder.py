"""Hugging Face ``imagefolder`` layout: image files plus ``metadata.csv`` or ``metadata.jsonl``.

Owns: finding the metadata files (in DATA or folders up to three levels below it: one per
split folder, as ``train/metadata.csv``, or one at the top), reading their ``file_name``
column (paths relative to the metadata file's folder) and label columns, the split (a
``split`` column, else the image's folders: ``train/``, ``validation/``, ``test/``), and
checking that every image under DATA has exactly one row. Must not decode images or pick
targets/groups beyond defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audit.data._common import (
    IMAGE_SUFFIXES,
    MISSING,
    check_unique_ids,
    find_files,
    parse_int_cell,
    read_csv_table,
    require_files,
    safe_image_path,
    show_list,
    split_from_path,
    typed_label_columns,
)
from audit.data.dataset import Dataset, Layout
from audit.errors import DataError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
FILE_COLUMN = "file_name"
SPLIT_COLUMN = "split"


def _metadata_files(root: Path) -> list[Path]:
    """``metadata.csv``/``metadata.jsonl`` files in DATA and up to three folders below, sorted."""
    return [p for p in find_files(root, (".csv", ".jsonl")) if p.name in METADATA_NAMES]


def detect(path: Path) -> bool:
    """Whether DATA is a folder holding ``metadata.csv``/``metadata.jsonl`` (up to 3 deep).

    Parameters
    ----------
    path : Path
        DATA, resolved.

    Returns
    -------
    bool
    """
    return path.is_dir() and bool(_metadata_files(path))


def _csv_records(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    header, rows, lines = read_csv_table(path)
    records: list[dict[str, object]] = []
    for row in rows:
        rec: dict[str, object] = {}
        for h, cell in zip(header, row, strict=True):
            if h in (FILE_COLUMN, SPLIT_COLUMN):
                rec[h] = cell
                continue
            value = parse_int_cell(cell)
            rec[h] = value if value is not None else (cell if cell else MISSING)
        records.append(rec)
    return records, [f"line {n}" for n in lines]


def _jsonl_records(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    records: list[dict[str, object]] = []
    where: list[str] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read {path} as UTF-8 text ({type(e).__name__}: {e}); check that it exists "
            "and is readable JSON Lines."
        ) from e
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            raise DataError(
                f"Line {n} of {path} is not valid JSON ({e}); metadata.jsonl holds one JSON "
                'object per line ({"file_name": "0001.png", "Smiling": 1}). Fix that line.'
            ) from e
        if not isinstance(value, dict):
            raise DataError(
                f"Line {n} of {path} holds a JSON {type(value).__name__}, not an object; write "
                'one object per line ({"file_name": "0001.png", "Smiling": 1}).'
            )
        records.append(value)
        where.append(f"line {n}")
    return records, where


def read_imagefolder(root: Path) -> Dataset:
    """Read an ``imagefolder`` data set with metadata files.

    Parameters
    ----------
    root : Path
        DATA, resolved.

    Returns
    -------
    Dataset
        ``layout="imagefolder"``; ids are image paths relative to DATA; every column whose
        values are all integers (or booleans, in JSON Lines) is a label and a default target;
        columns with no integer value (captions, text) are not labels; no default groups.

    Raises
    ------
    DataError
        A folder with both metadata files; a missing ``file_name`` column or value; paths
        escaping DATA; missing, duplicate or unlisted images; bad label values; a split that
        some rows name and others do not.
    """
    metas = _metadata_files(root)
    folders = [m.parent for m in metas]
    twice = sorted({str(f.relative_to(root)) for f in folders if folders.count(f) > 1})
    if twice:
        raise DataError(
            f"The folder {twice[0]!r} of DATA ({root}) holds both metadata.csv and "
            "metadata.jsonl; keep one of them."
        )
    records: list[dict[str, object]] = []
    where: list[str] = []
    ids: list[str] = []
    paths: list[Path] = []
    dirs: dict[str, str] = {}
    for meta in metas:
        recs, pos = _csv_records(meta) if meta.suffix == ".csv" else _jsonl_records(meta)
        prefix = meta.parent.relative_to(root).as_posix()
        for rec, p in zip(recs, pos, strict=True):
            name = rec.get(FILE_COLUMN, MISSING)
            if not isinstance(name, str) or not name.strip():
                raise DataError(
                    f"{p.capitalize()} of {meta} has no {FILE_COLUMN!r} value; "
                    f"every row names its image in a {FILE_COLUMN!r} column, relative to the "
                    "metadata file's folder (e.g. '0001.png')."
                )
            # Relative to the metadata file's folder: refuse absolute and '..' names there,
            # then check the path from DATA (symlinks out of DATA) as every layout does.
            clean, _ = safe_image_path(meta.parent, name, source=str(meta), where=p)
            rel = f"{prefix}/{clean}" if prefix != "." else clean
            rel, resolved = safe_image_path(root, rel, source=str(meta), where=p, dirs=dirs)
            ids.append(rel)
            paths.append(resolved)
            records.append(rec)
            where.append(f"{p} of {meta.relative_to(root)}")
    if not ids:
        raise DataError(
            f"The metadata files of DATA ({root}) have no rows; add one row per image with "
            f"its {FILE_COLUMN!r}."
        )
    check_unique_ids(ids, source="the metadata files of DATA")
    require_files(paths, ids, root=root, source="the metadata files")
    _check_all_listed(root, set(ids))
    source = "the metadata files of DATA"
    columns = typed_label_columns(
        records, skip=(FILE_COLUMN, SPLIT_COLUMN), source=source, where=lambda i: where[i]
    )
    if not columns:
        raise DataError(
            f"The metadata files of DATA ({root}) have no label column; add one integer column "
            "per attribute (0/1, -1/1, or classes 0..K-1) next to file_name."
        )
    return Dataset(
        root=root,
        layout="imagefolder",
        ids=np.asarray(ids, dtype=str),
        columns=columns,
        splits=_splits(records, ids, where),
        default_targets=tuple(columns),
        default_groups=(),
        class_names={},
        paths=paths,
        array=None,
    )


def _check_all_listed(root: Path, listed: set[str]) -> None:
    images = [
        p.relative_to(root).as_posix()
        for p in find_files(root, tuple(sorted(IMAGE_SUFFIXES)), depth=8)
    ]
    unlisted = sorted(i for i in images if i not in listed)
    if unlisted:
        raise DataError(
            f"{len(unlisted)} image(s) under DATA ({root}) have no row in any metadata file: "
            f"{show_list(unlisted)}. Add a row for each (file_name relative to the metadata "
            "file's folder), or move them out of DATA."
        )


def _splits(
    records: list[dict[str, object]], ids: list[str], where: list[str]
) -> np.ndarray | None:
    has = [SPLIT_COLUMN in r for r in records]
    if any(has):
        bad = [
            i
            for i, r in enumerate(records)
            if type(r.get(SPLIT_COLUMN)) is not str or not r[SPLIT_COLUMN]
        ]
        if bad:
            raise DataError(
                f"Column {SPLIT_COLUMN!r} is empty or missing at {where[bad[0]]}; every row needs "
                "a split name (train, val or test) once one has, or drop the column."
            )
        return np.asarray([r[SPLIT_COLUMN] for r in records], dtype=str)
    named = [split_from_path(i.rpartition("/")[0], source="DATA's images") for i in ids]
    if all(s is None for s in named):
        return None
    unnamed = [ids[i] for i, s in enumerate(named) if s is None]
    if unnamed:
        raise DataError(
            f"Some images of DATA are in split folders (train/, validation/, test/) and "
            f"{len(unnamed)} are not: {show_list(unnamed)}. Put every image in a split folder, "
            "add a 'split' column, or none of either."
        )
    return np.asarray(named, dtype=str)


LAYOUT = Layout(
    name="imagefolder",
    summary="a Hugging Face imagefolder (images plus metadata.csv or metadata.jsonl with a "
    "'file_name' column)",
    detect=detect,
    read=read_imagefolder,
)
