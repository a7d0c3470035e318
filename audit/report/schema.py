"""The report.json contract: the shipped JSON Schema and the checks made before writing.

Owns: ``SCHEMA_PATH``, :func:`validate_report`, and the two normalisations every renderer
relies on (numpy scalars/arrays to plain Python, and the refusal of NaN/inf). Must not:
compute or repair a metric; a report that breaks the contract is an error, not something
to patch up.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator

SCHEMA_PATH: Path = Path(__file__).with_name("report.schema.json")

_MAX_LISTED = 10


@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def to_plain(obj: Any) -> Any:
    """Return ``obj`` with numpy scalars/arrays, tuples and non-string keys made JSON-plain.

    The runner builds the dict from numpy results; ``json`` and ``jsonschema`` only know
    Python's own types (``np.int64`` is not an ``int``), so every renderer starts here.

    Parameters
    ----------
    obj : Any
        The report dict or any part of it.

    Returns
    -------
    Any
        A structure of dict/list/str/int/float/bool/None. Dict keys become strings the way
        ``json.dumps`` writes them (``0.9`` -> ``"0.9"``).

    Raises
    ------
    TypeError
        For a value JSON cannot represent, naming its key path.
    """
    try:
        return _plain(obj)
    except TypeError:
        # Walk again, slowly, only to name where the bad value sits.
        _locate_unplain(obj, "$")
        raise


def _plain(obj: Any) -> Any:
    if obj is None or isinstance(obj, str | bool | int | float):
        return obj
    if isinstance(obj, Mapping):
        return {
            key if isinstance(key, str) else _key(key, "$"): _plain(value)
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    raise TypeError(f"{type(obj).__name__} is not JSON-representable")


def _locate_unplain(obj: Any, path: str) -> None:
    if obj is None or isinstance(obj, str | bool | int | float | np.generic | np.ndarray):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = _key(key, path)
            _locate_unplain(value, f"{path}.{name}")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _locate_unplain(v, f"{path}[{i}]")
        return
    raise TypeError(
        f"report value at {path} has type {type(obj).__name__}, which JSON cannot represent; "
        "convert it to a number, string, list or dict (or None when undefined)"
    )


def _key(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, bool | int | float) or key is None:
        return json.dumps(key)
    raise TypeError(f"report key {key!r} under {path} must be a string, got {type(key).__name__}")


def non_finite_paths(obj: Any, path: str = "$") -> list[str]:
    """List the key paths of every NaN or infinite number in ``obj``.

    Parameters
    ----------
    obj : Any
        A plain structure (see :func:`to_plain`).
    path : str
        Path of ``obj`` itself.

    Returns
    -------
    list of str
        JSONPath-like locations such as ``$.dense.default.Smiling.overall.fpr``.
    """
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path]
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in non_finite_paths(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in non_finite_paths(v, f"{path}[{i}]")]
    return []


def check_finite(report: Any) -> None:
    """Refuse NaN and infinity anywhere in the report.

    The contract says an undefined number is ``None`` with a reason; a NaN means a metric
    leaked through without one, and ``json`` would write a token no JSON parser accepts.

    Parameters
    ----------
    report : Any
        A plain structure (see :func:`to_plain`).

    Raises
    ------
    ValueError
        Naming the key path of the first offending values.
    """
    bad = non_finite_paths(report)
    if bad:
        shown = ", ".join(bad[:_MAX_LISTED]) + (" ..." if len(bad) > _MAX_LISTED else "")
        raise ValueError(
            f"report contains {len(bad)} NaN/infinite number(s) at {shown}; undefined values "
            "must be None with a reason next to them (docs/report-json.md), never NaN"
        )


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a report dict against the shipped JSON Schema (Draft 2020-12).

    Parameters
    ----------
    report : Mapping
        The report dict as the runner produced it (numpy scalars are accepted).

    Raises
    ------
    TypeError
        If ``report`` is not a mapping or holds a value JSON cannot represent.
    ValueError
        Listing the first schema violations, each with its JSON path, the constraint and
        the value received; or naming NaN/infinite values.
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    plain = to_plain(report)
    check_finite(plain)
    errors = sorted(
        _validator().iter_errors(plain), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        lines = [f"  {e.json_path}: {_short(e.message)}" for e in errors[:_MAX_LISTED]]
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise ValueError(
            f"report does not match {SCHEMA_PATH.name} (schema_version "
            f"{plain.get('schema_version')!r}): {len(errors)} error(s); see docs/report-json.md\n"
            + "\n".join(lines)
            + more
        )


def _short(message: str, limit: int = 200) -> str:
    # jsonschema quotes the whole offending instance; a Metrics block would flood the message.
    return message if len(message) <= limit else message[: limit - 3] + "..."
