"""Decode images once into a uint8 cache (RAM, or a memory-mapped file when large).

Owns: decoding each image once (``audit.data._common.decode_image``: any mode → RGB,
bilinear antialiased resize to S×S) with the decompression-bomb guard, corrupt/truncated
image handling (error or skip), resizing npz arrays, and the lifetime of the memory-mapped
cache file. Must not touch CUDA or normalise pixels (mean/std belong to inference); the
cache is uint8 ``(n, 3, S, S)`` so every pruned model is evaluated without decoding again
(SPEC §3.2, §9).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audit.data._common import DECODE_ERRORS as _DECODE_ERRORS
from audit.data._common import BadImage as _BadImage
from audit.data._common import decode_image, show_list
from audit.data._common import image_formats as _formats
from audit.data.dataset import Dataset, ImageStore
from audit.errors import DataError, UsageError

#: Bytes of float32 work memory per npz resize chunk.
_RESIZE_CHUNK_BYTES = 64 << 20


#: Images with at most this many pixels decode serially by default: Pillow holds the GIL for
#: most of the ~100 us it spends on a 32x32 PNG (opening, plugin dispatch, conversion), so
#: threads do not help (2000 32x32 PNGs on 2 cores: 0.404 s serial, 0.409 s with 2 threads).
#: Larger images spend their time in decoders and resizes that release the GIL.
SMALL_IMAGE_PIXELS = 128 * 128


def default_workers(first_image: Path | io.BytesIO | None = None) -> int:
    """Decode threads used when ``workers`` is None.

    Parameters
    ----------
    first_image : Path or io.BytesIO, optional
        An image of the data set (a file, or encoded bytes from a store); when its header
        declares at most ``SMALL_IMAGE_PIXELS`` pixels, decoding is serial (threads only add
        overhead for tiny images).

    Returns
    -------
    int
        1 for tiny images, else ``min(8, usable CPU cores)``.
    """
    if first_image is not None:
        try:
            with Image.open(first_image, formats=_formats()) as img:
                if img.size[0] * img.size[1] <= SMALL_IMAGE_PIXELS:
                    return 1
        except _DECODE_ERRORS:
            pass  # the decode pass reports it properly
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _remove_cache_file(file: Path | None, tmpdir: Path | None) -> None:
    if file is not None:
        file.unlink(missing_ok=True)
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


@dataclass
class ImageCache:
    """Decoded images of a dataset subset.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(n, 3, S, S)``, contiguous, CPU; wraps a ``np.memmap`` when the cache was
        larger than the threshold.
    indices : numpy.ndarray
        ``(n,)`` int64 dataset row indices held, in request order (skipped rows removed).
    skipped : list of (str, str)
        ``(id, reason)`` of images skipped because ``skip_bad=True``.
    file : Path or None
        The memory-mapped cache file, None when the cache is in RAM. It is deleted by
        ``close()``, or at garbage collection / interpreter exit at the latest.
    """

    images: torch.Tensor
    indices: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    file: Path | None = field(default=None, repr=False)
    _tmpdir: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The file goes away at garbage collection or interpreter exit even without close().
        self._finalizer = weakref.finalize(self, _remove_cache_file, self.file, self._tmpdir)

    def close(self) -> None:
        """Delete the memory-mapped cache file (if any); the images must not be used after."""
        self.images = torch.empty((0, *self.images.shape[1:]), dtype=torch.uint8)
        self._finalizer()

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(path: Path | io.BytesIO, size: int, max_pixels: int) -> np.ndarray:
    """Decode one file (or in-memory encoded image) to uint8 ``(3, size, size)``.

    See ``audit.data._common.decode_image``; raises ``_BadImage`` when it cannot be decoded.
    """
    return decode_image(path, size, max_pixels)


def _allocate(
    shape: tuple[int, int, int, int], threshold: int, cache_dir: Path | None
) -> tuple[np.ndarray, Path | None, Path | None]:
    """Preallocate the cache: RAM, or a memory-mapped file when it exceeds ``threshold``."""
    nbytes = math.prod(shape)
    if nbytes <= threshold:
        return np.empty(shape, dtype=np.uint8), None, None
    tmpdir = None
    if cache_dir is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="prune-audit-cache-"))
        where = tmpdir
    else:
        where = Path(cache_dir)
        where.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="images-", suffix=".u8", dir=where)
    try:
        # Reserve the blocks now: writing into a sparse map on a full disk kills the process
        # with SIGBUS instead of raising.
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
    except OSError as e:
        os.close(fd)
        _remove_cache_file(Path(name), tmpdir)
        raise DataError(
            f"Cannot reserve {nbytes / 2**30:.2f} GiB in {where} for the decoded-image cache "
            f"({e.strerror or e}); free disk space there or point the cache (cache_dir) at a "
            "disk with room."
        ) from e
    os.close(fd)
    arr = np.memmap(name, dtype=np.uint8, mode="r+", shape=shape)
    return arr, Path(name), tmpdir


def build_image_cache(
    dataset: Dataset,
    indices: np.ndarray,
    *,
    image_size: int,
    skip_bad: bool = False,
    workers: int | None = None,
    memmap_threshold_bytes: int = 2 << 30,
    cache_dir: Path | None = None,
    max_image_pixels: int = 64_000_000,
    progress: Callable[[int], None] | None = None,
) -> ImageCache:
    """Decode (or, for npz, resize) the images of ``indices`` into a uint8 cache.

    Parameters
    ----------
    dataset : Dataset
        From :func:`audit.data.load_dataset`.
    indices : numpy.ndarray
        Dataset rows to cache, in the order wanted (duplicates allowed).
    image_size : int
        S: every image is resized to S×S (bilinear, antialiased; no resize when already S×S).
    skip_bad : bool, default False
        Skip corrupt, truncated or too-large images and record them instead of failing.
    workers : int, optional
        Decode threads; 1 decodes in the calling thread. Default: serial for tiny images
        (at most 128x128 pixels, judged by the first one), else ``min(8, cores)``.
    memmap_threshold_bytes : int, default 2 GiB
        Above ``n * 3 * S * S`` bytes the cache is a memory-mapped file instead of RAM.
    cache_dir : Path, optional
        Where the memory-mapped file goes (default: a fresh temporary folder).
    max_image_pixels : int, default 64_000_000
        Images whose header declares more pixels are refused before decoding.
    progress : callable, optional
        Called with the number of newly finished (decoded or skipped) images.

    Returns
    -------
    ImageCache
        Call ``close()`` (or use it as a context manager) to delete a memory-mapped file.

    Raises
    ------
    DataError
        A corrupt, truncated or too-large image (unless ``skip_bad``), naming the file.
    UsageError
        ``image_size`` or ``workers`` below 1.
    """
    if int(image_size) < 1:
        raise UsageError(f"--image-size must be a positive integer, got {image_size!r}.")
    if workers is not None and int(workers) < 1:
        raise UsageError(f"--workers must be at least 1, got {workers!r}.")
    size = int(image_size)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= dataset.n):
        raise ValueError(f"indices must lie in [0, {dataset.n}); got {idx.min()}..{idx.max()}")
    report = progress or (lambda k: None)
    dest, file, tmpdir = _allocate((len(idx), 3, size, size), memmap_threshold_bytes, cache_dir)
    try:
        failures = _fill(
            dataset,
            idx,
            dest,
            size,
            skip_bad=skip_bad,
            workers=workers,
            max_pixels=int(max_image_pixels),
            report=report,
        )
        keep = np.ones(len(idx), dtype=bool)
        keep[[pos for pos, _ in failures]] = False
        n_kept = int(keep.sum())
        if n_kept < len(idx):
            _compact(dest, keep)
        images = torch.from_numpy(dest[:n_kept] if n_kept < len(idx) else dest)
    except BaseException:
        del dest
        _remove_cache_file(file, tmpdir)
        raise
    skipped = [(str(dataset.ids[idx[pos]]), reason) for pos, reason in failures]
    return ImageCache(images=images, indices=idx[keep], skipped=skipped, file=file, _tmpdir=tmpdir)


def _fill(
    dataset: Dataset,
    idx: np.ndarray,
    dest: np.ndarray,
    size: int,
    *,
    skip_bad: bool,
    workers: int | None,
    max_pixels: int,
    report: Callable[[int], None],
) -> list[tuple[int, str]]:
    """Fill ``dest`` from the dataset's array, image store or files; return the skips."""
    if dataset.array is not None:
        _fill_from_array(dataset.array, idx, dest, size, report)
        return []
    if dataset.store is not None:
        return _fill_from_store(
            dataset,
            dataset.store,
            idx,
            dest,
            size,
            skip_bad=skip_bad,
            workers=(
                default_workers(_first_encoded(dataset.store, idx))
                if workers is None
                else int(workers)
            ),
            max_pixels=max_pixels,
            report=report,
        )
    if dataset.paths is None:
        raise ValueError("dataset has neither image paths nor an image array")
    return _fill_from_files(
        dataset,
        dataset.paths,
        idx,
        dest,
        size,
        skip_bad=skip_bad,
        workers=(
            default_workers(dataset.paths[idx[0]] if len(idx) else None)
            if workers is None
            else int(workers)
        ),
        max_pixels=max_pixels,
        report=report,
    )


