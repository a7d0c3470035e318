"""Validation stage: prune, recover, re-run and measure each level.

Each level is a copy of MODEL pruned at an audited sparsity, or a ``--pruned`` model, run
over the cached evaluation images.

Owns: the recovery context (calibration and train batches, loss, example input), one
pruned pass per level and seed, the one-shot + BN baseline of a training recovery, saving
pruned checkpoints, supplied models' measured sparsity and output checks, and each level's
metrics, paired-bootstrap deltas, flips, CIEs and ranking quality (through criteria and
validate). Every rank runs the inference; rank 0 alone measures and saves.
Must not: judge a level against the policy, or write reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit import criteria, inference, pruning, validate
from audit.config import AuditConfig
from audit.data import Dataset, ImageCache
from audit.errors import CheckpointError
from audit.model_io import LoadedModel, load_model, save_checkpoint
from audit.pipeline.context import Progress, RunContext
from audit.pipeline.decode import Decoded, decode_train
from audit.pipeline.measure import Measured
from audit.pipeline.prepare import check_logits
from audit.pipeline.select import Selection, label_matrix
from audit.report.writer import pause_point


@dataclass(frozen=True)
class LevelRun:
    """What producing and measuring a validation level needs (built once per audit)."""

    ctx: RunContext
    lm: LoadedModel
    ds: Dataset
    sel: Selection
    pre: dict[str, Any]
    runtime: inference.Runtime
    decoded: Decoded
    measured: Measured
    recovery: pruning.RecoveryContext
    boot: validate.PairedBootstrap | None


@dataclass(frozen=True)
class Levels:
    """The measured levels (rank 0; empty elsewhere) and every level's probabilities."""

    levels: list[dict[str, Any]]
    pruned_probs: list[np.ndarray]
    warnings: tuple[str, ...]


def validate_levels(
    ctx: RunContext,
    lm: LoadedModel,
    ds: Dataset,
    sel: Selection,
    pre: dict[str, Any],
    runtime: inference.Runtime,
    decoded: Decoded,
    measured: Measured,
) -> Levels:
    """The validation stage: MODEL's own levels, then each ``--pruned`` model."""
    cfg = ctx.cfg
    if not cfg.validate:
        return Levels([], [], ())
    boot = None
    if ctx.is_main:
        with ctx.progress.task(f"Bootstrap ({cfg.bootstrap} paired resamples, dense)", None):
            boot = validate.PairedBootstrap(
                measured.pop,
                measured.dense_probs,
                measured.thresholds,
                n_resamples=cfg.bootstrap,
                seed=cfg.seed,
            )
    train_cache = None
    if pruning.get_recovery(cfg.recovery).needs_train_split and cfg.audit_sparsities:
        sharded = inference.batchnorm_syncable(lm.model)
        train_cache = decode_train(ctx, decoded.decoder, sel, sharded=sharded)
    context = recovery_context(
        cfg, sel, runtime, decoded.calib_images, train_cache, ds, ctx.progress, lm.model
    )
    run = LevelRun(ctx, lm, ds, sel, pre, runtime, decoded, measured, context, boot)
    levels: list[dict[str, Any]] = []
    pruned_probs: list[np.ndarray] = []
    warnings: list[str] = []
    own_levels(run, levels, pruned_probs, warnings)
    supplied_levels(run, levels, pruned_probs)
    return Levels(levels, pruned_probs, tuple(warnings))


def recovery_context(
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
    train_batches = loss_fn = train_wrapper = None
    if train_cache is not None:
        y = label_matrix(ds, sel, train_cache.indices)
        target = y.argmax(axis=1) if sel.task == "multiclass" else y.astype(np.float32)
        images = train_cache.images
        if inference.batchnorm_syncable(model) and runtime.dist.world > 1:
            # Each rank holds its shard of the train split: DDP on its rows of each batch.
            images = inference.make_shard(images, runtime.dist)
            train_wrapper = lambda m: inference.distributed_training(m, runtime)  # noqa: E731

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
        train_wrapper=train_wrapper,
        loss_fn=loss_fn,
        example_input=example,
        finetune_steps=cfg.finetune_steps,
        finetune_epochs=cfg.finetune_epochs,
        finetune_lr=cfg.finetune_lr,
        progress=progress.task,
    )


def pruned_pass(
    run: LevelRun, s: float, *, recovery: pruning.Recovery | None = None
) -> tuple[torch.nn.Module, Any, list[np.ndarray]]:
    """Prune a copy at sparsity s, recover, and return (model, stats, eval probabilities)."""
    cfg, progress, images = run.ctx.cfg, run.ctx.progress, run.decoded.eval_images
    method = pruning.get_method(cfg.method)
    recovery = recovery or pruning.get_recovery(cfg.recovery)
    seeds = cfg.finetune_seeds if recovery.seeded else (cfg.seed,)
    all_probs = []
    for seed in seeds:
        pm, stats = recovery.run(run.lm.model, s, method, run.recovery, seed=seed)
        inference.broadcast_state(pm, run.runtime)
        with progress.task(f"Inference at sparsity {s:g}", images.images.shape[0]) as adv:
            logits = inference.predict(pm, images, run.runtime, progress=adv)
        all_probs.append(criteria.probabilities(logits, run.sel.task))
    return pm, stats, all_probs


