"""The ``Dataset`` record, the ``Layout`` a reader registers, and the ``ImageStore`` protocol.

Owns: the in-memory description of a labelled image set (ids, int64 label columns, splits,
default targets/groups, and where the images are: files, an array, or a store of encoded
images inside container files), and the shape of a layout entry in the registry
(``audit.data.layouts``). Must not import any layout (they import this module), decode
images (``audit.data.cache`` does), touch devices, or choose targets/groups for a run beyond
the layout's defaults (the runner does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ImageStore(ABC):
    """Encoded images held inside container files (Parquet row groups, tar shards).

    A store lists its samples cheaply when the labels are read and reads the bytes of any
    subset of rows later, touching only the containers (row groups, shard byte ranges) that
    hold them, so a process that caches a shard of the rows reads only that shard.
    """

    @abstractmethod
    def read(self, rows: np.ndarray) -> Iterator[list[tuple[int, bytes | None]]]:
        """Yield the encoded images of dataset rows ``rows`` in storage order.

        Parameters
        ----------
        rows : numpy.ndarray
            ``(n,)`` int64 dataset row indices (any order, duplicates allowed).

        Yields
        ------
        list of (int, bytes or None)
            A batch of ``(k, data)``: the encoded file of row ``rows[k]`` (None when the
            container holds no image for that row). Every ``k`` in
            ``range(n)`` appears exactly once over all batches; a batch holds a bounded number
            of bytes (one read of a container), so memory stays bounded.

        Raises
        ------
        DataError
            A container that changed or became unreadable since it was listed.
        """

    @abstractmethod
    def where(self, row: int) -> str:
        """Say where row ``row``'s image is stored, for messages (``"'a.tar' member 'k.jpg'"``)."""


@dataclass(frozen=True)
class Layout:
    """One dataset layout, as registered in ``audit.data.layouts.LAYOUTS``.

    Attributes
    ----------
    name : str
        The name in ``report.json`` (``data.layout``) and for ``load_dataset(layout=...)``.
    summary : str
        What DATA holds in this layout, one phrase for the "matches no layout" message.
    detect : callable
        ``detect(path) -> bool`` for a resolved DATA path (file or folder): cheap probes
        only (file names, a header); the first layout in registry order that accepts DATA
        reads it.
    read : callable
        ``read(path) -> Dataset``; raises ``DataError`` for anything invalid.
    file_kind : str or None
        When DATA itself may be a file of this layout: how to call that file in a message
        (``"an .npz bundle"``); None for folder-only layouts.
    """

    name: str
    summary: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], Dataset]
    file_kind: str | None = None


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set, as read from DATA.

    Attributes
    ----------
    root : Path
        DATA, resolved (when DATA is a file: the folder holding it).
    layout : str
        The name of the layout that read it (see ``audit.data.layouts.LAYOUTS``).
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
    store : ImageStore or None
        Encoded images inside container files (Parquet, WebDataset shards), read by row;
        None otherwise. Exactly one of ``paths``, ``array`` and ``store`` is set.
    """

    root: Path
    layout: str
    ids: np.ndarray
    columns: dict[str, np.ndarray]
    splits: np.ndarray | None
    default_targets: tuple[str, ...]
    default_groups: tuple[str, ...]
    class_names: dict[str, list[str]]
    paths: list[Path] | None
    array: np.ndarray | None
    store: ImageStore | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.ids)
