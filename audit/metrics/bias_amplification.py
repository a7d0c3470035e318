"""Bias amplification of one target with respect to a binary group attribute (SPEC §4.5).

Owns: the paper's bias-amplification (BA) formula, its eligibility filters, and a counts
version for the paired bootstrap. The eligibility of a (target, group) pair is decided once,
on the full evaluated data, by :func:`bias_amplification`; bootstrap replicates of an
eligible pair are then computed with :func:`bias_amplification_from_counts`, which only
returns NaN where the formula divides by zero.

No I/O, no devices, no printing.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_binary, check_same_length
from .groups import confusion_counts, encode_cells


@dataclass(frozen=True)
class BiasAmplification:
    """Bias amplification of one (target, binary group attribute) pair.

    Attributes
    ----------
    value : float or None
        BA, or None when not estimable.
    reason : str or None
        Why BA is not estimable (None when it is).
    majority_value : hashable or None
        v*, the group value in which the target is more frequent in the train split
        (None when that could not be determined).
    predicted_share : float or None
        Share of the target's predicted positives that fall in v*.
    true_share : float or None
        Share of the target's true positives that fall in v*.
    """

    value: float | None
    reason: str | None
    majority_value: Hashable | None = None
    predicted_share: float | None = None
    true_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (JSON-ready for plain group values)."""
        return asdict(self)


def _share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast_shapes(part.shape, total.shape), np.nan)
    np.divide(part, total, out=out, where=total > 0)
    return out


def bias_amplification_from_counts(counts: ArrayLike, *, majority_cell: ArrayLike) -> np.ndarray:
    """Bias amplification from per-cell confusion counts of a binary group attribute.

    With ``pp_v = tp_v + fp_v`` (predicted positives) and ``p_v = tp_v + fn_v`` (true
    positives) in group value ``v``, and ``v*`` = ``majority_cell``::

        BA = pp_{v*} / (pp_0 + pp_1) - p_{v*} / (p_0 + p_1)

    Parameters
    ----------
    counts : array-like of shape (..., 2, 4) or (..., 2, 5)
        :func:`audit.metrics.groups.confusion_counts` output for a 2-cell attribute, e.g.
        (A, 2, 4) or (B, A, 2, 4).
    majority_cell : int or array-like of int
        Cell (0 or 1) of v* per target, or -1 for a target without v* (its BA is NaN);
        broadcastable to ``counts.shape[:-2]``, e.g. (A,).

    Returns
    -------
    numpy.ndarray
        BA of shape ``counts.shape[:-2]``; NaN where there are no predicted positives or no
        true positives (the shares are 0/0), or ``majority_cell`` is -1. The min-positives
        and train-rate filters are not applied here.

    Raises
    ------
    ValueError
        If the cell axis is not of length 2, or ``majority_cell`` is not -1/0/1 or does not
        broadcast.
    """
    cnt = np.asarray(counts, dtype=np.float64)
    if cnt.ndim < 2 or cnt.shape[-2] != 2 or cnt.shape[-1] not in (4, 5):
        raise ValueError(
            "`counts` must have shape (..., 2, 4) or (..., 2, 5): a binary group attribute's "
            f"confusion counts; got shape {cnt.shape}."
        )
    m = np.asarray(majority_cell)
    if (
        not (np.issubdtype(m.dtype, np.integer) or m.dtype == np.bool_)
        or ((m != -1) & (m != 0) & (m != 1)).any()
    ):
        raise ValueError(
            f"`majority_cell` must be 0 or 1 (the cell of v*) or -1 (no v*) per target; got {m!r}."
        )
    lead = cnt.shape[:-2]
    try:
        m = np.broadcast_to(m.astype(np.intp), lead)
    except ValueError:
        raise ValueError(
            f"`majority_cell` of shape {m.shape} does not broadcast to the targets' shape {lead}."
        ) from None
    tp, fp, fn = cnt[..., 0], cnt[..., 1], cnt[..., 3]
    pred_pos = tp + fp
    pos = tp + fn
    pick = np.maximum(m, 0)[..., None]
    share_pred = _share(np.take_along_axis(pred_pos, pick, -1)[..., 0], pred_pos.sum(-1))
    share_true = _share(np.take_along_axis(pos, pick, -1)[..., 0], pos.sum(-1))
    return np.where(m >= 0, share_pred - share_true, np.nan)


