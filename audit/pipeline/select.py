"""Select stage: which columns are targets and groups, the task, and the splits.

Owns: choosing target/group columns (flags, checkpoint output names, layout defaults), the
task, the evaluation/calibration/train split indices (a seeded 20% holdout when there is no
calibration split), and the label/group matrices of a set of rows. Every refusal is a
one-paragraph UsageError/DataError/CheckpointError naming the flag, column or split.
Must not: decode images, run a model, or compute a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audit import pruning
from audit.config import AuditConfig
from audit.data import Dataset
from audit.errors import CheckpointError, DataError, UsageError
from audit.model_io import LoadedModel


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


def select(cfg: AuditConfig, ds: Dataset, lm: LoadedModel) -> Selection:
    """The select stage: columns, task and split indices of this audit."""
    target_cols, groups = _choose_columns(cfg, ds, lm)
    task = _infer_task(cfg, ds, lm, target_cols)
    targets = _output_names(cfg, ds, lm, task, target_cols)
    splits = _Splits(cfg, ds)
    eval_name, eval_idx = splits.evaluation()
    calib_name, calib_idx, eval_idx, holdout = splits.calibration(eval_name, eval_idx)
    train_name, train_idx = splits.train(eval_name)
    _check_train_split(cfg, (train_name, train_idx), (eval_name, eval_idx))
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


def _output_names(
    cfg: AuditConfig, ds: Dataset, lm: LoadedModel, task: str, target_cols: tuple[str, ...]
) -> tuple[str, ...]:
    """The audited outputs' names (class names for multiclass); checks labels and count."""
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
    return targets


class _Splits:
    """The dataset's splits, and the evaluation/calibration/train choice from the flags."""

    def __init__(self, cfg: AuditConfig, ds: Dataset) -> None:
        self.cfg, self.ds = cfg, ds
        self.splits = ds.splits
        self.names = sorted(set(self.splits.tolist())) if self.splits is not None else []

    def idx(self, name: str, flag: str) -> np.ndarray:
        if self.splits is None:
            raise DataError(
                f"{flag} {name!r} was given but the dataset at {str(self.ds.root)!r} has no "
                "splits (add a 'split' column, or drop the flag to evaluate on all samples)."
            )
        idx = np.flatnonzero(self.splits == name)
        if len(idx) == 0:
            raise DataError(
                f"{flag} {name!r} matches no samples; the dataset's splits are "
                f"{', '.join(self.names)}."
            )
        return idx

    def evaluation(self) -> tuple[str, np.ndarray]:
        if self.cfg.split:
            return self.cfg.split, self.idx(self.cfg.split, "--split")
        if self.splits is not None and "test" in self.names:
            return "test", self.idx("test", "--split")
        return "all", np.arange(self.ds.n)

    def calibration(
        self, eval_name: str, eval_idx: np.ndarray
    ) -> tuple[str, np.ndarray, np.ndarray, bool]:
        """(calibration name, its indices, the evaluation indices left, whether a holdout)."""
        cfg = self.cfg
        if cfg.calib_split:
            calib_name, calib_idx = cfg.calib_split, self.idx(cfg.calib_split, "--calib-split")
        elif self.splits is not None and "val" in self.names and eval_name not in ("val", "all"):
            calib_name, calib_idx = "val", self.idx("val", "--calib-split")
        else:
            # No calibration split: hold out a seeded 20% of the evaluation split so
            # thresholds and BN statistics are never fitted on the samples they are judged on.
            perm = np.random.default_rng(cfg.seed).permutation(eval_idx)
            n_cal = max(1, int(round(0.2 * len(perm))))
            calib_idx, eval_idx = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
            return f"holdout-20%-of-{eval_name}", calib_idx, eval_idx, True
        shared = np.intersect1d(eval_idx, calib_idx).size
        if shared:
            raise UsageError(
                f"The evaluation split ({eval_name!r}) and the calibration split ({calib_name!r}) "
                f"share {shared} samples"
                + (
                    " (they are the same split)"
                    if shared == len(eval_idx) == len(calib_idx)
                    else ""
                )
                + ": thresholds and BatchNorm statistics would be fitted on the very images they "
                "are judged on, which hides what pruning does. Pass a different --calib-split, or "
                "omit it to hold out a seeded 20% of the evaluation split"
                + (
                    " (or pass --split to evaluate on one split, not all samples)."
                    if eval_name == "all"
                    else "."
                )
            )
        return calib_name, calib_idx, eval_idx, False

    def train(self, eval_name: str) -> tuple[str | None, np.ndarray]:
        if self.cfg.train_split:
            return self.cfg.train_split, self.idx(self.cfg.train_split, "--train-split")
        if self.splits is not None and "train" in self.names and eval_name != "train":
            return "train", self.idx("train", "--train-split")
        return None, np.zeros(0, dtype=np.int64)


def _check_train_split(
    cfg: AuditConfig, train: tuple[str | None, np.ndarray], evaluation: tuple[str, np.ndarray]
) -> None:
    """A recovery that trains needs train rows, none of them evaluation rows."""
    (train_name, train_idx), (eval_name, eval_idx) = train, evaluation
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


def label_matrix(ds: Dataset, sel: Selection, idx: np.ndarray) -> np.ndarray:
    """0/1 labels (N × targets) of dataset rows ``idx``; one-hot classes for multiclass."""
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


def group_matrix(ds: Dataset, sel: Selection, idx: np.ndarray) -> np.ndarray:
    """Group values (N × groups) of dataset rows ``idx``."""
    return np.stack([ds.columns[g][idx] for g in sel.groups], axis=1).astype(np.int64)
