"""Datasets: layout detection and label reading (SPEC §3.2) and the decoded-image cache.

Owns: ``load_dataset`` (DATA → ``Dataset`` through the layout registry in
``audit.data.layouts``: one module per layout, detection order explicit there), the
``Dataset`` record (``audit.data.dataset``, which imports no layout), validation shared by
the layouts (``audit.data._common``) and ``build_image_cache`` (decode once into uint8
``(n, 3, S, S)``, in RAM or a memory-mapped file). Must not touch CUDA, normalise pixels, or
choose what a run audits beyond the layout's default targets and groups.
"""

from __future__ import annotations

from audit.data.cache import ImageCache, build_image_cache, default_image_size, default_workers
from audit.data.dataset import Dataset, ImageStore, Layout
from audit.data.layouts import LAYOUT_NAMES, LAYOUTS, load_dataset

__all__ = [
    "LAYOUTS",
    "LAYOUT_NAMES",
    "Dataset",
    "ImageCache",
    "ImageStore",
    "Layout",
    "build_image_cache",
    "default_image_size",
    "default_workers",
    "load_dataset",
]
