"""Dataset layouts: one module per layout, registered here in detection order (SPEC §3.2).

Owns: the registry ``LAYOUTS`` (its order is the detection order), ``LAYOUT_NAMES`` for
choices derived from it, and ``load_dataset`` (DATA checks, then the first layout whose
``detect`` accepts DATA reads it). Each layout module owns its files' parsing and
validation and exposes one ``LAYOUT`` (an ``audit.data.dataset.Layout``). Must not decode
images (``audit.data.cache`` does) or choose targets/groups beyond a layout's defaults.

Adding a layout: write ``audit/data/layouts/<name>.py`` with ``LAYOUT = Layout(name=...,
summary=..., detect=..., read=...)`` and put it in ``LAYOUTS`` below, where its detection
should happen; nothing else names layouts.
"""

from __future__ import annotations

import os
from pathlib import Path

from audit.data.dataset import Dataset, Layout
from audit.data.layouts import celeba, folder, imagefolder, manifest, npz, parquet, webdataset
from audit.errors import DataError

#: Every layout, in detection order: the first whose ``detect`` accepts DATA reads it.
#: Specific markers (an .npz bundle, labels.csv, the CelebA files) come first; container
#: files (Parquet, tar shards) next, since a data set repository may also hold a few loose
#: images; then imagefolder's metadata files; the generic class-folder layout last, as it
#: would match any folder of images (imagefolder's split folders included).
LAYOUTS: tuple[Layout, ...] = (
    npz.LAYOUT,
    manifest.LAYOUT,
    celeba.LAYOUT,
    parquet.LAYOUT,
    webdataset.LAYOUT,
    imagefolder.LAYOUT,
    folder.LAYOUT,
)

#: Registered layout names, in detection order.
LAYOUT_NAMES: tuple[str, ...] = tuple(layout.name for layout in LAYOUTS)


def get_layout(name: str) -> Layout:
    """Return the registered layout called ``name``.

    Parameters
    ----------
    name : str
        One of ``LAYOUT_NAMES``.

    Returns
    -------
    Layout

    Raises
    ------
    ValueError
        When no layout has that name (the message lists the registered ones).
    """
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise ValueError(f"unknown layout {name!r}; registered layouts: {', '.join(LAYOUT_NAMES)}")


def load_dataset(root: str | Path, *, labels_file: str | Path | None = None) -> Dataset:
    """Detect the layout of DATA and read its labels (images are not decoded here).

    Detection order is ``LAYOUTS``' order; ``labels_file`` given → manifest.

    Parameters
    ----------
    root : str or Path
        DATA: a folder, or a file one of the layouts reads (an ``.npz`` bundle).
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
    for layout in LAYOUTS:
        if layout.detect(path):
            return layout.read(path)
    if path.is_file():
        kinds = [layout.file_kind for layout in LAYOUTS if layout.file_kind]
        raise DataError(
            f"DATA {str(given)!r} is a file but not {_either(kinds)}; pass a dataset folder "
            f"or such a file."
        )
    raise DataError(
        f"DATA ({path}) matches no known layout. Expected one of: "
        f"{'; '.join(layout.summary for layout in LAYOUTS)}. Pass --labels FILE for a "
        "manifest stored elsewhere."
    )


def _either(items: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


__all__ = ["LAYOUTS", "LAYOUT_NAMES", "get_layout", "load_dataset"]