def mean_accuracy(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Top-1 accuracy (multiclass) or the mean over targets of accuracy at threshold 0.5."""
    if task == "multiclass":
        return float(np.mean(probs.argmax(axis=1) == labels.argmax(axis=1)))
    return float(np.mean((probs > 0.5) == (labels == 1)))


def own_levels(
    run: LevelRun,
    levels: list[dict[str, Any]],
    pruned_probs: list[np.ndarray],
    warnings: list[str],
) -> None:
    """Prune MODEL at each audited sparsity with the configured method and recovery."""
    ctx, cfg, labels, task = run.ctx, run.ctx.cfg, run.measured.labels, run.sel.task
    recovery = pruning.get_recovery(cfg.recovery)
    dense_acc = mean_accuracy(run.measured.dense_probs, labels, task)
    staging = ctx.scope.pruned_dir(cfg)
    pm = None
    with ctx.progress.task("Pruning levels", len(cfg.audit_sparsities)) as advance_levels:
        for s in cfg.audit_sparsities:
            pm, stats, seed_probs = pruned_pass(run, s)
            probs = np.mean(seed_probs, axis=0)
            pruned_probs.append(probs)
            baseline = None
            if recovery.needs_train_split and run.lm.format != "export":
                # The cheapest recovery at the same sparsity: a fine-tuned level worse than it
                # is a recovery that failed, not an effect of pruning.
                _, _, bn_probs = pruned_pass(run, s, recovery=pruning.get_recovery("bn"))
                baseline = mean_accuracy(bn_probs[0], labels, task)
            if staging is not None and ctx.is_main:
                method = pruning.get_method(cfg.method)
                save_pruned(staging, f"pruned-{s:g}", pm, run.lm, run.sel, run.pre, method)
                pause_point("pruned-saved")
            if ctx.is_main:
                level = measure_level(run, s, stats, seed_probs, label=f"{s:g}", source="method")
                acc = mean_accuracy(probs, labels, task)
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


def supplied_levels(
    run: LevelRun, levels: list[dict[str, Any]], pruned_probs: list[np.ndarray]
) -> None:
    """Audit each ``--pruned`` model against MODEL as a level of its own (SPEC §6.6)."""
    ctx, cfg, sel = run.ctx, run.ctx.cfg, run.sel
    dense_acc = mean_accuracy(run.measured.dense_probs, run.measured.labels, sel.task)
    dense_params = sum(p.numel() for p in run.lm.model.parameters())
    images = run.decoded.eval_images
    for path in cfg.pruned:
        lm = load_model(path, arch=cfg.arch, trust_checkpoint=cfg.trust_checkpoint)
        _check_same_outputs(path, lm, run.lm, sel)
        model = inference.prepare_model(lm.model, run.runtime)
        inference.broadcast_state(model, run.runtime)
        with ctx.progress.task(f"Inference of {path.name}", images.images.shape[0]) as adv:
            logits = inference.predict(model, images, run.runtime, progress=adv)
        check_logits(logits, sel, cfg, model_path=path)
        probs = criteria.probabilities(logits, sel.task)
        pruned_probs.append(probs)
        if not ctx.is_main:
            continue
        stats = _supplied_stats(lm.model, run.lm.model)
        level = measure_level(
            run, stats.achieved, stats, [probs], label=path.name, source="supplied"
        )
        n_params = sum(p.numel() for p in lm.model.parameters())
        acc = mean_accuracy(probs, run.measured.labels, sel.task)
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


def measure_level(
    run: LevelRun,
    s: float,
    stats: Any,
    seed_probs: list[np.ndarray],
    *,
    label: str,
    source: str,
) -> dict[str, Any]:
    """One level's metrics, deltas, flips, CIEs and ranking quality (rank 0)."""
    m, cfg = run.measured, run.ctx.cfg
    pop, dense_probs, thresholds = m.pop, m.dense_probs, m.thresholds
    assert run.boot is not None
    # With several fine-tuning seeds the level's metrics are those of the seed-averaged
    # probabilities, while flips and CIEs use each sample's modal prediction (SPEC §6.3).
    probs = np.mean(seed_probs, axis=0)
    dense_pred = criteria.predict_labels(dense_probs, thresholds["default"], pop.task)
    pruned_pred = modal_prediction(
        [criteria.predict_labels(p, thresholds["default"], pop.task) for p in seed_probs],
        dense_pred,
        pop.task,
    )
    flip_stats, flipped = validate.flips(pop, dense_pred, pruned_pred)
    cie = np.flatnonzero(flipped.any(axis=1))
    sd = stats.to_dict()
    eval_idx = run.decoded.eval_idx
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
            "ids": [str(run.ds.ids[eval_idx[i]]) for i in cie[:50]],
        },
    }
    if "structure" in sd:
        level["structure"] = sd["structure"]
    return level


def modal_prediction(preds: list[np.ndarray], dense_pred: np.ndarray, task: str) -> np.ndarray:
    """Majority vote over seeds; a tie keeps the dense prediction (no change is claimed)."""
    votes = np.mean(preds, axis=0)
    if task == "multiclass":
        top = votes.max(axis=1, keepdims=True)
        dense_is_top = (votes * dense_pred).max(axis=1, keepdims=True) == top
        winner = np.zeros_like(dense_pred)
        winner[np.arange(len(votes)), votes.argmax(axis=1)] = 1
        return np.where(dense_is_top, dense_pred, winner).astype(np.int8)
    return np.where(votes > 0.5, 1, np.where(votes < 0.5, 0, dense_pred)).astype(np.int8)


def save_pruned(
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
