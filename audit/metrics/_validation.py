"""Boundary checks shared by the metric functions (private).

Owns: turning array-likes into numpy arrays of a known dtype and shape, and the error
messages for inputs that are not. Every message names the argument, the constraint, the
value received and the fix (STYLE.md, habit 4).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True entry of ``mask`` (as a tuple, for messages)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _where(index: tuple[int, ...]) -> str:
    if len(index) == 1:
        return f"row {index[0]}"
    return f"index {index}"


def check_ndim(arr: np.ndarray, *, name: str, ndim: int, hint: str = "") -> None:
    """Raise ValueError unless ``arr`` has ``ndim`` dimensions."""
    if arr.ndim != ndim:
        shape = {1: "(N,)", 2: "(N, A)"}.get(ndim, f"{ndim}-D")
        raise ValueError(
            f"`{name}` must be {ndim}-D with shape {shape}; got shape {arr.shape}.{hint}"
        )


def as_binary(x: ArrayLike, *, name: str, ndim: int) -> np.ndarray:
    """Return ``x`` as a bool array after checking that it holds only 0/1 values.

    Parameters
    ----------
    x : array-like
        Bool, integer or float values that must all be 0 or 1.
    name : str
        Argument name used in error messages.
    ndim : int
        Required number of dimensions.

    Returns
    -------
    numpy.ndarray
        Bool array of the same shape.
    """
    arr = np.asarray(x)
    check_ndim(arr, name=name, ndim=ndim)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(
            f"`{name}` must hold 0/1 numbers or booleans; got dtype {arr.dtype}. "
            "Encode the labels as 0/1 first."
        )
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        where = _first_bad(bad)
        raise ValueError(
            f"`{name}` must hold only 0/1 values; got {arr[where].item()!r} at {_where(where)}. "
            "Map -1/1 labels to 0/1 and threshold probabilities before calling."
        )
    return arr == 1


def as_prob(x: ArrayLike, *, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as float64 after checking it holds finite probabilities in [0, 1].

    Parameters
    ----------
    x : array-like
        Probabilities.
    name : str
        Argument name used in error messages.
    ndim : int or tuple of int
        Allowed numbers of dimensions.

    Returns
    -------
    numpy.ndarray
        Float64 array of the same shape.
    """
    arr = np.asarray(x)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        raise ValueError(
            f"`{name}` must have {' or '.join(str(d) for d in allowed)} dimension(s); "
            f"got shape {arr.shape}."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"`{name}` must hold numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        where = _first_bad(bad)
        raise ValueError(
            f"`{name}` must hold finite probabilities in [0, 1]; got {arr[where].item()!r} at "
            f"{_where(where)}. Apply sigmoid/softmax to logits and reject NaN/Inf upstream."
        )
    return arr


def check_same_length(*arrays: tuple[str, np.ndarray]) -> int:
    """Raise ValueError unless every named array has the same first dimension."""
    lengths = {name: arr.shape[0] for name, arr in arrays}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"`{k}` has {v}" for k, v in lengths.items())
        raise ValueError(f"inputs must have the same number of samples; {listing}.")
    return next(iter(lengths.values()))


def check_positive_int(value: object, *, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
    return int(value)