def _compact(dest: np.ndarray, keep: np.ndarray) -> None:
    """Move kept rows to the front, in order, one row at a time (no copy of the cache)."""
    write = 0
    for read in np.flatnonzero(keep):
        if read != write:
            dest[write] = dest[read]
        write += 1


def _fill_from_files(
    dataset: Dataset,
    paths: Sequence[Path],
    idx: np.ndarray,
    dest: np.ndarray,
    size: int,
    *,
    skip_bad: bool,
    workers: int,
    max_pixels: int,
    report: Callable[[int], None],
) -> list[tuple[int, str]]:
    """Decode files into ``dest`` with a thread pool; return ``(position, reason)`` skips."""

    def run(chunk: Sequence[int]) -> list[tuple[int, str]]:
        failed: list[tuple[int, str]] = []
        for pos in chunk:
            path = paths[idx[pos]]
            try:
                dest[pos] = _decode(path, size, max_pixels)
            except _BadImage as e:
                if not skip_bad:
                    raise _bad_image_error(dataset, path, e, max_pixels) from None
                failed.append((pos, e.reason))
        return failed

    n = len(idx)
    per_chunk = max(1, min(64, math.ceil(n / (4 * workers)))) if n else 1
    chunks = [range(a, min(n, a + per_chunk)) for a in range(0, n, per_chunk)]
    failures: list[tuple[int, str]] = []
    Image.init()  # register every plugin once, before threads race to do it lazily
    with warnings.catch_warnings():
        # Pillow only warns for images between its own limit and twice that; refuse them too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                failures += run(chunk)
                report(len(chunk))
            return failures
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune-audit-decode")
        try:
            futures = [pool.submit(run, c) for c in chunks]
            for chunk, fut in zip(chunks, futures, strict=True):
                failures += fut.result()
                report(len(chunk))
        finally:
            # On an error, do not decode the rest of the data set before reporting it.
            pool.shutdown(wait=True, cancel_futures=True)
    return failures


