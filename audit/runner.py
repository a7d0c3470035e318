"""Orchestrate one audit: load → infer → measure → forecast → prune & re-measure → judge → render.

Owns: the order of stages, split and column selection, the single inference pass per model,
and assembling the report dict (docs/report-json.md). It computes metrics only by calling
``criteria``/``validate``/``forecast``/``gate`` and touches devices only through ``inference``.
Nothing is written to ``config.out`` until every stage has succeeded.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from audit import criteria, forecast, gate, inference, pruning, validate
from audit import metrics as M
from audit._version import __version__
from audit.config import DEFAULT_SPARSITIES, AuditConfig
from audit.data import Dataset, ImageCache, build_image_cache, default_image_size, load_dataset
from audit.errors import AuditError, CheckpointError, DataError, UsageError
from audit.model_io import LoadedModel, load_model, save_checkpoint
from audit.report.formats import get_report_format
from audit.report.writer import PREDICTIONS_NAME, open_staging, pause_point

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCHEMA_VERSION = "1.1"


class Progress(Protocol):
    """Where the runner reports progress; the CLI passes a rich-backed implementation."""

    def task(
        self, description: str, total: int | None
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Open a task; the context yields an ``advance(n)`` callable."""
        ...

    def log(self, message: str) -> None:
        """A one-line status message."""
        ...


class SilentProgress:
    """Progress that reports nothing (the Python API default)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Open a task that ignores its advances."""
        yield lambda n: None

    def log(self, message: str) -> None:
        """Drop the message."""


@dataclass(frozen=True)
class AuditResult:
    """What ``run_audit`` returns: the report data, the gate decision, the written files."""

    report: dict[str, Any]
    passed: bool
    files: tuple[Path, ...] = field(default=())
    #: The MLflow run the audit was logged to (``mlflow=True``), else None.
    mlflow_run_id: str | None = None
    #: Warnings raised after the reports were written (so not in report.json), e.g. a failed
    #: MLflow logging; the CLI prints them with the report's warnings.
    notices: tuple[str, ...] = ()

    @property
    def gate(self) -> dict[str, Any]:
        """The report's gate object."""
        return self.report["gate"]

    @property
    def exit_code(self) -> int:
        """0 when the gate passed, 1 when it failed."""
        return 0 if self.passed else 1


# ---------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Selection:
    """Columns, task and splits chosen for this run."""

    task: str
    target_columns: tuple[str, ...]
    targets: tuple[str, ...]  # output names (class names for multiclass)
    groups: tuple[str, ...]
    eval_idx: np.ndarray
    calib_idx: np.ndarray
    train_idx: np.ndarray
    splits: dict[str, Any]


