"""The disaggregation engine: per-cell confusion counts, rates and gaps (SPEC §4.5, §4.7).

Owns: turning (y_true, y_pred, cell) into sufficient statistics once — counts of
TP/FP/TN/FN (and optionally one extra 0/1 statistic) per (attribute, group cell) — and
deriving every rate and every gap from those counts, as Fairlearn's ``MetricFrame`` does.
The paired bootstrap reweights these counts with a resample-count matrix instead of
re-running anything.

Conventions the callers rely on:

- A rate whose denominator is 0 (a cell with no samples, no positives or no negatives) is
  NaN, never 0. Fairlearn (through scikit-learn's ``confusion_matrix(normalize="true")``)
  reports such a TPR/FPR/FNR as 0; we do not.
- A gap (max - min over cells) ignores NaN cells and cells marked invalid, and is NaN when
  fewer than 2 cells are defined. Fairlearn reports 0 for a single group; we do not.

No I/O, no devices, no printing.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_binary, as_prob, check_ndim, check_positive_int, check_same_length
from .calibration import bin_index

#: Order of the statistics along the last axis of :func:`confusion_counts`.
STATISTICS: tuple[str, ...] = ("tp", "fp", "tn", "fn", "extra")

#: Budget for one chunk of the (N, A_chunk * n_cells * k) indicator matrix, in bytes.
_INDICATOR_BYTES = 64 * 2**20


def _as_cells(cells: ArrayLike, *, n: int, n_cells: int) -> np.ndarray:
    arr = np.asarray(cells)
    check_ndim(arr, name="cells", ndim=1)
    if arr.shape[0] != n:
        raise ValueError(
            f"`cells` must have one entry per sample ({n}); got {arr.shape[0]} entries."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.intp)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"`cells` must hold integer cell codes; got dtype {arr.dtype}. "
            "Use encode_cells() to turn group values into codes."
        )
    bad = (arr < 0) | (arr >= n_cells)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"`cells` must lie in [0, n_cells={n_cells}); got {int(arr[i])} at row {i}. "
            "Pass n_cells equal to the number of cells encode_cells() returned."
        )
    return arr.astype(np.intp, copy=False)


def _as_weights(weights: ArrayLike, *, n: int) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim not in (1, 2):
        raise ValueError(f"`weights` must have shape (N,) or (B, N); got shape {w.shape}.")
    if w.shape[-1] != n:
        raise ValueError(f"`weights` must have one column per sample ({n}); got shape {w.shape}.")
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_):
        raise TypeError(f"`weights` must hold numbers; got dtype {w.dtype}.")
    if w.dtype != np.float32:
        w = w.astype(np.float64, copy=False)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(
            "`weights` must be finite and nonnegative (resample counts or sample weights); "
            "got a negative, NaN or Inf entry."
        )
    return w


def confusion_counts(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    cells: ArrayLike,
    *,
    n_cells: int,
    weights: ArrayLike | None = None,
    extra: ArrayLike | None = None,
) -> np.ndarray:
    """Count TP, FP, TN, FN per attribute and group cell, optionally per resample.

    For sample ``i`` with weight ``w_i``, attribute ``a`` and cell ``c``::

        tp[a, c] = sum_i w_i * 1[cell_i = c] * y_true[i, a] * y_pred[i, a]
        fp[a, c] = sum_i w_i * 1[cell_i = c] * (1 - y_true[i, a]) * y_pred[i, a]
        tn[a, c] = sum_i w_i * 1[cell_i = c] * (1 - y_true[i, a]) * (1 - y_pred[i, a])
        fn[a, c] = sum_i w_i * 1[cell_i = c] * y_true[i, a] * (1 - y_pred[i, a])
        extra[a, c] = sum_i w_i * 1[cell_i = c] * extra[i, a]

    With a (B, N) weight matrix every replicate ``b`` uses its own ``w_b``; the counts are
    one matrix product ``W @ I`` with the 0/1 indicator matrix ``I`` of shape
    (N, A * n_cells * k), built in chunks of attributes to bound memory.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N, A)
        0/1 (bool, int or float) labels and predictions.
    cells : array-like of shape (N,)
        Integer cell code of every sample, in ``[0, n_cells)`` (see :func:`encode_cells`).
    n_cells : int
        Number of cells; cells without samples get zero counts.
    weights : array-like of shape (N,) or (B, N), optional
        Nonnegative sample weights, or one row of resample counts per bootstrap replicate
        (see :func:`audit.metrics.bootstrap.bootstrap_weights`). A float32 matrix is
        multiplied in float32, which is exact for integer counts summing to < 2**24.
    extra : array-like of shape (N, A), optional
        A further 0/1 statistic to count per cell (e.g. "sample is uncertain").

    Returns
    -------
    numpy.ndarray
        Float64 counts of shape (A, n_cells, k), or (B, A, n_cells, k) for 2-D weights,
        with the last axis ordered (tp, fp, tn, fn) and k = 4, or (tp, fp, tn, fn, extra)
        and k = 5 when ``extra`` is given.

    Raises
    ------
    ValueError
        On shapes that do not match, values that are not 0/1, cell codes out of range,
        or negative/non-finite weights.
    TypeError
        On non-integer cell codes or non-numeric inputs.
    """
    yt, yp, c, ex, n_cells = _checked_inputs(y_true, y_pred, cells, n_cells, extra)
    n, n_attr = yt.shape
    k = 4 if ex is None else 5
    # stat code: 2 * (not predicted) + (label != prediction) -> tp=0, fp=1, tn=2, fn=3
    stat = 2 * (~yp).astype(np.intp) + (yt ^ yp)
    # column of (i, a) in the flattened (A, n_cells, k) layout, without the stat offset
    base = (np.arange(n_attr, dtype=np.intp)[None, :] * n_cells + c[:, None]) * k
    if weights is None or np.ndim(weights) == 1:
        w = None if weights is None else _as_weights(weights, n=n)
        return _counts_by_bincount(stat, base, ex, w, n_cells=n_cells, k=k)
    return _counts_by_matmul(stat, base, ex, _as_weights(weights, n=n), n_cells=n_cells, k=k)


def _checked_inputs(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    cells: ArrayLike,
    n_cells: int,
    extra: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Validate :func:`confusion_counts`' arrays; return them as bool/intp and ``n_cells``."""
    yt = as_binary(y_true, name="y_true", ndim=2)
    yp = as_binary(y_pred, name="y_pred", ndim=2)
    if yt.shape != yp.shape:
        raise ValueError(
            f"`y_true` and `y_pred` must have the same shape (N, A); got {yt.shape} and {yp.shape}."
        )
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
        raise ValueError(f"`n_cells` must be a positive int; got {n_cells!r}.")
    n_cells = int(n_cells)
    c = _as_cells(cells, n=yt.shape[0], n_cells=n_cells)
    ex = None
    if extra is not None:
        ex = as_binary(extra, name="extra", ndim=2)
        if ex.shape != yt.shape:
            raise ValueError(
                f"`extra` must have the same shape as `y_true` {yt.shape}; got {ex.shape}."
            )
    return yt, yp, c, ex, n_cells