def _close(batches: Iterator[object]) -> None:
    """Close a store's generator now, so it releases its open files without waiting for GC."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _first_encoded(store: ImageStore, idx: np.ndarray) -> io.BytesIO | None:
    """The first requested image's bytes (to size the thread pool), None when there is none."""
    if not len(idx):
        return None
    batches = store.read(idx[:1])
    try:
        data = next(batches)[0][1]
    finally:
        _close(batches)
    return None if data is None else io.BytesIO(data)


def _fill_from_store(
    dataset: Dataset,
    store: ImageStore,
    idx: np.ndarray,
    dest: np.ndarray,
    size: int,
    *,
    skip_bad: bool,
    workers: int,
    max_pixels: int,
    report: Callable[[int], None],
) -> list[tuple[int, str]]:
    """Decode a store's encoded images into ``dest``, batch by batch as the store reads them.

    The store reads only the containers that hold ``idx`` (in storage order); each batch is
    decoded (by ``workers`` threads) before the next is read, so memory holds one batch of
    encoded bytes. Returns ``(position, reason)`` skips.
    """

    def decode(item: tuple[int, bytes | None]) -> tuple[int, str] | None:
        pos, data = item
        try:
            if data is None:
                raise _BadImage("the container stores no image bytes for it")
            dest[pos] = _decode(io.BytesIO(data), size, max_pixels)
        except _BadImage as e:
            if not skip_bad:
                raise _bad_image_error(dataset, None, e, max_pixels, row=int(idx[pos])) from None
            return pos, e.reason
        return None

    failures: list[tuple[int, str]] = []
    Image.init()
    pool = (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune-audit-decode")
        if workers > 1
        else None
    )
    batches: Iterator[list[tuple[int, bytes | None]]] = store.read(idx)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for batch in batches:
                done = map(decode, batch) if pool is None else pool.map(decode, batch)
                failures += [f for f in done if f is not None]
                report(len(batch))
    finally:
        _close(batches)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return failures


