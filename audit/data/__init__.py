"""Datasets: layout detection and label reading (SPEC §3.2) and the decoded-image cache.

Owns: ``load_dataset`` (manifest CSV, CelebA, image folder, npz bundle → ``Dataset``) and
``build_image_cache`` (decode once into uint8 ``(n, 3, S, S)``, in RAM or a memory-mapped
file). Must not touch CUDA, normalise pixels, or choose what a run audits beyond the
layout's default targets and groups.
"""

from __future__ import annotations

from audit.data.cache import ImageCache, build_image_cache, default_image_size, default_workers
from audit.data.dataset import Dataset, Layout, load_dataset

__all__ = [
    "Dataset",
    "ImageCache",
    "Layout",
    "build_image_cache",
    "default_image_size",
    "default_workers",
    "load_dataset",
]
