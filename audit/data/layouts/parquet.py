"""Parquet layout, as the Hugging Face Hub serves every dataset: image struct + label columns.

Owns: finding ``*.parquet`` files (DATA itself, or up to three folders below it:
``data/train-00000-of-00002.parquet``, ``default/test/0000.parquet``), choosing the image
column (a struct ``{bytes, path}``, the ``datasets`` Image feature), reading the integer and
boolean label columns and the split (a ``split`` column, else the file path), and the
``ImageStore`` that reads the encoded images of any subset of rows one row group at a time.
Reads with pyarrow alone. Must not decode images or pick targets/groups beyond defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.data._common import (
    find_files,
    normalise_labels,
    safe_member_file,
    show_list,
    split_from_path,
)
from audit.data.dataset import Dataset, ImageStore, Layout
from audit.errors import DataError

SUFFIX = ".parquet"
SPLIT_COLUMN = "split"
#: Preferred image column when a file has several image structs (the ``datasets`` default).
IMAGE_COLUMN = "image"
#: A column chunk may declare this much more uncompressed than compressed data (plus
#: ``_BOMB_SLACK``) before it is refused as a decompression bomb: encoded images and small
#: integer labels never come near it.
_BOMB_RATIO = 64
_BOMB_SLACK = 64 << 20

_READ_ERRORS = (OSError, pa.ArrowException)


def _is_image_struct(t: pa.DataType) -> bool:
    """A struct with a binary ``bytes`` field: how ``datasets`` stores an Image feature."""
    if not pa.types.is_struct(t):
        return False
    names = [t.field(i).name for i in range(t.num_fields)]
    if "bytes" not in names:
        return False
    inner = t.field(names.index("bytes")).type
    return pa.types.is_binary(inner) or pa.types.is_large_binary(inner)


def _is_label(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _hf_features(schema: pa.Schema) -> dict[str, dict[str, object]]:
    """The ``datasets`` feature description stored in the schema metadata, if any (data only)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return {}
    try:
        info = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    features = info.get("info", {}).get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        return {}
    return {k: v for k, v in features.items() if isinstance(v, dict)}


