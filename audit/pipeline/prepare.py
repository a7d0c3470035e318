"""Load and prepare stages: the model and dataset, preprocessing, runtime, early refusals.

Owns: loading MODEL and DATA, the preprocessing (flags over checkpoint metadata over
defaults), the inference runtime of this run, every check that can refuse a run before any
inference (prunable layers, ``--save-pruned`` support), the files a run will write, and
turning an exception raised inside the model's own forward into an input error.
Must not: decode images, run a forward pass itself, or compute a metric.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit import inference, pruning
from audit.config import AuditConfig
from audit.data import Dataset, default_image_size, load_dataset
from audit.errors import AuditError, CheckpointError, UsageError
from audit.model_io import LoadedModel, load_model
from audit.pipeline.context import RunContext
from audit.pipeline.select import Selection
from audit.report.formats import get_report_format
from audit.report.writer import PREDICTIONS_NAME

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load(ctx: RunContext) -> tuple[LoadedModel, Dataset]:
    """The load stage: MODEL (safely, on CPU) and DATA (its layout detected)."""
    cfg = ctx.cfg
    lm = load_model(cfg.model, arch=cfg.arch, trust_checkpoint=cfg.trust_checkpoint)
    return lm, load_dataset(cfg.data, labels_file=cfg.labels_file)


def prepare(
    ctx: RunContext, ds: Dataset, lm: LoadedModel
) -> tuple[dict[str, Any], inference.Runtime]:
    """Preprocessing and runtime; refuses what cannot be pruned or saved, before inference."""
    cfg = ctx.cfg
    pre = preprocess(cfg, ds, lm)
    if cfg.validate and cfg.audit_sparsities:
        check_prunable(cfg, lm)
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
        device=ctx.device,
        precision=ctx.precision,
        batch_size=cfg.batch_size or inference.default_batch_size(ctx.device),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        dist=ctx.dist,
        calib_batch_size=cfg.batch_size or inference.CALIB_BATCH_SIZE,
    )
    return pre, runtime


def preprocess(cfg: AuditConfig, ds: Dataset, lm: LoadedModel) -> dict[str, Any]:
    """Image size, mean and std: flags over checkpoint metadata over the defaults."""
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


def check_prunable(cfg: AuditConfig, lm: LoadedModel) -> None:
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
def model_failures(cfg: AuditConfig, pre: dict[str, Any], images: torch.Tensor) -> Iterator[None]:
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
        if isinstance(exc, AuditError) or not raised_in_forward(exc):
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


def raised_in_forward(exc: BaseException) -> bool:
    """Whether ``exc``'s traceback passes through a module's forward (the model raised it)."""
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


def output_names(cfg: AuditConfig) -> list[str]:
    """The files a run writes into ``--out`` (checked before the run starts)."""
    names = [get_report_format(f).filename for f in cfg.formats] + [PREDICTIONS_NAME]
    if cfg.save_pruned and cfg.validate:
        ext = ".pt2" if pruning.get_method(cfg.method).structural else ".pt"
        names += [f"pruned-{s:g}{ext}" for s in cfg.audit_sparsities]
    return names


def check_logits(
    logits: np.ndarray, sel: Selection, cfg: AuditConfig, *, model_path: Path | None = None
) -> None:
    """Refuse logits of the wrong width, or NaN/Inf, naming the model and the first row."""
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
