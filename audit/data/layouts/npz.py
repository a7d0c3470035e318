"""Tensor-bundle layout: one ``.npz`` with ``images``, ``labels``, ``groups`` and name arrays.

Owns: reading the bundle without pickle, memory-mapping ``images`` when the archive stores
it uncompressed (``np.savez``), and validating shapes, dtypes and label values. Must not
decode or resize images (``audit.data.cache`` does) or touch devices.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.data._common import normalise_labels
from audit.data.dataset import Dataset, Layout
from audit.errors import DataError

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"


def _memmap_member(path: Path, name: str) -> np.ndarray | None:
    """Memory-map ``name`` (a ``.npy`` member) of an npz archive if it is stored uncompressed.

    ``np.load`` ignores ``mmap_mode`` for ``.npz`` files and would read the whole image array
    into memory; an uncompressed member is a plain ``.npy`` file at a known offset, so it can
    be mapped directly. Returns None when the member is compressed (the caller then loads it).
    """
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(name)
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        offset = info.header_offset
    with path.open("rb") as f:
        f.seek(offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_MAGIC:
            return None
        f.seek(offset + _LOCAL_HEADER.size + fields[9] + fields[10])
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        if dtype.hasobject:
            return None
        data_offset = f.tell()
    return np.memmap(
        path,
        dtype=dtype,
        mode="r",
        offset=data_offset,
        shape=shape,
        order="F" if fortran else "C",
    )


def _names(z: np.lib.npyio.NpzFile, key: str, count: int, source: str) -> list[str]:
    """Read a string array member as a list of ``count`` unique, non-empty names."""
    arr = np.asarray(z[key])
    if arr.dtype.kind not in "US" or arr.ndim != 1:
        raise DataError(
            f"{key!r} in {source} must be a 1-D string array (dtype {arr.dtype}, shape "
            f"{arr.shape} given); save it as np.array([...], dtype=str)."
        )
    names = [s.decode() if isinstance(s, bytes) else str(s) for s in arr.tolist()]
    if len(names) != count:
        raise DataError(
            f"{key!r} in {source} has {len(names)} entries but {count} are needed (one per "
            "column of the matching array, or one per image for 'ids'), in order."
        )
    if any(not n for n in names) or len(set(names)) != len(names):
        raise DataError(
            f"{key!r} in {source} has empty or repeated names ({names!r}); names must be "
            "unique and non-empty."
        )
    return names


def _label_matrix(z: np.lib.npyio.NpzFile, key: str, n: int, source: str) -> np.ndarray:
    """Read ``labels``/``groups`` as int64 ``(N, A)`` (integral floats and bools accepted)."""
    arr = np.asarray(z[key])
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(
            f"{key!r} in {source} has shape {arr.shape}; expected ({n},) or ({n}, columns), one "
            "row per image."
        )
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise DataError(
                f"{key!r} in {source} has value {arr[r, c].item()!r} at row {r} (0-based), column "
                f"{c}; labels must be integers: 0/1 or -1/1 for attributes, 0..K-1 for classes."
            )
        return arr.astype(np.int64)
    raise DataError(
        f"{key!r} in {source} has dtype {arr.dtype}; labels must be an integer (or bool) array."
    )


def read_npz(path: Path) -> Dataset:
    """Read an ``.npz`` tensor bundle.

    Parameters
    ----------
    path : Path
        The bundle, resolved. Members: ``images`` uint8 NHWC or NCHW (1 or 3 channels; a 3-D
        ``(N, H, W)`` array is read as one channel), ``labels`` (N, A) or (N,),
        ``label_names`` (A,), optional ``groups`` (N, G) or (N,) with ``group_names`` (G,),
        optional ``ids`` (N,) and ``split`` (N,) string arrays.

    Returns
    -------
    Dataset
        ``layout="npz"``; ``array`` is NCHW (a view of a memory map when ``images`` is
        stored uncompressed); default targets ``label_names``, default groups ``group_names``.

    Raises
    ------
    DataError
        A missing member, a pickled (object) member, a wrong shape or dtype, bad label values.
    """
    source = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"Cannot read {source} as an .npz bundle ({type(e).__name__}: {e}); re-save it with "
            "np.savez(path, images=..., labels=..., label_names=..., ...)."
        ) from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{source} is a single .npy array, not an .npz bundle of named arrays.")
    with z:
        _check_members(set(z.files), source)
        try:
            m = _read_members(z, path, source)
        except ValueError as e:
            # np.load refuses object (pickled) members when allow_pickle=False.
            raise DataError(
                f"{source} has a member that can only be read by unpickling ({e}); store names "
                "and ids as string arrays (np.array([...], dtype=str)), never object arrays."
            ) from e

    images = _to_nchw(m.images, source)
    clash = sorted(set(m.label_names) & set(m.group_names))
    if clash:
        raise DataError(
            f"{source} uses the name(s) {', '.join(map(repr, clash))} in both 'label_names' and "
            "'group_names'; every column needs its own name."
        )
    columns: dict[str, np.ndarray] = {}
    for matrix, names in ((m.labels, m.label_names), (m.groups, m.group_names)):
        for j, name in enumerate(names):
            columns[name] = normalise_labels(
                matrix[:, j], column=name, source=source, where=lambda i: f"row {i} (0-based)"
            )
    n = m.images.shape[0]
    return Dataset(
        root=path.parent,
        layout="npz",
        ids=np.asarray(m.ids if m.ids is not None else [f"row-{i}" for i in range(n)], dtype=str),
        columns=columns,
        splits=m.splits,
        default_targets=tuple(m.label_names),
        default_groups=tuple(m.group_names),
        class_names={},
        paths=None,
        array=images,
    )


def _check_members(keys: set[str], source: str) -> None:
    """The required members are present, and groups come with their names."""
    required = {"images", "labels", "label_names"}
    if not required <= keys:
        raise DataError(
            f"{source} lacks {', '.join(sorted(required - keys))} (members: "
            f"{', '.join(sorted(keys)) or 'none'}); an npz bundle needs 'images' (uint8 NHWC "
            "or NCHW), 'labels' and 'label_names', optionally 'groups'/'group_names', "
            "'ids' and 'split'."
        )
    if ("groups" in keys) != ("group_names" in keys):
        raise DataError(
            f"{source} has only one of 'groups' and 'group_names'; give both (or neither)."
        )


@dataclass(frozen=True)
class _Members:
    """The bundle's arrays, read and shape-checked (images still as stored)."""

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    groups: np.ndarray
    group_names: list[str]
    ids: list[str] | None
    splits: np.ndarray | None