def _choose_columns(
    cfg: AuditConfig, ds: Dataset, lm: LoadedModel
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    available = list(ds.columns)

    def check(cols: tuple[str, ...], flag: str) -> None:
        missing = [c for c in cols if c not in ds.columns]
        if missing:
            raise DataError(
                f"{flag} names column(s) {', '.join(map(repr, missing))} that the {ds.layout} "
                f"dataset at {str(ds.root)!r} does not have; available columns: "
                f"{', '.join(available) or '(none)'}."
            )

    groups = tuple(cfg.groups) or tuple(ds.default_groups)
    if not groups:
        raise UsageError(
            f"No protected attribute chosen: pass --group COL (one or more of: "
            f"{', '.join(available)}). The {ds.layout} layout has no default group column."
        )
    check(groups, "--group")
    # When the checkpoint names its outputs, they are the targets: matching other columns by
    # position would score each output against the wrong labels, silently.
    named = bool(lm.outputs) and lm.task != "multiclass" and not cfg.ignore_output_names
    if cfg.targets:
        targets = tuple(cfg.targets)
        # A different count is reported below, with the output names.
        if named and len(targets) == len(lm.outputs) and targets != tuple(lm.outputs):
            raise DataError(
                f"--target {', '.join(targets)} contradicts the output names recorded in "
                f"{str(cfg.model)!r} ({', '.join(lm.outputs)}, in output order); output i is "
                "scored against target i. Pass the targets in the checkpoint's order (or drop "
                "--target), or add --ignore-output-names if this order is intended."
            )
    elif named:
        missing = [o for o in lm.outputs if o not in ds.columns]
        if missing:
            raise DataError(
                f"The checkpoint {str(cfg.model)!r} names its outputs {', '.join(lm.outputs)}, "
                f"but the {ds.layout} dataset at {str(ds.root)!r} has no column(s) "
                f"{', '.join(map(repr, missing))} (columns: {', '.join(available)}). Rename the "
                "label columns to the output names, or pass --target COL once per output in "
                "output order with --ignore-output-names."
            )
        targets = tuple(lm.outputs)
    else:
        targets = tuple(t for t in ds.default_targets if t not in groups) or tuple(
            c for c in ds.columns if c not in groups
        )
    check(targets, "--target")
    overlap = set(targets) & set(groups)
    if overlap:
        raise UsageError(
            f"Column(s) {', '.join(map(repr, sorted(overlap)))} are both a target and a group; "
            "a protected attribute cannot also be an audited output."
        )
    return targets, groups


def _infer_task(cfg: AuditConfig, ds: Dataset, lm: LoadedModel, targets: tuple[str, ...]) -> str:
    if cfg.task:
        return cfg.task
    if lm.task in ("multilabel", "binary", "multiclass"):
        return lm.task
    if len(targets) == 1:
        values = np.unique(ds.columns[targets[0]])
        if values.max(initial=0) > 1 or (lm.num_outputs or 1) > 1:
            return "multiclass"
        return "binary"
    return "multilabel"


def _select(cfg: AuditConfig, ds: Dataset, lm: LoadedModel) -> Selection:
    target_cols, groups = _choose_columns(cfg, ds, lm)
    task = _infer_task(cfg, ds, lm, target_cols)
    if task == "multiclass":
        if len(target_cols) != 1:
            raise UsageError(
                f"A multiclass audit takes one label column; got --target "
                f"{', '.join(target_cols)}. Pass the class column with --target."
            )
        col = target_cols[0]
        k = lm.num_outputs or int(ds.columns[col].max()) + 1
        names = ds.class_names.get(col) or [f"{col}={i}" for i in range(k)]
        targets = tuple(str(n) for n in names[:k])
    else:
        targets = target_cols
        for col in target_cols:
            bad = ~np.isin(ds.columns[col], (0, 1))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"Target column {col!r} has value {int(ds.columns[col][row])} for "
                    f"{str(ds.ids[row])!r}; a {task} audit needs 0/1 (or -1/1) labels. Use "
                    "--task multiclass for integer classes."
                )
    n_out = lm.num_outputs
    if n_out is not None and n_out != len(targets):
        raise CheckpointError(
            f"The model {str(cfg.model)!r} has {n_out} outputs but {len(targets)} targets were "
            f"selected ({', '.join(targets)}). Pass one --target per model output, in output order"
            + (f" (the checkpoint names them: {', '.join(lm.outputs)})" if lm.outputs else "")
            + "."
        )

    rng = np.random.default_rng(cfg.seed)
    splits = ds.splits
    names = sorted(set(splits.tolist())) if splits is not None else []

    def split_idx(name: str, flag: str) -> np.ndarray:
        if splits is None:
            raise DataError(
                f"{flag} {name!r} was given but the dataset at {str(ds.root)!r} has no splits "
                "(add a 'split' column, or drop the flag to evaluate on all samples)."
            )
        idx = np.flatnonzero(splits == name)
        if len(idx) == 0:
            raise DataError(
                f"{flag} {name!r} matches no samples; the dataset's splits are {', '.join(names)}."
            )
        return idx

    if cfg.split:
        eval_name, eval_idx = cfg.split, split_idx(cfg.split, "--split")
    elif splits is not None and "test" in names:
        eval_name, eval_idx = "test", split_idx("test", "--split")
    else:
        eval_name, eval_idx = "all", np.arange(ds.n)
    holdout = False
    if cfg.calib_split:
        calib_name, calib_idx = cfg.calib_split, split_idx(cfg.calib_split, "--calib-split")
    elif splits is not None and "val" in names and eval_name not in ("val", "all"):
        calib_name, calib_idx = "val", split_idx("val", "--calib-split")
    else:
        # No calibration split: hold out a seeded 20% of the evaluation split so thresholds
        # and BN statistics are never fitted on the samples they are judged on.
        perm = rng.permutation(eval_idx)
        n_cal = max(1, int(round(0.2 * len(perm))))
        calib_idx, eval_idx = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
        calib_name, holdout = f"holdout-20%-of-{eval_name}", True
    if not holdout and np.intersect1d(eval_idx, calib_idx).size:
        shared = np.intersect1d(eval_idx, calib_idx).size
        raise UsageError(
            f"The evaluation split ({eval_name!r}) and the calibration split ({calib_name!r}) "
            f"share {shared} samples"
            + (" (they are the same split)" if shared == len(eval_idx) == len(calib_idx) else "")
            + ": thresholds and BatchNorm statistics would be fitted on the very images they "
            "are judged on, which hides what pruning does. Pass a different --calib-split, or "
            "omit it to hold out a seeded 20% of the evaluation split"
            + (
                " (or pass --split to evaluate on one split, not all samples)."
                if eval_name == "all"
                else "."
            )
        )
    if cfg.train_split:
        train_name, train_idx = cfg.train_split, split_idx(cfg.train_split, "--train-split")
    elif splits is not None and "train" in names and eval_name != "train":
        train_name, train_idx = "train", split_idx("train", "--train-split")
    else:
        train_name, train_idx = None, np.zeros(0, dtype=np.int64)
    needs_train = pruning.get_recovery(cfg.recovery).needs_train_split
    if cfg.validate and needs_train and np.intersect1d(train_idx, eval_idx).size:
        raise UsageError(
            f"The train split ({train_name!r}) used by --recovery {cfg.recovery} shares "
            f"{np.intersect1d(train_idx, eval_idx).size} samples with the evaluation split "
            f"({eval_name!r}): the pruned model would be fine-tuned on the images it is judged "
            "on. Pass a different --train-split or --split."
        )
    if cfg.validate and cfg.audit_sparsities and needs_train and len(train_idx) == 0:
        raise DataError(
            f"--recovery {cfg.recovery} needs a train split; the dataset has none. Add a 'split' "
            "column with train rows, pass --train-split NAME, or use --recovery bn."
        )
    return Selection(
        task=task,
        target_columns=target_cols,
        targets=targets,
        groups=groups,
        eval_idx=eval_idx,
        calib_idx=calib_idx,
        train_idx=train_idx,
        splits={
            "eval": eval_name,
            "calib": calib_name,
            "train": train_name,
            "calib_is_holdout": holdout,
            "sizes": {"eval": len(eval_idx), "calib": len(calib_idx), "train": len(train_idx)},
        },
    )


def _label_matrix(ds: Dataset, sel: Selection, idx: np.ndarray) -> np.ndarray:
    if sel.task == "multiclass":
        y = ds.columns[sel.target_columns[0]][idx]
        k = len(sel.targets)
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(
                f"Class column {sel.target_columns[0]!r} has class {int(y.max())} but the model "
                f"has {k} outputs; classes must be 0..{k - 1}."
            )
        out = np.zeros((len(idx), k), dtype=np.int8)
        out[np.arange(len(idx)), y] = 1
        return out
    return np.stack([ds.columns[c][idx] for c in sel.target_columns], axis=1).astype(np.int8)


def _group_matrix(ds: Dataset, sel: Selection, idx: np.ndarray) -> np.ndarray:
    return np.stack([ds.columns[g][idx] for g in sel.groups], axis=1).astype(np.int64)


# ---------------------------------------------------------------------------- preprocessing
def _preprocess(cfg: AuditConfig, ds: Dataset, lm: LoadedModel) -> dict[str, Any]:
    meta = lm.preprocess or {}
    source = "default"
    if meta:
        source = "checkpoint"
    size = cfg.image_size or meta.get("image_size")
    if size is None:
        size = default_image_size(ds)
    mean = cfg.mean or tuple(meta.get("mean", IMAGENET_MEAN))
    std = cfg.std or tuple(meta.get("std", IMAGENET_STD))
    if cfg.image_size or cfg.mean or cfg.std:
        source = "flags"
    return {
        "image_size": int(size),
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "source": source,
    }


def _thumbnail(image: torch.Tensor, size: int = 64) -> str:
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
class _Decoder:
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


