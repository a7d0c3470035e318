"""Interdependence of predicted attributes (SPEC §4.2).

Owns: the R² of predicting each column of an (N, A) 0/1 matrix from all the others by
ordinary least squares with an intercept. Applied by the caller to predictions and to
labels; the excess (predictions - labels) is the paper's signal.

One thin QR of the centred matrix (N x A) is computed once; every per-column regression is
then a small (A x A-1) least-squares problem on R, because for ``Xc = Q R`` the residual of
regressing column a on the others is ``min_b ||R e_a - R_(-a) b||``. SVD-based ``lstsq``
makes rank-deficient predictors (duplicated or constant columns) safe.

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def interdependence_r2(Y: ArrayLike) -> np.ndarray:  # noqa: N803 (matrix name)
    """R² of each column regressed (OLS, with intercept) on all other columns.

    For column ``a`` with ``y = Y[:, a]`` and fitted values ``ŷ`` from the regression on
    ``[1, Y[:, -a]]``::

        R²_a = 1 - sum_i (y_i - ŷ_i)² / sum_i (y_i - mean(y))²

    Parameters
    ----------
    Y : array-like of shape (N, A)
        0/1 predictions or labels (any finite numbers are accepted), A >= 3.

    Returns
    -------
    numpy.ndarray of shape (A,)
        R² in [0, 1] (clipped against rounding); NaN for a constant column (its variance,
        the denominator, is 0).

    Raises
    ------
    ValueError
        If ``Y`` is not 2-D with at least 3 columns, or holds NaN/Inf.
    """
    y = np.asarray(Y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 3:
        raise ValueError(
            f"`Y` must have shape (N, A) with A >= 3 attributes; got shape {y.shape}. "
            "Interdependence needs at least two predictors per attribute."
        )
    if not np.isfinite(y).all():
        raise ValueError("`Y` must hold finite values; got NaN or Inf.")
    n, n_attr = y.shape
    out = np.full(n_attr, np.nan)
    if n == 0:
        return out
    constant = y.min(axis=0) == y.max(axis=0)
    centred = y - y.mean(axis=0)
    r = np.linalg.qr(centred, mode="r")  # (min(N, A), A); R^T R = Xc^T Xc
    for a in range(n_attr):
        if constant[a]:
            continue
        target = r[:, a]
        total = float(target @ target)
        if total <= 0.0:
            continue
        others = np.delete(r, a, axis=1)
        coef, *_ = np.linalg.lstsq(others, target, rcond=None)
        resid = target - others @ coef
        out[a] = 1.0 - float(resid @ resid) / total
    return np.clip(out, 0.0, 1.0)


__all__ = ["interdependence_r2"]