def _bad_image_error(
    dataset: Dataset,
    path: Path | None,
    err: _BadImage,
    max_pixels: int,
    *,
    row: int | None = None,
) -> DataError:
    if dataset.store is not None and row is not None:
        at = f"{str(dataset.ids[row])!r} ({dataset.store.where(row)} in {dataset.root})"
    else:
        rel = path.relative_to(dataset.root) if path and path.is_relative_to(dataset.root) else path
        at = f"{str(rel)!r} in {dataset.root}"
    if err.bomb:
        return DataError(
            f"Refusing to decode image {at}: {err.reason}, too large to "
            f"decode safely (limit max_image_pixels={max_pixels}). Downscale the image, remove "
            "it, or pass --skip-bad-images to skip such images and count them in the report."
        )
    if err.unreadable:
        return DataError(
            f"Cannot read image {at} ({err.reason}); check that the "
            "file exists and that this user has permission to read it, or pass "
            "--skip-bad-images to skip unreadable images and count them in the report."
        )
    return DataError(
        f"Cannot decode image {at} ({err.reason}); the file is "
        "corrupt, truncated or not an image. Replace or remove it, or pass --skip-bad-images to "
        "skip unreadable images and count them in the report."
    )


def _fill_from_array(
    array: np.ndarray,
    idx: np.ndarray,
    dest: np.ndarray,
    size: int,
    report: Callable[[int], None],
) -> None:
    """Copy (and resize when H or W differs from ``size``) npz images into ``dest`` in chunks."""
    _, c, h, w = array.shape
    resize = (h, w) != (size, size)
    per_image = c * h * w * (4 if resize else 1) + 3 * size * size * (4 if resize else 1)
    step = max(1, _RESIZE_CHUNK_BYTES // per_image)
    for a in range(0, len(idx), step):
        rows = idx[a : a + step]
        # Sorted reads are sequential on a memory map; the inverse puts them back in order.
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), c, h, w), dtype=np.uint8)
        block[order] = array[rows[order]]
        if resize:
            t = torch.from_numpy(block).float()
            t = torch.nn.functional.interpolate(
                t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            block = t.round_().clamp_(0, 255).to(torch.uint8).numpy()
        # One channel: the same plane three times, as Pillow's L -> RGB conversion does.
        dest[a : a + len(rows)] = np.broadcast_to(block, (len(rows), 3, size, size))
        report(len(rows))


def default_image_size(dataset: Dataset) -> int:
    """Return the image size S to use when neither checkpoint nor ``--image-size`` gives one.

    Parameters
    ----------
    dataset : Dataset
        From :func:`audit.data.load_dataset`.

    Returns
    -------
    int
        npz: the bundle's H (which must equal W); files: ``max(width, height)`` of the first
        image (read from its header).

    Raises
    ------
    DataError
        Non-square npz images, or a first image that cannot be opened.
    """
    if dataset.array is not None:
        h, w = dataset.array.shape[2:]
        if h != w:
            raise DataError(
                f"The images in the npz bundle in {dataset.root} are {h}x{w} (not square), so "
                "there is no natural size to feed the model; pass --image-size N (they are "
                "resized to NxN)."
            )
        return int(h)
    if dataset.store is not None:
        first = _first_encoded(dataset.store, np.zeros(1, dtype=np.int64))
        if first is None:
            raise DataError(
                f"The first image of {dataset.root} ({dataset.store.where(0)}) has no bytes, so "
                "its size is unknown; fix or remove that row, or pass --image-size N."
            )
        source: Path | io.BytesIO = first
    elif not dataset.paths:
        raise DataError(f"The dataset at {dataset.root} has no images.")
    else:
        source = dataset.paths[0]
    try:
        with Image.open(source, formats=_formats()) as img:
            return int(max(img.size))
    except _DECODE_ERRORS as e:
        raise DataError(
            f"Cannot read the size of the first image {show_list([str(dataset.ids[0])])} in "
            f"{dataset.root} ({type(e).__name__}: {e}); fix or remove it, or pass "
            "--image-size N."
        ) from e