def _split_blocks(
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


# ---------------------------------------------------------------------------- the run
def run_audit(config: AuditConfig, *, progress: Progress | None = None) -> AuditResult:
    """Run a whole audit and write its reports.

    Parameters
    ----------
    config : AuditConfig
        What to audit and how.
    progress : Progress, optional
        Progress sink (the CLI's rich bars); silent by default.

    Returns
    -------
    AuditResult
        The report data, the gate decision and the written files (empty on non-zero ranks
        under torchrun, which compute nothing beyond their inference shards).
    """
    progress = progress or SilentProgress()
    cfg = config
    device = inference.resolve_device(cfg.device)
    precision = inference.resolve_precision(cfg.precision, device)
    dist_ctx = inference.init_distributed(device)
    caches: list[ImageCache] = []
    staging = None
    try:
        if dist_ctx.is_main:
            # Before any loading or inference: a bad --out fails in a second, not after the
            # audit; the staging folder inside --out also holds the pruned checkpoints.
            staging = open_staging(cfg.out, _output_names(cfg), summary_out=cfg.summary_out)
        lm = load_model(cfg.model, arch=cfg.arch, trust_checkpoint=cfg.trust_checkpoint)
        ds = load_dataset(cfg.data, labels_file=cfg.labels_file)
        sel = _select(cfg, ds, lm)
        pre = _preprocess(cfg, ds, lm)
        if cfg.validate and cfg.audit_sparsities:
            _check_prunable(cfg, lm)
        if (
            cfg.save_pruned
            and not pruning.get_method(cfg.method).structural
            and lm.format not in ("prune-audit", "state_dict", "torchscript")
        ):
            raise UsageError(
                f"--save-pruned cannot write a loadable copy of a {lm.format} model; it supports "
                "prune-audit checkpoints, state_dicts (with --arch) and TorchScript. Convert the "
                "model with audit.save_checkpoint, or drop --save-pruned."
            )
        runtime = inference.Runtime(
            device=device,
            precision=precision,
            batch_size=cfg.batch_size or inference.default_batch_size(device),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            dist=dist_ctx,
            calib_batch_size=cfg.batch_size or inference.CALIB_BATCH_SIZE,
        )

        decoder = _Decoder(ds, pre["image_size"], cfg, dist_ctx)
        # Decode once: evaluation and calibration images share one cache (and one dense pass).
        # Under torchrun each rank decodes only its contiguous shard of each split.
        mine = np.concatenate(
            [
                sel.eval_idx[dist_ctx.shard(len(sel.eval_idx))],
                sel.calib_idx[dist_ctx.shard(len(sel.calib_idx))],
            ]
        )
        with progress.task("Decoding images", len(mine)) as advance:
            cache = decoder.decode("eval+calib", mine, advance)
        caches.append(cache)
        # The cache keeps request order minus skips, so this rank's eval rows lead it.
        n_eval_here = int(np.isin(cache.indices, sel.eval_idx).sum())
        held = inference.all_gather_object(
            (cache.indices[:n_eval_here], cache.indices[n_eval_here:], cache.skipped), dist_ctx
        )
        eval_idx = np.concatenate([h[0] for h in held]).astype(np.int64)
        calib_idx = np.concatenate([h[1] for h in held]).astype(np.int64)
        skipped = [item for h in held for item in h[2]]
        if len(eval_idx) == 0 or len(calib_idx) == 0:
            raise DataError(
                "After skipping unreadable images nothing is left to evaluate or calibrate on; "
                "fix the images or choose other splits."
            )
        eval_counts = tuple(len(h[0]) for h in held)
        calib_counts = tuple(len(h[1]) for h in held)
        rank = dist_ctx.rank
        # Views into the one cache (no copy of the images).
        eval_images = inference.Shard(cache.images[:n_eval_here], eval_counts, rank)
        calib_images = inference.Shard(cache.images[n_eval_here:], calib_counts, rank)
        both = inference.Shard(
            cache.images, tuple(e + c for e, c in zip(eval_counts, calib_counts, strict=True)), rank
        )

        model = inference.prepare_model(lm.model, runtime)
        with _model_failures(cfg, pre, cache.images):
            runtime = inference.tune_runtime(
                runtime, model, cache.images, auto_batch_size=cfg.batch_size is None
            )
            with progress.task("Dense inference", cache.images.shape[0]) as advance:
                all_logits = inference.predict(model, both, runtime, progress=advance)
        _check_logits(all_logits, sel, cfg)
        # Rank r's block of the gathered logits is its eval rows, then its calib rows.
        eval_rows, calib_rows = _split_blocks(eval_counts, calib_counts)
        eval_logits, calib_logits = all_logits[eval_rows], all_logits[calib_rows]

        labels = _label_matrix(ds, sel, eval_idx)
        calib_labels = _label_matrix(ds, sel, calib_idx)
        groups = _group_matrix(ds, sel, eval_idx)
        train_source = sel.train_idx if len(sel.train_idx) else calib_idx
        warnings: list[str] = [f"skipped unreadable image {i}: {r}" for i, r in skipped[:20]]
        if cfg.arch and lm.format in ("torchscript", "export", "pickle"):
            warnings.append(
                f"--arch {cfg.arch} was ignored: {Path(cfg.model).name} is a {lm.format} model, "
                "which carries its own architecture."
            )
        if not len(sel.train_idx):
            warnings.append(
                "No train split: bias amplification's majority group and the rare-value "
                f"direction are taken from the calibration split ({sel.splits['calib']})."
            )
        pop = criteria.build_population(
            sel.targets,
            sel.task,
            labels,
            groups,
            sel.groups,
            train_labels=_label_matrix(ds, sel, train_source),
            train_groups=_group_matrix(ds, sel, train_source),
            min_group_size=cfg.policy.min_group_size,
            band=cfg.uncertainty_band,
            value_names={g: ds.class_names[g] for g in sel.groups if g in ds.class_names},
        )
        for key in pop.keys:
            for c, value in enumerate(key.values):
                if not key.valid[c]:
                    warnings.append(
                        f"Group {key.name}={value} has {int(key.sizes[c])} samples, fewer than "
                        f"min_group_size={cfg.policy.min_group_size}: its rates are shown but "
                        "it is left out of gaps (not estimable there)."
                    )
                    continue
                for need, rates in (("positives", "TPR/FNR"), ("negatives", "FPR")):
                    counts = key.positives[:, c] if need == "positives" else key.negatives[:, c]
                    few = [
                        t
                        for t, k in zip(pop.targets, counts, strict=True)
                        if k < key.min_group_size
                    ]
                    if few:
                        warnings.append(
                            f"Group {key.name}={value} has fewer than min_group_size="
                            f"{key.min_group_size} {need} for {', '.join(few)}: the {rates} there "
                            "is not estimable and left out of gaps and gate checks."
                        )

        dense_probs = criteria.probabilities(eval_logits, sel.task)
        calib_probs = criteria.probabilities(calib_logits, sel.task)
        thresholds = {
            "default": np.full(len(sel.targets), 0.5),
            "calibrated": (
                M.calibrate_thresholds(calib_probs, calib_labels)
                if sel.task != "multiclass"
                else np.full(len(sel.targets), 0.5)
            ),
        }

        report: dict[str, Any] | None = None
        boot = None
        if dist_ctx.is_main:
            with progress.task("Dense criteria", None):
                dense = criteria.model_metrics(pop, dense_probs, thresholds)
                fc = forecast.forecast(
                    pop,
                    dense_probs,
                    thresholds[cfg.policy.thresholds],
                    dense["interdependence"],
                    # Per requested sparsity (the audited ones; with --no-validate the
                    # ones that would be audited), plus the policy's target.
                    sparsities=_forecast_sparsities(cfg),
                    target_sparsity=cfg.policy.target_sparsity,
                    recovery=cfg.recovery,
                )
                susceptible = forecast.susceptible_samples(
                    pop, dense_probs, thresholds["default"], top_k=cfg.top_k
                )
                gallery = forecast.gallery_samples(pop, dense_probs, thresholds["default"])
                for item in [*susceptible, *gallery]:
                    i = item["index"]
                    item["id"] = str(ds.ids[eval_idx[i]])
                    item["groups"] = {
                        k.name: k.values[k.cells[i]] for k in pop.keys if "×" not in k.name
                    }
                thumbs = decoder.rows(
                    eval_images,
                    eval_idx,
                    sorted({item["index"] for item in [*susceptible, *gallery]}),
                )
                for item in [*susceptible, *gallery]:
                    item["thumbnail"] = _thumbnail(thumbs[item["index"]])
        levels: list[dict[str, Any]] = []
        pruned_probs: list[np.ndarray] = []
        if cfg.validate:
            if dist_ctx.is_main:
                with progress.task(f"Bootstrap ({cfg.bootstrap} paired resamples, dense)", None):
                    boot = validate.PairedBootstrap(
                        pop, dense_probs, thresholds, n_resamples=cfg.bootstrap, seed=cfg.seed
                    )
            train_cache = None
            if pruning.get_recovery(cfg.recovery).needs_train_split and cfg.audit_sparsities:
                with progress.task("Decoding train images", len(sel.train_idx)) as advance:
                    train_cache = decoder.decode("train", sel.train_idx, advance)
                caches.append(train_cache)
            run = _LevelRun(
                cfg=cfg,
                lm=lm,
                sel=sel,
                pre=pre,
                ds=ds,
                runtime=runtime,
                eval_images=eval_images,
                context=_recovery_context(
                    cfg, sel, runtime, calib_images, train_cache, ds, progress, lm.model
                ),
                progress=progress,
                pop=pop,
                dense_probs=dense_probs,
                labels=labels,
                thresholds=thresholds,
                boot=boot,
                eval_idx=eval_idx,
                is_main=dist_ctx.is_main,
                staging=staging.path if cfg.save_pruned and staging is not None else None,
            )
            _own_levels(run, levels, pruned_probs, warnings)
            _supplied_levels(run, levels, pruned_probs)

        if not dist_ctx.is_main:
            decoder.write_stats()
            return AuditResult(report={}, passed=True, files=())

        validation = None
        if cfg.validate:
            main_level = gate.judged_levels(levels, cfg.policy)[0]
            agreement = validate.forecast_agreement(fc, main_level, mode=cfg.policy.thresholds)
            agreement["by_level"] = [
                {
                    k: validate.forecast_agreement(fc, lv, mode=cfg.policy.thresholds)[k]
                    for k in (
                        "sparsity",
                        "direction_hit_rate",
                        "interval_coverage",
                        "risk_hit_rate",
                    )
                }
                for lv in levels
            ]
            validation = {
                "method": pruning.get_method(cfg.method).label,
                "recovery": cfg.recovery,
                "levels": levels,
                "forecast_agreement": agreement,
                "max_safe_sparsity": gate.max_safe_sparsity(levels, dense, cfg.policy),
            }
        gate_result = gate.evaluate_gate(
            cfg.policy,
            dense=dense,
            forecast=fc,
            levels=levels or None,
            policy_source=cfg.policy_source,
        )
        for c in gate_result["checks"]:
            if c["outcome"] == "undefined" and cfg.policy.on_undefined == "warn":
                warnings.append(
                    f"gate check {c['name']} for {c['target']} is undefined: {c['detail']}"
                )
            if c["outcome"] == "inconclusive" and cfg.policy.on_inconclusive == "warn":
                need = f"; about {c['n_needed']:,} samples would settle it" if c["n_needed"] else ""
                warnings.append(
                    f"gate check {c['name']} for {c['target']}"
                    + (f" by {c['group']}" if c["group"] else "")
                    + f" is inconclusive: {c['detail']} straddles the limit {c['limit']:g}{need}"
                )
        report = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "prune-audit", "version": __version__},
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "verdict": _verdict(gate_result, fc, validation),
            "inputs": {
                "model": {
                    "path": str(cfg.model),
                    "format": lm.format,
                    "arch": lm.arch,
                    "n_parameters": lm.n_parameters,
                },
                "data": {"path": str(cfg.data), "layout": ds.layout},
                "n_samples": int(pop.n),
                "task": sel.task,
                "targets": list(sel.targets),
                "groups": list(sel.groups),
                "splits": sel.splits
                | {"sizes": sel.splits["sizes"] | {"eval": int(pop.n), "calib": len(calib_idx)}},
                "preprocessing": pre,
                "device": str(device),
                "precision": precision,
                "world_size": dist_ctx.world,
                "seed": cfg.seed,
                "bootstrap": cfg.bootstrap,
                "uncertainty_band": list(cfg.uncertainty_band),
                "thresholds": {
                    mode: {t: float(v) for t, v in zip(sel.targets, arr, strict=True)}
                    for mode, arr in thresholds.items()
                },
                "skipped_images": [{"id": i, "reason": r} for i, r in skipped],
            },
            "dense": dense,
            "forecast": fc,
            "susceptible": susceptible,
            "gallery": gallery,
            "calibration_curves": _calibration_curves(pop, dense_probs, levels, pruned_probs),
            "uncertainty_histograms": _uncertainty_histograms(
                pop, dense_probs, levels, pruned_probs, class_column=sel.target_columns[0]
            ),
            "validation": validation,
            "gate": gate_result,
            "warnings": warnings,
        }
        predictions = {
            "ids": np.asarray([str(x) for x in ds.ids[eval_idx]]),
            "labels": labels,
            "groups": groups,
            # float64, exactly the probabilities every number in report.json was computed
            # from (float32 saturates at 1.0 and moved a recomputed AUROC by 4e-4); the dense
            # logits too, as the model produced them
            "dense_probs": dense_probs.astype(np.float64),
            "dense_logits": eval_logits,
            "sparsities": np.asarray([lv["sparsity"] for lv in levels], dtype=np.float64),
            "level_labels": np.asarray([str(lv["label"]) for lv in levels], dtype=np.str_),
            "pruned_probs": (
                np.stack(pruned_probs).astype(np.float64)
                if pruned_probs
                else np.zeros((0, *dense_probs.shape), dtype=np.float64)
            ),
            "thresholds_default": thresholds["default"].astype(np.float64),
            "thresholds_calibrated": thresholds["calibrated"].astype(np.float64),
            "target_names": np.asarray(sel.targets),
            "group_names": np.asarray(sel.groups),
        }
        from audit.report import write_reports

        with progress.task("Writing reports", None):
            files = write_reports(
                report,
                cfg.out,
                formats=cfg.formats,
                predictions=predictions,
                summary_out=cfg.summary_out,
                extra_files=(
                    sorted(p for p in staging.path.iterdir() if p.name.startswith("pruned-"))
                    if cfg.save_pruned and staging is not None
                    else ()
                ),
                staging=staging,
            )
        decoder.write_stats()
        run_id, notices = _log_to_mlflow(cfg, report, files) if cfg.mlflow else (None, ())
        return AuditResult(
            report=report,
            passed=bool(gate_result["passed"]),
            files=tuple(files),
            mlflow_run_id=run_id,
            notices=notices,
        )
    finally:
        for c in caches:
            c.close()
        if staging is not None:
            staging.discard()  # a no-op once write_reports committed it
        inference.shutdown_distributed()


