"""Decode stage: this rank's images into uint8 caches, once per run.

Owns: decoding the evaluation and calibration rows (one cache, one dense pass; under
torchrun each rank decodes only its contiguous shard of each split), the train rows when a
recovery trains, the thumbnails of reported samples, which rows every rank holds, and the
per-rank decoding record (``$PRUNE_AUDIT_STATS_DIR``).
Must not: run a model or compute a metric.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit import inference
from audit.config import AuditConfig
from audit.data import Dataset, ImageCache, build_image_cache
from audit.errors import DataError
from audit.pipeline.context import RunContext
from audit.pipeline.select import Selection


def thumbnail(image: torch.Tensor, size: int = 64) -> str:
    """A CHW uint8 image as a ``size``×``size`` PNG data URI (nearest-neighbour upscaling)."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr))
    if img.size[0] < size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    elif img.size[0] > size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------- decoding
#: When set, every rank writes ``rank-<r>.json`` into this folder at the end of a successful
#: run: the rows it decoded per purpose, the seconds that took, the bytes of its caches and
#: its peak RSS. Diagnostics for tests and ``benchmarks/bench_scale.py``.
STATS_DIR_ENV = "PRUNE_AUDIT_STATS_DIR"


@dataclass
class Decoder:
    """Decodes this rank's images into caches and keeps count of what it decoded."""

    ds: Dataset
    image_size: int
    cfg: AuditConfig
    dist: inference.Dist
    records: list[dict[str, Any]] = field(default_factory=list)

    def decode(
        self,
        purpose: str,
        indices: np.ndarray,
        advance: Callable[[int], None] | None = None,
        *,
        skip_bad: bool | None = None,
    ) -> ImageCache:
        """Decode ``indices`` (dataset rows) into a cache, recording rows, time and bytes."""
        start = time.perf_counter()
        cache = build_image_cache(
            self.ds,
            indices,
            image_size=self.image_size,
            skip_bad=self.cfg.skip_bad_images if skip_bad is None else skip_bad,
            workers=self.cfg.workers,
            progress=advance,
        )
        self.records.append(
            {
                "purpose": purpose,
                "rows": int(len(indices)),
                "seconds": time.perf_counter() - start,
                "cache_bytes": int(cache.images.numel()),
                "memmap": cache.file is not None,
            }
        )
        return cache

    def rows(
        self, images: inference.Shard, idx: np.ndarray, rows: list[int]
    ) -> dict[int, torch.Tensor]:
        """Images of global evaluation rows: this rank's own, or decoded (other ranks' rows)."""
        lo, hi = images.offset, images.offset + images.images.shape[0]
        out = {r: images.images[r - lo] for r in rows if lo <= r < hi}
        missing = [r for r in rows if r not in out]
        if missing:
            # These rows decoded once already (on the rank that holds them), so no skipping.
            with self.decode("thumbnails", idx[missing], skip_bad=False) as extra:
                for k, r in enumerate(missing):
                    out[r] = extra.images[k].clone()
        return out

    def write_stats(self) -> None:
        """Write this rank's decoding record when ``$PRUNE_AUDIT_STATS_DIR`` is set."""
        where = os.environ.get(STATS_DIR_ENV)
        if not where:
            return
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        except (ImportError, OSError):
            peak = None
        folder = Path(where)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": self.dist.rank,
            "world_size": self.dist.world,
            "decoded_rows": sum(r["rows"] for r in self.records),
            "decode_seconds": sum(r["seconds"] for r in self.records),
            "cache_bytes": sum(r["cache_bytes"] for r in self.records),
            "peak_rss_bytes": peak,
            "decodes": self.records,
        }
        (folder / f"rank-{self.dist.rank}.json").write_text(json.dumps(record, indent=2) + "\n")


def split_blocks(
    eval_counts: tuple[int, ...], calib_counts: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the gathered dense pass that are evaluation / calibration rows, in order.

    Rank r's block is its evaluation rows followed by its calibration rows.
    """
    eval_rows, calib_rows, start = [], [], 0
    for e, c in zip(eval_counts, calib_counts, strict=True):
        eval_rows.append(np.arange(start, start + e))
        calib_rows.append(np.arange(start + e, start + e + c))
        start += e + c
    return np.concatenate(eval_rows), np.concatenate(calib_rows)


@dataclass(frozen=True)
class Decoded:
    """The decoded evaluation and calibration rows this rank holds, and who holds what."""

    decoder: Decoder
    cache: ImageCache
    eval_idx: np.ndarray  # dataset rows of the whole (gathered) evaluation set, in order
    calib_idx: np.ndarray
    skipped: list[tuple[str, str]]  # (id, reason) of unreadable images, every rank's
    eval_counts: tuple[int, ...]  # evaluation rows per rank
    calib_counts: tuple[int, ...]
    eval_images: inference.Shard  # views into the one cache (no copy of the images)
    calib_images: inference.Shard
    both: inference.Shard


def decode(ctx: RunContext, ds: Dataset, sel: Selection, image_size: int) -> Decoded:
    """The decode stage: this rank's evaluation and calibration rows, in one cache."""
    dist = ctx.dist
    decoder = Decoder(ds, image_size, ctx.cfg, dist)
    mine = np.concatenate(
        [
            sel.eval_idx[dist.shard(len(sel.eval_idx))],
            sel.calib_idx[dist.shard(len(sel.calib_idx))],
        ]
    )
    with ctx.progress.task("Decoding images", len(mine)) as advance:
        cache = ctx.scope.adopt(decoder.decode("eval+calib", mine, advance))
    # The cache keeps request order minus skips, so this rank's eval rows lead it.
    n_eval_here = int(np.isin(cache.indices, sel.eval_idx).sum())
    held = inference.all_gather_object(
        (cache.indices[:n_eval_here], cache.indices[n_eval_here:], cache.skipped), dist
    )
    eval_idx = np.concatenate([h[0] for h in held]).astype(np.int64)
    calib_idx = np.concatenate([h[1] for h in held]).astype(np.int64)
    if len(eval_idx) == 0 or len(calib_idx) == 0:
        raise DataError(
            "After skipping unreadable images nothing is left to evaluate or calibrate on; "
            "fix the images or choose other splits."
        )
    eval_counts = tuple(len(h[0]) for h in held)
    calib_counts = tuple(len(h[1]) for h in held)
    both = tuple(e + c for e, c in zip(eval_counts, calib_counts, strict=True))
    return Decoded(
        decoder=decoder,
        cache=cache,
        eval_idx=eval_idx,
        calib_idx=calib_idx,
        skipped=[item for h in held for item in h[2]],
        eval_counts=eval_counts,
        calib_counts=calib_counts,
        eval_images=inference.Shard(cache.images[:n_eval_here], eval_counts, dist.rank),
        calib_images=inference.Shard(cache.images[n_eval_here:], calib_counts, dist.rank),
        both=inference.Shard(cache.images, both, dist.rank),
    )


def decode_train(ctx: RunContext, decoder: Decoder, sel: Selection, *, sharded: bool) -> ImageCache:
    """The train rows a training recovery fine-tunes on.

    ``sharded`` (BatchNorm can sync, DDP fine-tuning): this rank's contiguous shard only;
    else (TorchScript) every rank decodes them all.
    """
    rows = sel.train_idx[ctx.dist.shard(len(sel.train_idx))] if sharded else sel.train_idx
    with ctx.progress.task("Decoding train images", len(rows)) as advance:
        return ctx.scope.adopt(decoder.decode("train", rows, advance))