def bias_amplification(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    groups: ArrayLike,
    train_y: ArrayLike,
    train_groups: ArrayLike,
    min_positives: int = 10,
    min_relative_difference: float = 0.1,
) -> BiasAmplification:
    """Bias amplification of one target w.r.t. a binary group attribute, with eligibility.

    v* is the group value with the higher train positive rate ``r_v = P(y = 1 | g = v)``
    (train split); on the evaluated data::

        BA = (predicted positives in v*) / (predicted positives)
             - (true positives in v*) / (true positives)

    BA > 0: the model puts more of the target's positives into the group where the target
    was already more frequent than the labels do.

    Not estimable (``value=None`` and a ``reason``) when, checked in this order:

    1. the group attribute does not have exactly 2 values (evaluated and train data
       together);
    2. a group value has no train samples, the target is never positive in the train split,
       or ``|r_1 - r_0| / max(r_0, r_1) < min_relative_difference`` (no clear v*);
    3. a group value has fewer than ``min_positives`` true positives in the evaluated data;
    4. there are no predicted positives (the predicted share is 0/0).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions of the target on the evaluated data.
    groups : array-like of shape (N,)
        Group value of every evaluated sample.
    train_y : array-like of shape (M,)
        0/1 labels of the target on the train split.
    train_groups : array-like of shape (M,)
        Group value of every train sample.
    min_positives : int, default=10
        Minimum true positives per group value in the evaluated data.
    min_relative_difference : float, default=0.1
        Minimum relative difference of the train positive rates.

    Returns
    -------
    BiasAmplification
        The value or the reason, with v* and the two shares.

    Raises
    ------
    ValueError
        On mismatched lengths, non-0/1 labels, or out-of-range options.
    """
    yt, yp, g, ty, tg = _checked_inputs(
        y_true, y_pred, groups, train_y, train_groups, min_positives, min_relative_difference
    )
    codes, values = encode_cells(np.concatenate([g, tg]))
    if len(values) != 2:
        return BiasAmplification(
            None,
            f"the group attribute has {len(values)} value(s) {values!r}; bias amplification "
            "needs exactly 2",
        )
    cell, train_cell = codes[: g.shape[0]], codes[g.shape[0] :]
    star = _majority_cell(train_cell, ty, values, min_relative_difference)
    if isinstance(star, BiasAmplification):
        return star
    return _from_evaluated(yt, yp, cell, values, star, min_positives)


def _checked_inputs(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    train_y: ArrayLike,
    train_groups: ArrayLike,
    min_positives: int,
    min_relative_difference: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate :func:`bias_amplification`'s arguments; return the five arrays."""
    yt = as_binary(y_true, name="y_true", ndim=1)
    yp = as_binary(y_pred, name="y_pred", ndim=1)
    g = np.asarray(groups)
    ty = as_binary(train_y, name="train_y", ndim=1)
    tg = np.asarray(train_groups)
    if g.ndim != 1 or tg.ndim != 1:
        raise ValueError(
            "`groups` and `train_groups` must be 1-D (one binary attribute); got shapes "
            f"{g.shape} and {tg.shape}."
        )
    check_same_length(("y_true", yt), ("y_pred", yp), ("groups", g))
    check_same_length(("train_y", ty), ("train_groups", tg))
    if isinstance(min_positives, bool) or not isinstance(min_positives, int) or min_positives < 0:
        raise ValueError(f"`min_positives` must be an int >= 0; got {min_positives!r}.")
    if not 0.0 <= float(min_relative_difference) <= 1.0:
        raise ValueError(
            f"`min_relative_difference` must lie in [0, 1]; got {min_relative_difference!r}."
        )
    return yt, yp, g, ty, tg


def _majority_cell(
    train_cell: np.ndarray,
    ty: np.ndarray,
    values: list[Hashable],
    min_relative_difference: float,
) -> int | BiasAmplification:
    """The cell code of v* (higher train positive rate), or the reason it is undefined."""
    train_n = np.bincount(train_cell, minlength=2)
    train_pos = np.bincount(train_cell, weights=ty, minlength=2)
    for v in (0, 1):
        if train_n[v] == 0:
            return BiasAmplification(
                None, f"no train samples with group value {values[v]!r}; v* is undefined"
            )
    rate = train_pos / train_n
    top = max(rate[0], rate[1])
    if top == 0 or rate[0] == rate[1]:
        return BiasAmplification(
            None,
            f"train positive rates are equal ({rate[0]:.4g} in {values[0]!r} and "
            f"{rate[1]:.4g} in {values[1]!r}); v* is undefined",
        )
    star = int(rate[1] > rate[0])
    relative = abs(rate[1] - rate[0]) / top
    if relative < min_relative_difference:
        return BiasAmplification(
            None,
            f"train positive rates differ by {relative:.1%} relative ({rate[0]:.4g} in "
            f"{values[0]!r}, {rate[1]:.4g} in {values[1]!r}); at least "
            f"{min_relative_difference:.0%} is needed",
            majority_value=values[star],
        )
    return star


def _from_evaluated(
    yt: np.ndarray,
    yp: np.ndarray,
    cell: np.ndarray,
    values: list[Hashable],
    star: int,
    min_positives: int,
) -> BiasAmplification:
    """BA on the evaluated data, given v*: the predicted minus the true share in v*."""
    counts = confusion_counts(yt[:, None], yp[:, None], cell, n_cells=2)[0]
    positives = counts[:, 0] + counts[:, 3]
    for v in (0, 1):
        if positives[v] < min_positives:
            return BiasAmplification(
                None,
                f"group value {values[v]!r} has {int(positives[v])} positive(s) of the target "
                f"in the evaluated data; at least {min_positives} are needed",
                majority_value=values[star],
            )
    predicted = counts[:, 0] + counts[:, 1]
    if predicted.sum() == 0:
        return BiasAmplification(
            None,
            "the model predicts no positives of the target; the share of predicted positives "
            "is undefined",
            majority_value=values[star],
        )
    predicted_share = float(predicted[star] / predicted.sum())
    true_share = float(positives[star] / positives.sum())
    return BiasAmplification(
        value=predicted_share - true_share,
        reason=None,
        majority_value=values[star],
        predicted_share=predicted_share,
        true_share=true_share,
    )


__all__ = ["BiasAmplification", "bias_amplification", "bias_amplification_from_counts"]