def _log_to_mlflow(
    cfg: AuditConfig, report: dict[str, Any], files: list[Path]
) -> tuple[str | None, tuple[str, ...]]:
    """Log the written audit to MLflow; a failure is a warning, never a lost report."""
    from audit.integrations.mlflow import log_audit

    try:
        return log_audit(report, files, cfg), ()
    except Exception as exc:  # noqa: BLE001 - the reports are written; the gate decides the exit
        return None, (
            f"--mlflow: logging to MLflow failed ({type(exc).__name__}: {exc}); the reports "
            f"in {cfg.out} are complete and the exit code is the gate's. Check "
            "MLFLOW_TRACKING_URI (a file: store also needs MLFLOW_ALLOW_FILE_STORE=true with "
            "MLflow 3) and rerun, or log them later.",
        )


def _save_pruned(
    staging: Path,
    stem: str,
    pm: torch.nn.Module,
    lm: LoadedModel,
    sel: Selection,
    pre: dict[str, Any],
    method: pruning.PruningMethod,
) -> None:
    """Write a pruned model in a form ``check`` (and ``--pruned``) loads back.

    Same format family as the input; a structurally pruned model no longer fits its
    architecture's state_dict, so it is written as a ``torch.export`` program (``.pt2``)
    with a dynamic batch dimension.
    """
    pm = pm.to("cpu").eval()
    if method.structural:
        size = int(pre["image_size"])
        example = torch.zeros(2, 3, size, size)
        program = torch.export.export(
            pm, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
        )
        torch.export.save(program, str(staging / f"{stem}.pt2"))
        return
    path = staging / f"{stem}.pt"
    if lm.format == "torchscript":
        torch.jit.save(pm, str(path))
        return
    save_checkpoint(
        path,
        pm,
        arch=str(lm.arch),
        arch_kwargs=lm.arch_kwargs,
        outputs=list(sel.targets),
        task=sel.task,
        preprocess={k: pre[k] for k in ("image_size", "mean", "std")},
    )