def _read_members(z: np.lib.npyio.NpzFile, path: Path, source: str) -> _Members:
    """Read every member (``images`` memory-mapped when stored uncompressed)."""
    keys = set(z.files)
    try:
        images = _memmap_member(path, "images.npy")
    except (OSError, ValueError, struct.error, zipfile.BadZipFile):
        images = None  # not mappable: np.load reads it and reports what is wrong
    if images is None:
        images = z["images"]
    labels = _label_matrix(z, "labels", images.shape[0], source)
    label_names = _names(z, "label_names", labels.shape[1], source)
    group_names: list[str] = []
    groups = np.zeros((images.shape[0], 0), dtype=np.int64)
    if "groups" in keys:
        groups = _label_matrix(z, "groups", images.shape[0], source)
        group_names = _names(z, "group_names", groups.shape[1], source)
    n = images.shape[0]
    ids = None
    if "ids" in keys:
        ids = [str(s) for s in _names(z, "ids", n, source)]
    splits = None
    if "split" in keys:
        split_arr = np.asarray(z["split"])
        if split_arr.dtype.kind not in "US" or split_arr.shape != (n,):
            raise DataError(
                f"'split' in {source} must be a ({n},) string array (dtype "
                f"{split_arr.dtype}, shape {split_arr.shape} given)."
            )
        splits = np.asarray(split_arr, dtype=str)
    return _Members(images, labels, label_names, groups, group_names, ids, splits)


def _to_nchw(images: np.ndarray, source: str) -> np.ndarray:
    """Check dtype and channels; return an NCHW view (no copy, memory maps stay mapped)."""
    if images.dtype != np.uint8:
        raise DataError(
            f"'images' in {source} has dtype {images.dtype}; the bundle must hold uint8 pixels "
            "(0..255). Convert with (x * 255).round().astype(np.uint8) if they are 0..1 floats."
        )
    if images.ndim == 3:
        return images[:, None, :, :]
    if images.ndim == 4:
        if images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
            return images
        if images.shape[3] in (1, 3):
            return images.transpose(0, 3, 1, 2)
    raise DataError(
        f"'images' in {source} has shape {images.shape}; expected (N, H, W, C) or (N, C, H, W) "
        "with C = 1 or 3 channels, or (N, H, W) grayscale."
    )


def _bundles(folder: Path) -> list[Path]:
    """The ``.npz`` files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.glob("*.npz") if p.is_file())


def detect(path: Path) -> bool:
    """Whether DATA is an ``.npz`` bundle, or a folder holding one (or several, see ``read``).

    Parameters
    ----------
    path : Path
        DATA, resolved.

    Returns
    -------
    bool
        True for a ``.npz`` file; for a folder with exactly one bundle; and for a folder with
        several bundles and no ``labels.csv`` (``read`` then says to pick one). A manifest
        that keeps several bundles next to its ``labels.csv`` is read as a manifest.
    """
    if path.is_file():
        return path.suffix.lower() == ".npz"
    bundles = _bundles(path)
    return len(bundles) == 1 or (len(bundles) > 1 and not (path / "labels.csv").is_file())


def read(path: Path) -> Dataset:
    """Read DATA as an npz bundle: the file itself, or the one bundle in the folder.

    Parameters
    ----------
    path : Path
        DATA, resolved.

    Returns
    -------
    Dataset
        See :func:`read_npz`.

    Raises
    ------
    DataError
        When the folder holds no bundle or several (which one to audit is not clear).
    """
    if path.is_file():
        return read_npz(path)
    bundles = _bundles(path)
    if len(bundles) != 1:
        raise DataError(
            f"DATA ({path}) holds {len(bundles)} .npz files "
            f"({', '.join(b.name for b in bundles[:5])}); it is not clear which one to audit. "
            "Pass the .npz file itself as DATA."
        )
    return read_npz(bundles[0])


LAYOUT = Layout(
    name="npz",
    summary="an .npz bundle with 'images', 'labels' and 'label_names'",
    detect=detect,
    read=read,
    file_kind="an .npz bundle",
)