def _open(path: Path, rel: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except _READ_ERRORS as e:
        raise DataError(
            f"Cannot read {rel!r} in DATA as a Parquet file ({type(e).__name__}: {e}); the "
            "file is truncated, corrupt or not Parquet. Re-download or re-export it, or move "
            "it out of DATA."
        ) from e


def _check_sizes(pf: pq.ParquetFile, rel: str) -> None:
    """Refuse column chunks whose declared uncompressed size is out of proportion."""
    md = pf.metadata
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            if col.total_uncompressed_size > _BOMB_RATIO * col.total_compressed_size + _BOMB_SLACK:
                raise DataError(
                    f"Refusing to read column {col.path_in_schema!r} of {rel!r} (row group {g}): "
                    f"it declares {col.total_uncompressed_size} bytes uncompressed from "
                    f"{col.total_compressed_size} stored, a decompression bomb or a corrupt "
                    "file. Re-export the file, or move it out of DATA."
                )


def _image_column(schema: pa.Schema, features: dict[str, dict[str, object]], rel: str) -> str:
    declared = [n for n, f in features.items() if f.get("_type") == "Image"]
    candidates = [
        f.name for f in schema if _is_image_struct(f.type) and (not declared or f.name in declared)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if IMAGE_COLUMN in candidates:
        return IMAGE_COLUMN
    if not candidates:
        raise DataError(
            f"{rel!r} has no image column (columns: {', '.join(schema.names)}); expected a "
            "struct column {bytes, path} holding encoded images, as Hugging Face datasets "
            "store an Image feature. Export with the image column cast to datasets.Image(), "
            "or use another layout (a manifest CSV with image files)."
        )
    raise DataError(
        f"{rel!r} has several image columns ({', '.join(candidates)}) and none is named "
        f"{IMAGE_COLUMN!r}; it is not clear which to audit. Drop the others or rename the "
        f"one to audit to {IMAGE_COLUMN!r}."
    )


def detect(path: Path) -> bool:
    """Whether DATA is a ``.parquet`` file or a folder with some up to three levels below.

    Parameters
    ----------
    path : Path
        DATA, resolved.

    Returns
    -------
    bool
    """
    if path.is_file():
        return path.suffix.lower() == SUFFIX
    return bool(find_files(path, SUFFIX))


def read_parquet(path: Path) -> Dataset:
    """Read a Parquet dataset: labels and splits now, images later through its store.

    Parameters
    ----------
    path : Path
        DATA, resolved: a ``.parquet`` file, or a folder of them (every file found up to
        three folders below, sorted by path, is one part of the data set; all need the same
        columns).

    Returns
    -------
    Dataset
        ``layout="parquet"``; ids ``"<file>#<row>"`` (file relative to DATA, row within
        it); every integer or boolean column is a label (booleans as 0/1, ``datasets``
        ClassLabel names in ``class_names``) and a default target; text, float and nested
        columns other than the image are not labels; no default groups. Splits come from a
        ``split`` column, else from the file paths (``train``/``validation``/``test``
        words), else there are none.

    Raises
    ------
    DataError
        Unreadable or corrupt files, files with different columns, no (or an ambiguous)
        image column, no label column, nulls in label or split columns, files that link
        outside DATA, decompression bombs, a split named by some paths only.
    """
    root = path.parent if path.is_file() else path
    files = [path] if path.is_file() else find_files(path, SUFFIX)
    rels = [safe_member_file(root, f, what="Parquet file") for f in files]
    handles = [_open(f, r) for f, r in zip(files, rels, strict=True)]
    first = handles[0].schema_arrow
    for pf, rel in zip(handles[1:], rels[1:], strict=True):
        if not pf.schema_arrow.equals(first, check_metadata=False):
            raise DataError(
                f"{rel!r} and {rels[0]!r} in DATA have different columns ("
                f"{', '.join(pf.schema_arrow.names)} vs {', '.join(first.names)}); every "
                "Parquet file of a data set needs the same columns and types. Pass the folder "
                "of one configuration (one subset) as DATA."
            )
    for pf, rel in zip(handles, rels, strict=True):
        _check_sizes(pf, rel)
    features = _hf_features(first)
    image = _image_column(first, features, rels[0])
    attrs = [f.name for f in first if f.name not in (image, SPLIT_COLUMN) and _is_label(f.type)]
    if not attrs:
        raise DataError(
            f"{rels[0]!r} has no label column (columns: {', '.join(first.names)}); a label "
            "column is an integer or boolean column (0/1, -1/1, true/false, or classes "
            "0..K-1). Add one per attribute."
        )
    has_split = SPLIT_COLUMN in first.names
    if has_split and not _is_text(first.field(SPLIT_COLUMN).type):
        raise DataError(
            f"Column {SPLIT_COLUMN!r} of {rels[0]!r} has type {first.field(SPLIT_COLUMN).type}; "
            "it must hold split names as text (train, val, test). Cast it to string."
        )
    counts = [pf.metadata.num_rows for pf in handles]
    if sum(counts) == 0:
        raise DataError(f"The Parquet files of DATA ({root}) hold no rows; add the data.")

    cells, split_parts = _read_labels(handles, rels, attrs, has_split)
    bounds = np.cumsum([0, *counts])

    def where(i: int) -> str:
        f = int(np.searchsorted(bounds, i, side="right") - 1)
        return f"file {rels[f]!r} row {i - int(bounds[f])} (0-based)"

    source = "the Parquet files of DATA" if len(rels) > 1 else repr(rels[0])
    columns = {
        a: normalise_labels(np.concatenate(cells[a]), column=a, source=source, where=where)
        for a in attrs
    }
    if has_split:
        splits: np.ndarray | None = np.concatenate(split_parts)
    else:
        splits = _splits_from_paths(rels, counts)
    class_names = {
        a: [str(x) for x in features[a]["names"]]  # type: ignore[union-attr]
        for a in attrs
        if features.get(a, {}).get("_type") == "ClassLabel"
        and isinstance(features[a].get("names"), list)
    }
    ids = np.asarray([f"{rel}#{r}" for rel, n in zip(rels, counts, strict=True) for r in range(n)])
    return Dataset(
        root=root,
        layout="parquet",
        ids=ids,
        columns=columns,
        splits=splits,
        default_targets=tuple(attrs),
        default_groups=(),
        class_names=class_names,
        paths=None,
        array=None,
        store=ParquetStore(files, rels, handles, image),
    )


def _read_labels(
    handles: list[pq.ParquetFile], rels: list[str], attrs: list[str], has_split: bool
) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """Read the label (and split) columns of every file, refusing nulls."""
    cells: dict[str, list[np.ndarray]] = {a: [] for a in attrs}
    split_parts: list[np.ndarray] = []
    for pf, rel in zip(handles, rels, strict=True):
        try:
            table = pf.read(columns=attrs + ([SPLIT_COLUMN] if has_split else []))
        except _READ_ERRORS as e:
            raise DataError(
                f"Cannot read the label columns of {rel!r} in DATA ({type(e).__name__}: {e}); "
                "the file is corrupt. Re-download or re-export it."
            ) from e
        for name in attrs + ([SPLIT_COLUMN] if has_split else []):
            column = table.column(name)
            if column.null_count:
                row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"Column {name!r} of {rel!r} is null at row {row} (0-based); every row "
                    "needs a value there. Fill it in, or remove the row."
                )
            if name == SPLIT_COLUMN:
                split_parts.append(np.asarray(column.to_pylist(), dtype=str))
            else:
                cells[name].append(column.to_numpy().astype(np.int64))

    return cells, split_parts


def _splits_from_paths(rels: list[str], counts: list[int]) -> np.ndarray | None:
    named = [split_from_path(r, source="DATA's Parquet files") for r in rels]
    if all(s is None for s in named):
        return None
    if any(s is None for s in named):
        unnamed = [r for r, s in zip(rels, named, strict=True) if s is None]
        raise DataError(
            f"Some Parquet files of DATA name a split in their path and {len(unnamed)} do not: "
            f"{show_list(unnamed)}. Name every file's split (train-00000-of-00001.parquet, "
            "test/0000.parquet), add a 'split' column, or pass only one split's files."
        )
    return np.repeat(np.asarray(named, dtype=str), counts)


class ParquetStore(ImageStore):
    """Encoded images of a Parquet data set, read one row group of the image column at a time.

    Rows are numbered across the files in order. Reading a subset of rows reads only the
    row groups that hold them (the image column alone), so memory holds one row group's
    encoded images at a time (``datasets`` writes 100 images per row group).

    Parameters
    ----------
    files : list of Path
        The files, in row order.
    rels : list of str
        Their paths relative to DATA, for messages.
    handles : list of pyarrow.parquet.ParquetFile
        Open files (their metadata gives the row-group boundaries).
    image : str
        The image struct column.
    """

    def __init__(
        self, files: list[Path], rels: list[str], handles: list[pq.ParquetFile], image: str
    ) -> None:
        self.files = files
        self.rels = rels
        self.image = image
        self.starts = np.cumsum([0, *(pf.metadata.num_rows for pf in handles)])
        self.groups = [
            np.cumsum([0, *(md.row_group(g).num_rows for g in range(md.num_row_groups))])
            for md in (pf.metadata for pf in handles)
        ]

    def _locate(self, row: int) -> tuple[int, int]:
        f = int(np.searchsorted(self.starts, row, side="right") - 1)
        return f, row - int(self.starts[f])

    def where(self, row: int) -> str:
        """Say which file and row hold ``row``'s image."""
        f, r = self._locate(row)
        return f"{self.rels[f]!r} row {r} (column {self.image!r})"

    def read(self, rows: np.ndarray) -> Iterator[list[tuple[int, bytes | None]]]:
        """Yield the encoded images of ``rows``, one batch per row group read.

        See :meth:`audit.data.dataset.ImageStore.read`; a row whose image is null (no bytes
        stored) yields None.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        file_of = np.searchsorted(self.starts, sorted_rows, side="right") - 1
        for f in np.unique(file_of):
            pick = np.flatnonzero(file_of == f)
            local = sorted_rows[pick] - self.starts[f]
            group_of = np.searchsorted(self.groups[f], local, side="right") - 1
            try:
                pf = pq.ParquetFile(self.files[f])
                for g in np.unique(group_of):
                    in_group = np.flatnonzero(group_of == g)
                    table = pf.read_row_group(int(g), columns=[self.image])
                    column = table.column(0).combine_chunks()
                    data = column.field("bytes")
                    offsets = local[in_group] - self.groups[f][g]
                    yield [
                        (
                            int(order[pick[i]]),
                            None if not column[int(o)].is_valid else data[int(o)].as_py(),
                        )
                        for i, o in zip(in_group, offsets, strict=True)
                    ]
            except _READ_ERRORS as e:
                raise DataError(
                    f"Cannot read the images of {self.rels[f]!r} in DATA ({type(e).__name__}: "
                    f"{e}); the file changed or is corrupt since its labels were read. "
                    "Re-download or re-export it."
                ) from e


LAYOUT = Layout(
    name="parquet",
    summary="Parquet files as the Hugging Face Hub serves them (an image struct column plus "
    "integer label columns)",
    detect=detect,
    read=read_parquet,
    file_kind="a .parquet file",
)