def _forecast_sparsities(cfg: AuditConfig) -> tuple[float, ...]:
    fixed = pruning.get_method(cfg.method).fixed_sparsity
    if fixed is not None:
        return (round(fixed, 6),)
    return tuple(cfg.sparsities or DEFAULT_SPARSITIES)


def _check_prunable(cfg: AuditConfig, lm: LoadedModel) -> None:
    """Fail before any inference when the model cannot be pruned/recovered as asked."""
    try:
        params = pruning.prunable_parameters(lm.model, exclude=cfg.exclude)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--exclude: {exc}") from None
    if not params:
        raise CheckpointError(
            f"The model {str(cfg.model)!r} has no prunable Conv/Linear weights"
            + (" left after --exclude" if cfg.exclude else "")
            + "; there is nothing to validate. Use --no-validate for the dense-only forecast."
        )
    method = pruning.get_method(cfg.method)
    if method.structural and lm.format in ("torchscript", "export"):
        raise UsageError(
            f"--method {method.label} removes channels by editing the module graph, which a "
            f"{lm.format} model does not expose. Give MODEL as a prune-audit checkpoint, a "
            "state_dict with --arch, or a pickled module (--trust-checkpoint)."
        )
    if cfg.recovery == "bn" and lm.format == "export":
        has_bn = (
            any(
                "batch_norm" in str(getattr(n, "target", ""))
                for n in getattr(lm.model, "graph", ()).nodes
            )
            if hasattr(lm.model, "graph")
            else False
        )
        if has_bn:
            raise UsageError(
                "A torch.export program has its BatchNorm folded in eval mode, so --recovery bn "
                "cannot re-estimate its statistics. Use --recovery none, or give the model as a "
                "prune-audit checkpoint / state_dict with --arch."
            )