def _counts_by_bincount(
    stat: np.ndarray,
    base: np.ndarray,
    ex: np.ndarray | None,
    w: np.ndarray | None,
    *,
    n_cells: int,
    k: int,
) -> np.ndarray:
    """Counts for one weight vector (or none): one ``bincount`` over the flattened layout."""
    n, n_attr = stat.shape
    size = n_attr * n_cells * k
    wb = None if w is None else np.broadcast_to(w[:, None], (n, n_attr)).ravel()
    out = np.bincount((base + stat).ravel(), weights=wb, minlength=size)
    if ex is not None:
        we = None if w is None else np.broadcast_to(w[:, None], (n, n_attr))[ex]
        out = out + np.bincount((base + 4)[ex], weights=we, minlength=size)
    return out.astype(np.float64).reshape(n_attr, n_cells, k)


def _counts_by_matmul(
    stat: np.ndarray,
    base: np.ndarray,
    ex: np.ndarray | None,
    w: np.ndarray,
    *,
    n_cells: int,
    k: int,
) -> np.ndarray:
    """Counts for a (B, N) weight matrix: ``W @ I`` over attribute chunks of ``I``."""
    n, n_attr = stat.shape
    n_rep = w.shape[0]
    result = np.empty((n_rep, n_attr, n_cells, k), dtype=np.float64)
    per_attr = max(1, n_cells * k * max(n, 1) * w.itemsize)
    chunk = max(1, _INDICATOR_BYTES // per_attr)
    rows = np.arange(n, dtype=np.intp)[:, None]
    for a0 in range(0, n_attr, chunk):
        a1 = min(n_attr, a0 + chunk)
        offset = a0 * n_cells * k
        indicator = np.zeros((n, (a1 - a0) * n_cells * k), dtype=w.dtype)
        indicator[rows, base[:, a0:a1] + stat[:, a0:a1] - offset] = 1
        if ex is not None:
            r, a = np.nonzero(ex[:, a0:a1])
            indicator[r, base[r, a + a0] + 4 - offset] = 1
        result[:, a0:a1] = (w @ indicator).reshape(n_rep, a1 - a0, n_cells, k)
    return result


def binned_sums(
    y_true: ArrayLike,
    prob: ArrayLike,
    cells: ArrayLike,
    *,
    n_cells: int,
    n_bins: int = 10,
) -> np.ndarray:
    """Per attribute, group cell and equal-width bin of p: samples, sum of p, sum of y.

    The calibration statistics of every cell at once (the ECE of a cell is
    ``sum_b |sum_p - sum_y| / n``, :func:`audit.metrics.calibration.ece_from_binned`). Bin
    ``b`` holds ``b/n_bins <= p < (b+1)/n_bins`` (the last one also ``p = 1``), as in
    :mod:`audit.metrics.calibration`.

    Parameters
    ----------
    y_true : array-like of shape (N, A)
        0/1 labels.
    prob : array-like of shape (N, A)
        Predicted probability of the positive class per attribute.
    cells : array-like of shape (N,)
        Integer cell code of every sample, in ``[0, n_cells)``.
    n_cells : int
        Number of cells; cells without samples get zeros.
    n_bins : int, default=10
        Number of equal-width bins on [0, 1].

    Returns
    -------
    numpy.ndarray
        Float64 of shape (A, n_cells, n_bins, 3): count, sum of p, sum of y.

    Raises
    ------
    ValueError
        On shapes that do not match, labels that are not 0/1, probabilities outside
        [0, 1], cell codes out of range or ``n_bins < 1``.
    """
    yt = as_binary(y_true, name="y_true", ndim=2)
    p = as_prob(prob, name="prob", ndim=2)
    if yt.shape != p.shape:
        raise ValueError(
            f"`y_true` and `prob` must have the same shape (N, A); got {yt.shape} and {p.shape}."
        )
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
        raise ValueError(f"`n_cells` must be a positive int; got {n_cells!r}.")
    n_cells = int(n_cells)
    n_bins = check_positive_int(n_bins, name="n_bins")
    n, n_attr = yt.shape
    c = _as_cells(cells, n=n, n_cells=n_cells)
    b = bin_index(p, n_bins)
    # Row-major (sample, attribute) order: each bucket adds its samples in row order.
    flat = ((np.arange(n_attr, dtype=np.intp)[None, :] * n_cells + c[:, None]) * n_bins + b).ravel()
    size = n_attr * n_cells * n_bins
    out = np.stack(
        [
            np.bincount(flat, minlength=size).astype(np.float64),
            np.bincount(flat, weights=p.ravel(), minlength=size),
            np.bincount(flat, weights=yt.astype(np.float64).ravel(), minlength=size),
        ],
        axis=-1,
    )
    return out.reshape(n_attr, n_cells, n_bins, 3)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def rates_from_counts(counts: ArrayLike) -> dict[str, np.ndarray]:
    """Derive per-cell sizes and rates from confusion counts.

    With ``n = tp + fp + tn + fn``::

        positives = tp + fn                 negatives = fp + tn
        predicted_positives = tp + fp
        accuracy = (tp + tn) / n            selection_rate = (tp + fp) / n
        tpr = tp / (tp + fn)                fnr = fn / (tp + fn)
        fpr = fp / (fp + tn)                uncertainty_rate = extra / n   (k = 5 only)

    Parameters
    ----------
    counts : array-like of shape (..., 4) or (..., 5)
        Output of :func:`confusion_counts`.

    Returns
    -------
    dict of str to numpy.ndarray
        Keys ``n, positives, negatives, predicted_positives, accuracy, tpr, fpr, fnr,
        selection_rate`` (and ``uncertainty_rate`` when k = 5), each of shape
        ``counts.shape[:-1]``. A rate is NaN where its denominator is 0.

    Raises
    ------
    ValueError
        If the last axis is not of length 4 or 5.
    """
    cnt = np.asarray(counts, dtype=np.float64)
    if cnt.ndim < 1 or cnt.shape[-1] not in (4, 5):
        raise ValueError(
            "`counts` must have a last axis of length 4 (tp, fp, tn, fn) or 5 (with extra); "
            f"got shape {cnt.shape}. Pass the output of confusion_counts()."
        )
    tp, fp, tn, fn = (cnt[..., i] for i in range(4))
    n = tp + fp + tn + fn
    pos = tp + fn
    neg = fp + tn
    pred = tp + fp
    rates = {
        "n": n,
        "positives": pos,
        "negatives": neg,
        "predicted_positives": pred,
        "accuracy": _ratio(tp + tn, n),
        "tpr": _ratio(tp, pos),
        "fpr": _ratio(fp, neg),
        "fnr": _ratio(fn, pos),
        "selection_rate": _ratio(pred, n),
    }
    if cnt.shape[-1] == 5:
        rates["uncertainty_rate"] = _ratio(cnt[..., 4], n)
    return rates


def between_groups(
    values: ArrayLike, *, valid: ArrayLike | None = None, axis: int = -1
) -> np.ndarray:
    """Largest minus smallest value over the cell axis (Fairlearn's ``between_groups``).

    ``gap = max_c v_c - min_c v_c`` over the cells ``c`` where ``v_c`` is not NaN and
    ``valid[c]`` is True.

    Parameters
    ----------
    values : array-like
        Per-cell values (e.g. a rate from :func:`rates_from_counts`).
    valid : array-like of bool, optional
        Broadcastable to ``values``; False excludes a cell (e.g. too few samples).
    axis : int, default=-1
        The cell axis.

    Returns
    -------
    numpy.ndarray
        ``values`` reduced over ``axis`` (0-d for 1-D input; use ``float()``). NaN where
        fewer than 2 cells are defined: a gap needs two groups to compare, so a single
        defined group gives NaN where Fairlearn gives 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if valid is not None:
        v = np.where(np.asarray(valid, dtype=bool), v, np.nan)
    v = np.moveaxis(v, axis, -1)
    if v.shape[-1] == 0:
        return np.full(v.shape[:-1], np.nan)
    defined = np.count_nonzero(~np.isnan(v), axis=-1)
    # fmax/fmin skip NaN without the all-NaN RuntimeWarning of nanmax
    gap = np.fmax.reduce(v, axis=-1) - np.fmin.reduce(v, axis=-1)
    return np.where(defined >= 2, gap, np.nan)


def equalized_odds_from_rates(
    tpr: ArrayLike, fpr: ArrayLike, *, valid: ArrayLike | None = None, axis: int = -1
) -> np.ndarray:
    """Equalized-odds difference: the larger of the TPR gap and the FPR gap.

    ``eod = max(between_groups(tpr), between_groups(fpr))``.

    Parameters
    ----------
    tpr, fpr : array-like
        Per-cell true and false positive rates (same shape).
    valid : array-like of bool, optional
        Cells to include, as in :func:`between_groups`.
    axis : int, default=-1
        The cell axis.

    Returns
    -------
    numpy.ndarray
        NaN when either gap is NaN: equalized odds needs both. Fairlearn's
        ``equalized_odds_difference`` never meets a NaN gap (it scores undefined rates as
        0), and on NaN its Python ``max`` would depend on argument order; so the two agree
        exactly when every group has positives and negatives.
    """
    return np.maximum(
        between_groups(tpr, valid=valid, axis=axis), between_groups(fpr, valid=valid, axis=axis)
    )


def signed_gap(values: ArrayLike, *, axis: int = -1) -> np.ndarray:
    """Signed gap of a binary group attribute: value at cell 1 minus value at cell 0.

    Parameters
    ----------
    values : array-like
        Per-cell values with exactly 2 cells along ``axis`` (cell 1 is the larger group
        value after sorting, e.g. ``Male=1``).
    axis : int, default=-1
        The cell axis.

    Returns
    -------
    numpy.ndarray
        ``values[..., 1] - values[..., 0]``; NaN if either is NaN.

    Raises
    ------
    ValueError
        If the cell axis does not have length 2.
    """
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    if v.shape[-1] != 2:
        raise ValueError(
            f"signed_gap needs exactly 2 cells along axis {axis}; got {v.shape[-1]}. "
            "Use between_groups() for attributes with more values."
        )
    return v[..., 1] - v[..., 0]


def _unique_column(col: np.ndarray, j: int) -> tuple[list[Hashable], np.ndarray]:
    if np.issubdtype(col.dtype, np.floating) and np.isnan(col).any():
        i = int(np.flatnonzero(np.isnan(col))[0])
        raise ValueError(
            f"group column {j} has a missing value (NaN) in row {i}; drop those samples or "
            "give missing values their own group value."
        )
    try:
        uniq, inverse = np.unique(col, return_inverse=True)
    except TypeError as err:
        raise TypeError(
            f"group column {j} mixes values that cannot be sorted ({err}); convert the column "
            "to a single type (e.g. str) first."
        ) from None
    return uniq.tolist(), inverse.reshape(-1).astype(np.intp)


def encode_cells(group_matrix: ArrayLike) -> tuple[np.ndarray, list[Hashable]]:
    """Encode group values (one or several attributes) as intersectional cell codes.

    The cells are the distinct rows of ``group_matrix``, numbered in lexicographic order of
    their (sorted) values; combinations that no sample has are not cells.

    Parameters
    ----------
    group_matrix : array-like of shape (N,) or (N, G)
        Group values (any sortable hashable values, e.g. 0/1 or strings).

    Returns
    -------
    cells : numpy.ndarray of shape (N,)
        Cell code of every sample, in ``[0, len(values))``.
    values : list
        ``values[c]`` is the tuple of original group values of cell ``c``, one per column
        (a 1-tuple for an (N, 1) input); for a 1-D input, the plain value itself. Values
        are Python scalars (``ndarray.tolist()``).

    Raises
    ------
    ValueError
        On a 0-column or >2-D input, or a NaN group value.
    TypeError
        When a column mixes values that cannot be sorted together.
    """
    arr = np.asarray(group_matrix)
    plain = arr.ndim == 1
    if plain:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(
            f"`group_matrix` must have shape (N,) or (N, G) with G >= 1; got {arr.shape}."
        )
    n, n_cols = arr.shape
    column_values: list[list[Hashable]] = []
    code = np.zeros(n, dtype=np.intp)
    codes_per_column = []
    for j in range(n_cols):
        uniq, inverse = _unique_column(arr[:, j], j)
        column_values.append(uniq)
        codes_per_column.append(inverse)
        # re-compress after each column so codes stay < N (no overflow for many columns);
        # np.unique keeps lexicographic order
        _, code = np.unique(code * len(uniq) + inverse, return_inverse=True)
        code = code.reshape(-1).astype(np.intp)
    _, first = np.unique(code, return_index=True)
    if plain:
        values: list[Hashable] = [column_values[0][codes_per_column[0][i]] for i in first]
    else:
        values = [
            tuple(column_values[j][codes_per_column[j][i]] for j in range(n_cols)) for i in first
        ]
    return code, values


def rates_by_group(
    y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike
) -> tuple[list[Hashable], dict[str, np.ndarray]]:
    """Per-group sizes and rates of one binary target (as ``MetricFrame.by_group``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample; several columns give intersectional cells.

    Returns
    -------
    values : list
        Group value of each cell (a tuple of values for 2-D ``groups``), sorted.
    rates : dict of str to numpy.ndarray
        :func:`rates_from_counts` output, each of shape (n_groups,).
    """
    yt = as_binary(y_true, name="y_true", ndim=1)
    yp = as_binary(y_pred, name="y_pred", ndim=1)
    g = np.asarray(groups)
    check_same_length(("y_true", yt), ("y_pred", yp), ("groups", g))
    cells, values = encode_cells(g)
    if not values:
        return values, rates_from_counts(np.zeros((0, 4)))
    counts = confusion_counts(yt[:, None], yp[:, None], cells, n_cells=len(values))
    return values, rates_from_counts(counts[0])


def _gap(rate: str, y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike) -> float:
    _, rates = rates_by_group(y_true, y_pred, groups=groups)
    return float(between_groups(rates[rate]))


def accuracy_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """Accuracy gap: ``max_g acc_g - min_g acc_g`` with ``acc_g = (tp + tn) / n`` in g.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        NaN with fewer than 2 groups.
    """
    return _gap("accuracy", y_true, y_pred, groups)


def tpr_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """True-positive-rate gap: ``max_g TPR_g - min_g TPR_g``, ``TPR_g = tp / (tp + fn)``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        Groups without positives are left out (their TPR is undefined); NaN when fewer
        than 2 groups remain.
    """
    return _gap("tpr", y_true, y_pred, groups)


def fnr_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """False-negative-rate gap: ``max_g FNR_g - min_g FNR_g``, ``FNR_g = fn / (tp + fn)``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        Groups without positives are left out (their FNR is undefined); NaN when fewer
        than 2 groups remain.
    """
    return _gap("fnr", y_true, y_pred, groups)


def fpr_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """False-positive-rate gap: ``max_g FPR_g - min_g FPR_g``, ``FPR_g = fp / (fp + tn)``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        Groups without negatives are left out (their FPR is undefined); NaN when fewer
        than 2 groups remain.
    """
    return _gap("fpr", y_true, y_pred, groups)


def selection_rate_gap(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """Selection-rate gap: ``max_g s_g - min_g s_g``, ``s_g = (tp + fp) / n`` in g.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions (``y_true`` is only validated).
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        NaN with fewer than 2 groups.
    """
    return _gap("selection_rate", y_true, y_pred, groups)


def demographic_parity_difference(
    y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike
) -> float:
    """Demographic-parity difference, Fairlearn's name for :func:`selection_rate_gap`.

    ``dpd = max_g P(y_pred = 1 | g) - min_g P(y_pred = 1 | g)``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        NaN with fewer than 2 groups.
    """
    return _gap("selection_rate", y_true, y_pred, groups)


def equalized_odds_difference(y_true: ArrayLike, y_pred: ArrayLike, *, groups: ArrayLike) -> float:
    """Equalized-odds difference: ``max(tpr_gap, fpr_gap)`` (Fairlearn's definition).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions.
    groups : array-like of shape (N,) or (N, G)
        Group value(s) of every sample.

    Returns
    -------
    float
        NaN when either gap is undefined (see :func:`equalized_odds_from_rates`).
    """
    _, rates = rates_by_group(y_true, y_pred, groups=groups)
    return float(equalized_odds_from_rates(rates["tpr"], rates["fpr"]))


__all__ = [
    "STATISTICS",
    "accuracy_gap",
    "between_groups",
    "confusion_counts",
    "demographic_parity_difference",
    "encode_cells",
    "equalized_odds_difference",
    "equalized_odds_from_rates",
    "fnr_gap",
    "fpr_gap",
    "rates_by_group",
    "rates_from_counts",
    "selection_rate_gap",
    "signed_gap",
    "tpr_gap",
]
