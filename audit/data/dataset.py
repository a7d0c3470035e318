"""The ``Dataset`` record and layout detection (SPEC §3.2).

Owns: the in-memory description of a labelled image set (ids, int64 label columns, splits,
default targets/groups, image paths or an image array) and choosing which layout reader to
use for a DATA path. Must not decode images (``audit.data.cache`` does), touch devices, or
choose targets/groups for a run beyond the layout's defaults (the runner does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from audit.errors import DataError

Layout = Literal["manifest", "celeba", "folder", "npz"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set, as read from DATA.

    Attributes
    ----------
    root : Path
        DATA, resolved (for the npz layout: the folder holding the ``.npz`` file).
    layout : {"manifest", "celeba", "folder", "npz"}
        Which layout was detected.
    ids : numpy.ndarray
        ``(N,)`` str: image path relative to ``root`` (POSIX separators), or the bundle's
        ``ids`` / ``"row-<i>"`` for npz.
    columns : dict of str to numpy.ndarray
        Every attribute column (targets and groups alike), ``(N,)`` int64. Binary -1/1 columns
        are normalised to 0/1 (-1 → 0); non-negative integer classes are kept as they are.
    splits : numpy.ndarray or None
        ``(N,)`` str split names (``train``/``val``/``test``...), None when the data has none.
    default_targets : tuple of str
        Columns audited when the user names none: manifest: every attribute column; CelebA:
        the 40 attributes minus the default groups; folder: ``("class",)``; npz: ``label_names``.
    default_groups : tuple of str
        Protected attributes used when the user names none: CelebA: ``("Male", "Young")``;
        npz: ``group_names``; folder: the ``groups.csv`` columns; manifest: ``()``.
    class_names : dict of str to list of str
        Names of the classes of multiclass columns (folder layout: ``"class"`` → the class
        folder names, sorted).
    paths : list of Path or None
        Resolved image files (checked to exist inside ``root``), None for npz.
    array : numpy.ndarray or None
        npz images as uint8 NCHW (a transposed view when the file is NHWC; a memory map when
        the bundle is stored uncompressed), None for file layouts.
    """

    root: Path
    layout: Layout
    ids: np.ndarray
    columns: dict[str, np.ndarray]
    splits: np.ndarray | None
    default_targets: tuple[str, ...]
    default_groups: tuple[str, ...]
    class_names: dict[str, list[str]]
    paths: list[Path] | None
    array: np.ndarray | None

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.ids)


def load_dataset(root: str | Path, *, labels_file: str | Path | None = None) -> Dataset:
    """Detect the layout of DATA and read its labels (images are not decoded here).

    Detection order: ``labels_file`` given → manifest; ``root`` is an ``.npz`` file or holds
    exactly one → npz; ``root/labels.csv`` → manifest; ``root/list_attr_celeba.txt`` →
    CelebA; sub-folders holding images → image folder.

    Parameters
    ----------
    root : str or Path
        DATA: a folder, or an ``.npz`` bundle.
    labels_file : str or Path, optional
        A manifest CSV elsewhere than ``DATA/labels.csv`` (``--labels``).

    Returns
    -------
    Dataset
        Labels, splits and image locations, validated.

    Raises
    ------
    DataError
        When DATA does not exist, cannot be read, matches no layout, or any label, path or
        image location is invalid; the message names the file, line, column and the fix.
    """
    from audit.data import celeba, folder, manifest, npz

    given = Path(root)
    if not given.exists():
        raise DataError(
            f"DATA path {str(given)!r} does not exist; pass the dataset folder (or .npz file) "
            "as the second argument of `prune-audit check MODEL DATA`."
        )
    path = given.resolve()
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        # Checked up front: the probes below would fail with a bare PermissionError.
        raise DataError(
            f"Cannot read DATA folder {str(given)!r} (permission denied); the user running "
            "prune-audit needs read and execute permission on it (chmod u+rx)."
        )
    if labels_file is not None:
        if not path.is_dir():
            raise DataError(
                f"--labels was given, so DATA ({str(given)!r}) must be the folder the manifest's "
                "image paths are relative to, but it is a file. Pass that folder as DATA."
            )
        return manifest.read_manifest(path, Path(labels_file))
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return npz.read_npz(path)
        raise DataError(
            f"DATA {str(given)!r} is a file but not an .npz bundle; pass a dataset folder "
            "(manifest labels.csv, CelebA, or class sub-folders) or an .npz file."
        )
    bundles = sorted(p for p in path.glob("*.npz") if p.is_file())
    if len(bundles) == 1:
        return npz.read_npz(bundles[0])
    if len(bundles) > 1 and not (path / "labels.csv").is_file():
        raise DataError(
            f"DATA ({path}) holds {len(bundles)} .npz files "
            f"({', '.join(b.name for b in bundles[:5])}); it is not clear which one to audit. "
            "Pass the .npz file itself as DATA."
        )
    if (path / "labels.csv").is_file():
        return manifest.read_manifest(path, path / "labels.csv")
    if (path / celeba.ATTR_FILE).is_file():
        return celeba.read_celeba(path)
    if folder.looks_like_folder(path):
        return folder.read_folder(path)
    raise DataError(
        f"DATA ({path}) matches no known layout. Expected one of: a labels.csv manifest (column "
        "'image' plus label columns), the CelebA files (list_attr_celeba.txt and "
        "img_align_celeba/), one sub-folder of images per class, or an .npz bundle with "
        "'images', 'labels' and 'label_names'. Pass --labels FILE for a manifest stored "
        "elsewhere."
    )
