"""Write the report files into the output directory, all or nothing.

Owns: the atomic placement of the report files and ``predictions.npz``, and the Markdown
copies for ``$GITHUB_STEP_SUMMARY`` and ``summary_out``. Which formats exist, their file
names and renderers belong to the registry (:mod:`audit.report.formats`). Renderers format
and never compute a metric; this module only validates the dict, calls them and moves their
output into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.report.formats import check_formats, get_report_format
from audit.report.schema import validate_report

PREDICTIONS_NAME = "predictions.npz"
# np.savez_compressed takes these as its own parameters, so they cannot name an array.
_RESERVED_KEYS = frozenset({"file", "allow_pickle", "args", "kwds"})


def write_reports(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("json", "md", "html"),
    predictions: Mapping[str, Any] | None = None,
    summary_out: str | os.PathLike[str] | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Validate the report and write it in the requested formats, atomically.

    Everything is rendered into a temporary directory next to ``out_dir`` first and then
    moved into place; if anything fails (validation, rendering, a write, a move), files
    already moved are put back as they were, a directory this call created is removed, and
    the exception propagates: nothing new is left behind.

    Parameters
    ----------
    report : Mapping
        The report dict (docs/report-json.md); validated against the shipped schema.
    out_dir : str or PathLike
        Directory to write into (created, with its parents, if missing).
    formats : sequence of str, default=("json", "md", "html")
        Which report files to write: names registered in :mod:`audit.report.formats`
        (built in: ``json``, ``md``, ``html``, ``junit``).
    predictions : Mapping of str to array-like, optional
        Per-sample arrays (SPEC §7) written to ``predictions.npz`` with
        ``np.savez_compressed``; string arrays are stored as fixed-width unicode so that the
        file loads with ``allow_pickle=False``.
    summary_out : str or PathLike, optional
        Also write the Markdown report to this file (replacing it).
    extra_files : sequence of str or PathLike, default=()
        Finished files (e.g. the pruned checkpoints of ``--save-pruned``) moved into
        ``out_dir`` under their own names as part of the same all-or-nothing write. They are
        moved, not copied: on failure they are discarded with the rest of the staged write.

    Returns
    -------
    list of Path
        The files written in ``out_dir``, in ``formats`` order, then ``predictions.npz``, then
        ``extra_files``.

    Raises
    ------
    UsageError
        For an unknown format (the same message as ``--format``).
    ValueError
        For a report that does not match the schema or holds NaN.
    TypeError
        For prediction arrays that would need pickle to load.

    Notes
    -----
    When the environment variable ``GITHUB_STEP_SUMMARY`` names a file, the Markdown report
    is appended to it (whatever ``formats`` says), after all files are in place.
    """
    fmts = [get_report_format(name) for name in check_formats(formats)]
    validate_report(report)
    arrays = _prediction_arrays(predictions) if predictions is not None else None
    out = Path(out_dir).absolute()
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    created = _missing_ancestors(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    placed: list[tuple[Path, Path | None]] = []
    try:
        markdown = None
        if any(f.name == "md" for f in fmts) or step_summary or summary_out is not None:
            markdown = get_report_format("md").render(report)
        names = []
        for fmt in fmts:
            text = markdown if fmt.name == "md" else fmt.render(report)
            (stage / fmt.filename).write_text(text, encoding="utf-8")
            names.append(fmt.filename)
        if arrays is not None:
            with open(stage / PREDICTIONS_NAME, "wb") as fh:
                np.savez_compressed(fh, allow_pickle=False, **arrays)
            names.append(PREDICTIONS_NAME)
        for extra in map(Path, extra_files):
            if extra.name in names:
                raise ValueError(f"extra file {extra} would replace the report's {extra.name}")
            shutil.move(extra, stage / extra.name)
            names.append(extra.name)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            _place(stage / name, out / name, placed)
        if summary_out is not None:
            dest = Path(summary_out).absolute()
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(markdown or "")
            _place(Path(tmp_name), dest, placed)
        if step_summary:
            # Last step: an append cannot be undone, so nothing may fail after it.
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write((markdown or "") + "\n")
    except BaseException:
        _roll_back(placed)
        shutil.rmtree(stage, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    for _, backup in placed:
        if backup is not None:
            backup.unlink(missing_ok=True)
    return [out / name for name in names]


def _prediction_arrays(predictions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, value in predictions.items():
        if not isinstance(key, str) or not key or key in _RESERVED_KEYS or "/" in key:
            raise ValueError(
                f"predictions key {key!r} cannot name an array in predictions.npz; use a "
                f"non-empty string without '/' other than {sorted(_RESERVED_KEYS)}"
            )
        arr = np.asarray(value)
        if arr.dtype.kind == "O":
            flat = arr.ravel().tolist()
            if not all(isinstance(v, str) for v in flat):
                bad = next(type(v).__name__ for v in flat if not isinstance(v, str))
                raise TypeError(
                    f"predictions[{key!r}] is an object array holding {bad}; predictions.npz "
                    "must load with allow_pickle=False, so give numbers or strings"
                )
            # Fixed-width unicode loads without pickle; object arrays would not.
            arr = arr.astype(str) if arr.size else np.zeros(arr.shape, dtype="U1")
        elif arr.dtype.hasobject:
            raise TypeError(
                f"predictions[{key!r}] has dtype {arr.dtype} with Python objects inside; "
                "predictions.npz must load with allow_pickle=False"
            )
        arrays[key] = arr
    return arrays


def _missing_ancestors(path: Path) -> list[Path]:
    """Directories from ``path`` upward that do not exist yet (deepest first)."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def _place(src: Path, dest: Path, placed: list[tuple[Path, Path | None]]) -> None:
    """Move ``src`` onto ``dest``, keeping any existing file as a backup beside it."""
    backup = None
    if dest.exists() or dest.is_symlink():
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(f"cannot write report file {dest}: it is a directory")
        backup = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.bak")
        os.replace(dest, backup)
    placed.append((dest, backup))
    os.replace(src, dest)


def _roll_back(placed: list[tuple[Path, Path | None]]) -> None:
    for dest, backup in reversed(placed):
        try:
            if backup is None or dest.exists():
                dest.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, dest)
        except OSError:
            pass  # best effort: the original exception is the one to report


def _remove_created(created: list[Path]) -> None:
    for directory in created:
        if not directory.exists():
            continue
        try:
            directory.rmdir()
        except OSError:
            break