@contextlib.contextmanager
def _model_failures(cfg: AuditConfig, pre: dict[str, Any], images: torch.Tensor) -> Iterator[None]:
    """Report an exception raised inside the model's own forward as an input error.

    Only exceptions whose traceback passes through a module call (``nn.Module.__call__``,
    a TorchScript or exported program) are the model's; anything else is prune-audit's and
    stays an internal error. Out-of-memory is neither and propagates unchanged.
    """
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised unless the model raised it
        if isinstance(exc, AuditError) or not _raised_in_forward(exc):
            raise
        shape = "×".join(str(d) for d in images.shape[1:])
        where = "--image-size" if cfg.image_size is not None else "the checkpoint or data"
        # TorchScript prefixes its own traceback; the last line is the model's error.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        what = lines[-1][:300] if lines else ""
        if not re.match(r"^[\w.]*(Error|Exception)\b", what):
            what = f"{type(exc).__name__}: {what}"
        raise CheckpointError(
            f"The model {str(cfg.model)!r} failed on its input: {what.rstrip('.')}. "
            f"prune-audit fed it batches of {shape} images "
            f"(image size {pre['image_size']} from {where}; mean {list(pre['mean'])}, std "
            f"{list(pre['std'])}). Check that --image-size, --mean/--std and --arch match what "
            "the network was built and trained for (a too-small image size makes convolutions "
            "or pooling fail), or that the checkpoint's own code runs on such a batch."
        ) from exc


