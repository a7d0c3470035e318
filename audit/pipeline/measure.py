"""Dense-pass and measure stages: one forward pass of MODEL, then the evaluated population.

Owns: the single dense inference pass over the evaluation and calibration rows (the runtime
tuned on the first batches), its logits split back into the two sets, the population
(labels, groups, cells, train-side majority groups), the warnings about small groups, and
the default and calibrated thresholds.
Must not: prune, or compute a metric itself (criteria and metrics do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit import criteria, inference
from audit import metrics as M
from audit.data import Dataset
from audit.model_io import LoadedModel
from audit.pipeline.context import RunContext
from audit.pipeline.decode import Decoded, split_blocks
from audit.pipeline.prepare import check_logits, model_failures
from audit.pipeline.select import Selection, group_matrix, label_matrix


@dataclass(frozen=True)
class DensePass:
    """The dense model's logits (gathered on every rank) and the tuned runtime."""

    runtime: inference.Runtime
    eval_logits: np.ndarray
    calib_logits: np.ndarray


def dense_pass(
    ctx: RunContext,
    lm: LoadedModel,
    sel: Selection,
    pre: dict,
    runtime: inference.Runtime,
    decoded: Decoded,
) -> DensePass:
    """The dense pass: every rank runs its shard; rank r's block is its eval, then calib rows."""
    cfg, images = ctx.cfg, decoded.cache.images
    model = inference.prepare_model(lm.model, runtime)
    with model_failures(cfg, pre, images):
        runtime = inference.tune_runtime(
            runtime, model, images, auto_batch_size=cfg.batch_size is None
        )
        with ctx.progress.task("Dense inference", images.shape[0]) as advance:
            logits = inference.predict(model, decoded.both, runtime, progress=advance)
    check_logits(logits, sel, cfg)
    eval_rows, calib_rows = split_blocks(decoded.eval_counts, decoded.calib_counts)
    return DensePass(runtime, logits[eval_rows], logits[calib_rows])


@dataclass(frozen=True)
class Measured:
    """The evaluated population, the dense probabilities and the thresholds."""

    pop: criteria.Population
    labels: np.ndarray
    groups: np.ndarray
    dense_probs: np.ndarray
    thresholds: dict[str, np.ndarray]
    warnings: tuple[str, ...]


def measure(
    ctx: RunContext,
    ds: Dataset,
    lm: LoadedModel,
    sel: Selection,
    decoded: Decoded,
    dense: DensePass,
) -> Measured:
    """The measure stage: population, probabilities, thresholds and the input warnings."""
    cfg = ctx.cfg
    labels = label_matrix(ds, sel, decoded.eval_idx)
    calib_labels = label_matrix(ds, sel, decoded.calib_idx)
    groups = group_matrix(ds, sel, decoded.eval_idx)
    train_source = sel.train_idx if len(sel.train_idx) else decoded.calib_idx
    pop = criteria.build_population(
        sel.targets,
        sel.task,
        labels,
        groups,
        sel.groups,
        train_labels=label_matrix(ds, sel, train_source),
        train_groups=group_matrix(ds, sel, train_source),
        min_group_size=cfg.policy.min_group_size,
        band=cfg.uncertainty_band,
        value_names={g: ds.class_names[g] for g in sel.groups if g in ds.class_names},
    )
    dense_probs = criteria.probabilities(dense.eval_logits, sel.task)
    calib_probs = criteria.probabilities(dense.calib_logits, sel.task)
    calibrated = np.full(len(sel.targets), 0.5)
    if sel.task != "multiclass":
        calibrated = M.calibrate_thresholds(calib_probs, calib_labels)
    return Measured(
        pop=pop,
        labels=labels,
        groups=groups,
        dense_probs=dense_probs,
        thresholds={"default": np.full(len(sel.targets), 0.5), "calibrated": calibrated},
        warnings=tuple(_input_warnings(ctx, lm, sel, decoded, pop)),
    )


def _input_warnings(
    ctx: RunContext,
    lm: LoadedModel,
    sel: Selection,
    decoded: Decoded,
    pop: criteria.Population,
) -> list[str]:
    """Skipped images, an ignored --arch, no train split, and groups too small to judge."""
    cfg = ctx.cfg
    warnings = [f"skipped unreadable image {i}: {r}" for i, r in decoded.skipped[:20]]
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
                    t for t, k in zip(pop.targets, counts, strict=True) if k < key.min_group_size
                ]
                if few:
                    warnings.append(
                        f"Group {key.name}={value} has fewer than min_group_size="
                        f"{key.min_group_size} {need} for {', '.join(few)}: the {rates} there "
                        "is not estimable and left out of gaps and gate checks."
                    )
    return warnings