def _raised_in_forward(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in ("_call_impl", "_wrapped_call_impl", "forward") and (
            "torch" in code.co_filename or code.co_name == "forward"
        ):
            return True
        tb = tb.tb_next
    # TorchScript raises from C++ with no Python frame of the model.
    return isinstance(exc, torch.jit.Error)


def _output_names(cfg: AuditConfig) -> list[str]:
    """The files a run writes into ``--out`` (checked before the run starts)."""
    names = [get_report_format(f).filename for f in cfg.formats] + [PREDICTIONS_NAME]
    if cfg.save_pruned and cfg.validate:
        ext = ".pt2" if pruning.get_method(cfg.method).structural else ".pt"
        names += [f"pruned-{s:g}{ext}" for s in cfg.audit_sparsities]
    return names


def _check_logits(
    logits: np.ndarray, sel: Selection, cfg: AuditConfig, *, model_path: Path | None = None
) -> None:
    model_path = model_path or cfg.model
    if logits.ndim != 2 or logits.shape[1] != len(sel.targets):
        raise CheckpointError(
            f"The model {str(model_path)!r} produced "
            f"{logits.shape[1] if logits.ndim == 2 else logits.shape} "
            f"outputs per image but {len(sel.targets)} targets were selected "
            f"({', '.join(sel.targets)}). Pass one --target per model output, in output order."
        )
    bad = ~np.isfinite(logits)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CheckpointError(
            f"The model {str(model_path)!r} produced NaN/Inf logits ({int(bad.any(axis=1).sum())} "
            f"images; first at image row {row}, output {sel.targets[col]!r}). Check the "
            "checkpoint's weights and the preprocessing (--image-size, --mean, --std); with "
            "--precision fp16 try bf16 or fp32."
        )


def _recovery_context(
    cfg: AuditConfig,
    sel: Selection,
    runtime: inference.Runtime,
    calib_images: inference.Shard,
    train_cache: ImageCache | None,
    ds: Dataset,
    progress: Progress,
    model: torch.nn.Module,
) -> pruning.RecoveryContext:
    """Everything a recovery may use, built once per audit (batches stay lazy)."""
    train_batches = loss_fn = None
    if train_cache is not None:
        y = _label_matrix(ds, sel, train_cache.indices)
        target = y.argmax(axis=1) if sel.task == "multiclass" else y.astype(np.float32)
        images = train_cache.images

        def train_batches(epoch: int, seed: int) -> Any:
            return inference.training_batches(images, target, runtime, epoch=epoch, seed=seed)

        loss_fn = (
            torch.nn.functional.cross_entropy
            if sel.task == "multiclass"
            else torch.nn.functional.binary_cross_entropy_with_logits
        )
    # Structural methods trace with it; a rank may hold no calibration row (n < world).
    probe = calib_images.images[:2]
    if probe.shape[0] == 0:
        probe = torch.zeros((1, *calib_images.images.shape[1:]), dtype=torch.uint8)
    example = next(inference.input_batches(probe, runtime, seed=cfg.seed))
    # Under torchrun each rank holds a shard of the calibration split: pruned copies get
    # BatchNorm layers that all-reduce their statistics, or (when the model's statistics
    # live elsewhere) every rank gets every calibration batch whole.
    whole = not inference.batchnorm_syncable(model)

    def prepare(m: torch.nn.Module) -> torch.nn.Module:
        m = inference.prepare_model(m, runtime)
        inference.sync_batchnorm(m, runtime)
        return m

    return pruning.RecoveryContext(
        device=runtime.device,
        exclude=tuple(cfg.exclude),
        prepare=prepare,
        calib_batches=lambda: inference.input_batches(
            calib_images, runtime, seed=cfg.seed, whole=whole
        ),
        train_batches=train_batches,
        loss_fn=loss_fn,
        example_input=example,
        finetune_steps=cfg.finetune_steps,
        finetune_epochs=cfg.finetune_epochs,
        finetune_lr=cfg.finetune_lr,
        progress=progress.task,
    )


def _pruned_pass(
    cfg: AuditConfig,
    lm: LoadedModel,
    sel: Selection,
    s: float,
    runtime: inference.Runtime,
    eval_images: inference.Shard,
    context: pruning.RecoveryContext,
    progress: Progress,
    *,
    recovery: pruning.Recovery | None = None,
) -> tuple[torch.nn.Module, Any, list[np.ndarray]]:
    """Prune a copy at sparsity s, recover, and return (model, stats, eval probabilities)."""
    method = pruning.get_method(cfg.method)
    recovery = recovery or pruning.get_recovery(cfg.recovery)
    seeds = cfg.finetune_seeds if recovery.seeded else (cfg.seed,)
    all_probs = []
    for seed in seeds:
        pm, stats = recovery.run(lm.model, s, method, context, seed=seed)
        inference.broadcast_state(pm, runtime)
        with progress.task(f"Inference at sparsity {s:g}", eval_images.images.shape[0]) as adv:
            logits = inference.predict(pm, eval_images, runtime, progress=adv)
        all_probs.append(criteria.probabilities(logits, sel.task))
    return pm, stats, all_probs


@dataclass(frozen=True)
class _LevelRun:
    """What producing and measuring one validation level needs (built once per audit)."""

    cfg: AuditConfig
    lm: LoadedModel
    sel: Selection
    pre: dict[str, Any]
    ds: Dataset
    runtime: inference.Runtime
    eval_images: inference.Shard
    context: pruning.RecoveryContext
    progress: Progress
    pop: criteria.Population
    dense_probs: np.ndarray
    labels: np.ndarray
    thresholds: dict[str, np.ndarray]
    boot: validate.PairedBootstrap | None
    eval_idx: np.ndarray
    is_main: bool
    staging: Path | None


def _mean_accuracy(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Top-1 accuracy (multiclass) or the mean over targets of accuracy at threshold 0.5."""
    if task == "multiclass":
        return float(np.mean(probs.argmax(axis=1) == labels.argmax(axis=1)))
    return float(np.mean((probs > 0.5) == (labels == 1)))


def _own_levels(
    run: _LevelRun,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
    warnings: list[str],
) -> None:
    """Prune MODEL at each audited sparsity with the configured method and recovery."""
    cfg = run.cfg
    method = pruning.get_method(cfg.method)
    recovery = pruning.get_recovery(cfg.recovery)
    sparsities = cfg.audit_sparsities
    dense_acc = _mean_accuracy(run.dense_probs, run.labels, run.sel.task)
    pm = None
    with run.progress.task("Pruning levels", len(sparsities)) as advance_levels:
        for s in sparsities:
            pm, stats, seed_probs = _pruned_pass(
                cfg, run.lm, run.sel, s, run.runtime, run.eval_images, run.context, run.progress
            )
            probs = np.mean(seed_probs, axis=0)
            pruned_probs.append(probs)
            baseline = None
            if recovery.needs_train_split and run.lm.format != "export":
                # The cheapest recovery at the same sparsity: a fine-tuned level worse than it
                # is a recovery that failed, not an effect of pruning.
                _, _, bn_probs = _pruned_pass(
                    cfg,
                    run.lm,
                    run.sel,
                    s,
                    run.runtime,
                    run.eval_images,
                    run.context,
                    run.progress,
                    recovery=pruning.get_recovery("bn"),
                )
                baseline = _mean_accuracy(bn_probs[0], run.labels, run.sel.task)
            if run.staging is not None and run.is_main:
                _save_pruned(run.staging, f"pruned-{s:g}", pm, run.lm, run.sel, run.pre, method)
                pause_point("pruned-saved")
            if run.is_main:
                level = _level(run, s, stats, seed_probs, label=f"{s:g}", source="method")
                acc = _mean_accuracy(probs, run.labels, run.sel.task)
                level["accuracy"] = {
                    "dense": dense_acc,
                    "pruned": acc,
                    "change": acc - dense_acc,
                    "one_shot_bn": baseline,
                }
                if baseline is not None and acc < baseline:
                    warnings.append(
                        f"At sparsity {s:g} the {cfg.recovery} level's accuracy {acc:.4f} is below "
                        f"one-shot pruning + BatchNorm recalibration ({baseline:.4f}): the "
                        "recovery failed, so this level measures a broken model rather than an "
                        "effect of pruning. Raise --finetune-steps or lower --finetune-lr, or "
                        "use --recovery bn."
                    )
                levels.append(level)
            advance_levels(1)
    del pm


def _supplied_levels(
    run: _LevelRun, levels: list[dict[str, Any]], pruned_probs: list[np.ndarray]
) -> None:
    """Audit each ``--pruned`` model against MODEL as a level of its own (SPEC §6.6)."""
    cfg, sel = run.cfg, run.sel
    dense_acc = _mean_accuracy(run.dense_probs, run.labels, sel.task)
    dense_params = sum(p.numel() for p in run.lm.model.parameters())
    for path in cfg.pruned:
        lm = load_model(path, arch=cfg.arch, trust_checkpoint=cfg.trust_checkpoint)
        _check_same_outputs(path, lm, run.lm, sel)
        model = inference.prepare_model(lm.model, run.runtime)
        inference.broadcast_state(model, run.runtime)
        rows = run.eval_images.images.shape[0]
        with run.progress.task(f"Inference of {path.name}", rows) as adv:
            logits = inference.predict(model, run.eval_images, run.runtime, progress=adv)
        _check_logits(logits, sel, cfg, model_path=path)
        probs = criteria.probabilities(logits, sel.task)
        pruned_probs.append(probs)
        if not run.is_main:
            continue
        stats = _supplied_stats(lm.model, run.lm.model)
        level = _level(run, stats.achieved, stats, [probs], label=path.name, source="supplied")
        n_params = sum(p.numel() for p in lm.model.parameters())
        acc = _mean_accuracy(probs, run.labels, sel.task)
        level["model"] = {
            "path": str(path),
            "format": lm.format,
            "n_parameters": int(n_params),
            "n_parameters_dense": int(dense_params),
            "parameter_reduction": 1.0 - n_params / dense_params if dense_params else None,
            "shapes_differ": stats.structure is not None,
        }
        level["accuracy"] = {
            "dense": dense_acc,
            "pruned": acc,
            "change": acc - dense_acc,
            "one_shot_bn": None,
        }
        levels.append(level)


def _supplied_stats(model: torch.nn.Module, dense: torch.nn.Module) -> pruning.PruneStats:
    """Measured sparsity of a supplied model: zeros / prunable weights, overall and per layer.

    When its prunable weights have other shapes than the dense model's (a structurally
    pruned model), ``structure`` records both parameter counts.
    """
    stats = pruning.sparsity_stats(model, None, requested=0.0, method="supplied")
    shapes = [tuple(p.shape) for _, p in pruning.prunable_parameters(model)]
    dense_shapes = [tuple(p.shape) for _, p in pruning.prunable_parameters(dense)]
    if shapes == dense_shapes:
        return stats
    return dataclasses.replace(
        stats,
        structure={
            "n_parameters_dense": int(sum(p.numel() for p in dense.parameters())),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "macs_dense": None,
            "macs": None,
        },
    )


def _check_same_outputs(path: Path, lm: LoadedModel, dense: LoadedModel, sel: Selection) -> None:
    """A supplied model must answer the same outputs, by count and by name, as MODEL."""
    if lm.num_outputs is not None and lm.num_outputs != len(sel.targets):
        raise CheckpointError(
            f"--pruned model {str(path)!r} has {lm.num_outputs} outputs but the dense model "
            f"{str(dense.outputs and ', '.join(dense.outputs) or len(sel.targets))} has "
            f"{len(sel.targets)}; a pruned model must keep every output of the model it was "
            "pruned from. Pass the pruned copy of this MODEL."
        )
    if lm.outputs and dense.outputs and list(lm.outputs) != list(dense.outputs):
        raise CheckpointError(
            f"--pruned model {str(path)!r} names its outputs {', '.join(lm.outputs)} but the "
            f"dense model names them {', '.join(dense.outputs)}; a pruned model must keep the "
            "outputs of the model it was pruned from, in the same order."
        )


def _level(
    run: _LevelRun,
    s: float,
    stats: Any,
    seed_probs: list[np.ndarray],
    *,
    label: str,
    source: str,
) -> dict[str, Any]:
    pop, cfg, dense_probs, thresholds = run.pop, run.cfg, run.dense_probs, run.thresholds
    assert run.boot is not None
    # With several fine-tuning seeds the level's metrics are those of the seed-averaged
    # probabilities, while flips and CIEs use each sample's modal prediction (SPEC §6.3).
    probs = np.mean(seed_probs, axis=0)
    dense_pred = criteria.predict_labels(dense_probs, thresholds["default"], pop.task)
    pruned_pred = _modal_prediction(
        [criteria.predict_labels(p, thresholds["default"], pop.task) for p in seed_probs],
        dense_pred,
        pop.task,
    )
    flip_stats, flipped = validate.flips(pop, dense_pred, pruned_pred)
    cie = np.flatnonzero(flipped.any(axis=1))
    sd = stats.to_dict()
    level = {
        "sparsity": float(s),
        "label": label,
        "source": source,
        "achieved_sparsity": float(sd["achieved"]),
        "per_layer": sd["per_layer"],
        "metrics": criteria.model_metrics(pop, probs, thresholds),
        "delta": run.boot.deltas(probs),
        "flips": flip_stats,
        "ranking_quality": validate.ranking_quality(pop, dense_probs, flipped, k=cfg.top_k),
        "cie": {
            "count": int(len(cie)),
            "ids": [str(run.ds.ids[run.eval_idx[i]]) for i in cie[:50]],
        },
    }
    if "structure" in sd:
        level["structure"] = sd["structure"]
    return level


def _modal_prediction(preds: list[np.ndarray], dense_pred: np.ndarray, task: str) -> np.ndarray:
    """Majority vote over seeds; a tie keeps the dense prediction (no change is claimed)."""
    votes = np.mean(preds, axis=0)
    if task == "multiclass":
        top = votes.max(axis=1, keepdims=True)
        dense_is_top = (votes * dense_pred).max(axis=1, keepdims=True) == top
        winner = np.zeros_like(dense_pred)
        winner[np.arange(len(votes)), votes.argmax(axis=1)] = 1
        return np.where(dense_is_top, dense_pred, winner).astype(np.int8)
    return np.where(votes > 0.5, 1, np.where(votes < 0.5, 0, dense_pred)).astype(np.int8)


def _named_models(
    dense_probs: np.ndarray, levels: list[dict[str, Any]], pruned_probs: list[np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """``[("dense", probs), ("0.9", probs), ...]``: the model names the plot data is keyed by."""
    return [("dense", dense_probs)] + [
        (lv.get("label") or f"{lv['sparsity']:g}", p)
        for lv, p in zip(levels, pruned_probs, strict=True)
    ]


def _calibration_curves(
    pop: criteria.Population,
    dense_probs: np.ndarray,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, t in enumerate(pop.targets):
        curves = {}
        for name, probs in _named_models(dense_probs, levels, pruned_probs):
            mean_p, mean_y, count = M.calibration_curve(pop.labels[:, a], probs[:, a])
            keep = np.asarray(count) > 0
            curves[name] = {
                "mean_p": [float(x) for x in np.asarray(mean_p)[keep]],
                "mean_y": [float(x) for x in np.asarray(mean_y)[keep]],
                "count": [int(x) for x in np.asarray(count)[keep]],
            }
        out[t] = curves
    return out


HISTOGRAM_BINS = 20


def _uncertainty_histograms(
    pop: criteria.Population,
    dense_probs: np.ndarray,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
    *,
    class_column: str,
) -> dict[str, Any]:
    """Counts of p per group cell in 20 equal-width bins, dense and per pruned level.

    Binary/multilabel: one entry per target, of its positive-class p. Multiclass: one entry,
    keyed by the class column, of the top-class p (the per-class columns would all share it).
    """
    multiclass = pop.task == "multiclass"
    models = _named_models(dense_probs, levels, pruned_probs)
    outputs: list[tuple[str, Callable[[np.ndarray], np.ndarray]]]
    if multiclass:
        outputs = [(class_column, lambda probs: probs.max(axis=1))]
    else:
        outputs = [(t, lambda probs, a=a: probs[:, a]) for a, t in enumerate(pop.targets)]
    by_output: dict[str, Any] = {}
    for name, column in outputs:
        by_key: dict[str, Any] = {}
        for key in pop.keys:
            counts = {
                model: M.probability_histogram(
                    column(probs), cells=key.cells, n_cells=key.n_cells, n_bins=HISTOGRAM_BINS
                )
                for model, probs in models
            }
            by_key[key.name] = [
                {
                    "value": value,
                    "n": int(key.sizes[c]),
                    "counts": {model: [int(x) for x in h[c]] for model, h in counts.items()},
                }
                for c, value in enumerate(key.values)
            ]
        by_output[name] = by_key
    return {
        "quantity": "top_class_probability" if multiclass else "probability",
        "edges": [b / HISTOGRAM_BINS for b in range(HISTOGRAM_BINS + 1)],
        "band": [float(x) for x in pop.band],
        "targets": by_output,
    }


def _verdict(
    gate_result: dict[str, Any], fc: dict[str, Any], validation: dict[str, Any] | None
) -> dict[str, Any]:
    passed = bool(gate_result["passed"])
    safe = validation["max_safe_sparsity"] if validation else None
    if passed:
        head = "Gate passed: pruning stays within the policy's bias limits"
    else:
        pol = gate_result["policy"]
        blocks = {"fail"} | {
            k for k in ("undefined", "inconclusive") if pol.get(f"on_{k}", "fail") == "fail"
        }
        outcomes = [c["outcome"] for c in gate_result["checks"] if c["outcome"] in blocks]
        parts = [
            f"{outcomes.count(k)} {k}"
            for k in ("fail", "inconclusive", "undefined")
            if outcomes.count(k)
        ]
        head = f"Gate failed: {len(gate_result['failures'])} check(s) block it" + (
            f" ({', '.join(parts)})" if parts else ""
        )
    if validation:
        head += (
            f"; max safe sparsity {safe:g}."
            if safe is not None
            else "; no audited sparsity is safe."
        )
    else:
        head += f" (forecast only: risk {fc['verdict']})."
    return {
        "passed": passed,
        "headline": head,
        "forecast": fc["verdict"],
        "max_safe_sparsity": safe,
    }
