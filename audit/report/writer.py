"""Write the report files into the output directory, all or nothing.

Owns: the staging folder, the atomic placement of the report files, ``predictions.npz`` and
extra files (pruned checkpoints), and the Markdown copies for ``$GITHUB_STEP_SUMMARY`` and
``summary_out``. Which formats exist, their file names and renderers belong to the registry
(:mod:`audit.report.formats`). Renderers format and never compute a metric; this module only
validates the dict, calls them and moves their output into place.

Staging lives *inside* the output folder (``OUT/.prune-audit-staging.<pid>.<random>/``), so
every final move is a rename within one file system, also when ``OUT`` is a mount point
(a CI or container volume). The folder holds an exclusive ``flock`` on its ``.lock`` file
while its process lives; a folder whose lock can be taken belongs to a process that died
(SIGKILL, power loss) and is removed by the next successful write into the same folder.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from audit.errors import OutputError
from audit.report.formats import check_formats, get_report_format
from audit.report.schema import validate_report

try:  # POSIX; elsewhere stale folders are recognised by their dead pid alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PREDICTIONS_NAME = "predictions.npz"
STAGING_PREFIX = ".prune-audit-staging"
_STAGING_RE = re.compile(rf"^{re.escape(STAGING_PREFIX)}\.(\d+)\.[A-Za-z0-9_]+$")
_LOCK_NAME = ".lock"
_BACKUPS = ".backup"
# np.savez_compressed takes these as its own parameters, so they cannot name an array.
_RESERVED_KEYS = frozenset({"file", "allow_pickle", "args", "kwds"})
#: Test hook: the name of a point (see ``pause_point``) at which to stop, and the file to
#: create there, so a test can kill the process at that point (tests/test_signals.py).
PAUSE_ENV, PAUSE_FILE_ENV = "PRUNE_AUDIT_TEST_PAUSE_AT", "PRUNE_AUDIT_TEST_PAUSE_FILE"


def pause_point(name: str) -> None:
    """Stop here for up to a minute when the test hook ``PRUNE_AUDIT_TEST_PAUSE_AT`` names it.

    Parameters
    ----------
    name : str
        The point: ``"pruned-saved"`` (a pruned checkpoint is staged), ``"staged"`` (every
        file is rendered into the staging folder) or ``"placing"`` (the first file was moved
        into place, the others not yet).
    """
    if os.environ.get(PAUSE_ENV) != name:
        return
    flag = os.environ.get(PAUSE_FILE_ENV)
    if flag:
        Path(flag).write_text(str(os.getpid()), encoding="ascii")
    time.sleep(60)


class Staging:
    """A private folder inside the output folder where one run's files are built.

    Create it with :func:`open_staging` before any expensive work: doing so proves that
    ``out`` can be written. :meth:`discard` removes it (and the folders created for it);
    :func:`write_reports` commits it.
    """

    def __init__(self, out: Path, path: Path, created: list[Path], lock: BinaryIO | None):
        self.out = out
        self.path = path
        self.created = created
        self._lock = lock
        self.committed = False

    def discard(self) -> None:
        """Remove the staging folder and any output folder created for it (idempotent)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if not self.committed:
            _remove_created(self.created)


def open_staging(
    out_dir: str | os.PathLike[str],
    names: Sequence[str] = (),
    *,
    summary_out: str | os.PathLike[str] | None = None,
) -> Staging:
    """Check that the reports can be written to ``out_dir`` and open a staging folder in it.

    Parameters
    ----------
    out_dir : str or PathLike
        The output folder (created, with its parents, if missing; removed again by
        :meth:`Staging.discard` unless the write was committed).
    names : sequence of str
        File names that will be written into ``out_dir``; none may be an existing folder.
    summary_out : str or PathLike, optional
        The extra Markdown copy; its folder must exist and it must not be a folder.

    Returns
    -------
    Staging
        The open staging folder.

    Raises
    ------
    OutputError
        When ``out_dir`` is a file or under one, a named file is a folder, or the folder
        cannot be created or written (read-only or full file system, permissions).
    """
    out = Path(out_dir).absolute()
    fix = "Pass another --out, or fix the path."
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {str(out)!r} is an existing file, not a folder; the reports are files "
            f"written into that folder. {fix}"
        )
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None and not out.exists():
        raise OutputError(
            f"--out {str(out)!r} is under {str(blocker)!r}, which is a file, so the folder "
            f"cannot be created. {fix}"
        )
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            raise OutputError(
                f"{str(target)!r} is a folder, so the report file {name!r} cannot be written "
                "there. Remove or rename that folder, or pass another --out."
            )
    if summary_out is not None:
        dest = Path(summary_out).absolute()
        if dest.is_dir():
            raise OutputError(
                f"--summary-out {str(dest)!r} is a folder; pass the path of a file to write."
            )
        if not dest.parent.is_dir():
            raise OutputError(
                f"--summary-out {str(dest)!r}: its folder {str(dest.parent)!r} does not exist. "
                "Create it or pass another path."
            )
    created = _missing_ancestors(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}.{os.getpid()}.", dir=out))
    except OSError as exc:
        _remove_created(created)
        raise OutputError(
            f"Cannot write to --out {str(out)!r}: {exc.strerror or exc}. Pass a folder on a "
            "writable file system with free space (or fix its permissions)."
        ) from None
    lock = None
    try:
        lock = open(path / _LOCK_NAME, "wb")  # noqa: SIM115 - held until discard()
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if lock is not None:
            lock.close()
        shutil.rmtree(path, ignore_errors=True)
        _remove_created(created)
        raise OutputError(
            f"Cannot write to --out {str(out)!r}: {exc.strerror or exc}. Pass a folder on a "
            "writable file system with free space."
        ) from None
    return Staging(out, path, created, lock)


def stale_stagings(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Staging folders in ``out_dir`` left by processes that died (their lock is free).

    Parameters
    ----------
    out_dir : str or PathLike
        The output folder.

    Returns
    -------
    list of Path
        Folders safe to remove: their ``.lock`` is not held (or, without ``flock`` or
        without a lock file, the pid in their name is not running).
    """
    out = Path(out_dir)
    stale = []
    try:
        entries = list(out.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _STAGING_RE.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        if _is_free(entry / _LOCK_NAME, int(match.group(1))):
            stale.append(entry)
    return sorted(stale)


def _is_free(lock_path: Path, pid: int) -> bool:
    if fcntl is not None and lock_path.is_file():
        try:
            with open(lock_path, "rb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its process is alive
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (another user's)
    return False


def write_reports(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("json", "md", "html"),
    predictions: Mapping[str, Any] | None = None,
    summary_out: str | os.PathLike[str] | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    staging: Staging | None = None,
) -> list[Path]:
    """Validate the report and write it in the requested formats, atomically.

    Everything is rendered into a staging folder inside ``out_dir`` first and then renamed
    into place; if anything fails (validation, rendering, a write, a move, a signal), files
    already moved are put back as they were, a directory this call created is removed, and
    the exception propagates: nothing new is left behind. After a successful write, staging
    folders of dead earlier runs in ``out_dir`` are removed.

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
    staging : Staging, optional
        A staging folder opened earlier with :func:`open_staging` for ``out_dir`` (the
        runner opens it before inference and stages pruned checkpoints in it); it is
        committed or discarded here. Opened here when omitted.

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
    OutputError
        When ``out_dir`` cannot be written or a write fails (full disk, read-only file
        system, ...): the message names the file and the reason.

    Notes
    -----
    When the environment variable ``GITHUB_STEP_SUMMARY`` names a file, the Markdown report
    is appended to it (whatever ``formats`` says), after all files are in place.
    """
    fmts, arrays, extras, names = _checked_request(
        report, formats, predictions, extra_files, staging
    )
    if staging is None:
        staging = open_staging(out_dir, names, summary_out=summary_out)
    out, stage = staging.out, staging.path
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    placed: list[tuple[Path, Path | None]] = []
    current = ["the staging folder"]  # what is being written, for the error message
    try:
        markdown = None
        if any(f.name == "md" for f in fmts) or step_summary or summary_out is not None:
            markdown = get_report_format("md").render(report)
        _stage_files(report, fmts, markdown, arrays, extras, stage, current)
        pause_point("staged")
        _place_files(names, out, stage, placed, current)
        _write_summaries(markdown or "", summary_out, step_summary, placed, current)
    except OSError as exc:
        _roll_back(placed)
        staging.discard()
        reason = "the file system is full" if exc.errno == errno.ENOSPC else exc.strerror or exc
        raise OutputError(
            f"Could not write the reports into {str(out)!r}: {reason} (while writing "
            f"{current[0]}). Nothing there was changed; free space or pass another --out."
        ) from exc
    except BaseException:
        _roll_back(placed)
        staging.discard()
        raise
    _commit(staging, placed)
    return [out / name for name in names]


def _commit(staging: Staging, placed: list[tuple[Path, Path | None]]) -> None:
    """Keep the placed files: drop the staging folder, the backups and dead runs' folders."""
    staging.committed = True
    staging.discard()  # with the backups of the replaced report files
    for _, backup in placed:
        if backup is not None:
            backup.unlink(missing_ok=True)  # summary_out's, kept beside it
    for stale in stale_stagings(staging.out):
        shutil.rmtree(stale, ignore_errors=True)


def _checked_request(
    report: Mapping[str, Any],
    formats: Sequence[str],
    predictions: Mapping[str, Any] | None,
    extra_files: Sequence[str | os.PathLike[str]],
    staging: Staging | None,
) -> tuple[list[Any], dict[str, np.ndarray] | None, list[Path], list[str]]:
    """Check a write before anything is staged: formats, schema, arrays, file names.

    Returns the formats, the prediction arrays, the extra files and every file name to
    place; a given ``staging`` is discarded when a check fails.
    """
    try:
        fmts = [get_report_format(name) for name in check_formats(formats)]
        validate_report(report)
        arrays = _prediction_arrays(predictions) if predictions is not None else None
    except BaseException:
        if staging is not None:
            staging.discard()
        raise
    names = [f.filename for f in fmts]
    if arrays is not None:
        names.append(PREDICTIONS_NAME)
    extras = [Path(e) for e in extra_files]
    for extra in extras:
        if extra.name in names:
            if staging is not None:
                staging.discard()
            raise ValueError(f"extra file {extra} would replace the report's {extra.name}")
        names.append(extra.name)
    return fmts, arrays, extras, names


def _stage_files(
    report: Mapping[str, Any],
    fmts: Sequence[Any],
    markdown: str | None,
    arrays: Mapping[str, np.ndarray] | None,
    extras: Sequence[Path],
    stage: Path,
    current: list[str],
) -> None:
    """Render every format, ``predictions.npz`` and the extra files into the staging folder."""
    for fmt in fmts:
        text = markdown if fmt.name == "md" else fmt.render(report)
        current[0] = fmt.filename
        (stage / fmt.filename).write_text(text, encoding="utf-8")
    if arrays is not None:
        current[0] = PREDICTIONS_NAME
        with open(stage / PREDICTIONS_NAME, "wb") as fh:
            np.savez_compressed(fh, allow_pickle=False, **arrays)
    for extra in extras:
        current[0] = extra.name
        if extra.absolute().parent != stage:
            shutil.move(extra, stage / extra.name)


def _place_files(
    names: Sequence[str],
    out: Path,
    stage: Path,
    placed: list[tuple[Path, Path | None]],
    current: list[str],
) -> None:
    """Rename the staged files into ``out``, keeping replaced files as backups in ``stage``."""
    (stage / _BACKUPS).mkdir()
    for i, name in enumerate(names):
        current[0] = name
        _place(stage / name, out / name, stage / _BACKUPS, placed)
        if i == 0:
            pause_point("placing")


def _write_summaries(
    markdown: str,
    summary_out: str | os.PathLike[str] | None,
    step_summary: str | None,
    placed: list[tuple[Path, Path | None]],
    current: list[str],
) -> None:
    """Write the ``summary_out`` copy, then append to ``$GITHUB_STEP_SUMMARY``."""
    if summary_out is not None:
        dest = Path(summary_out).absolute()
        current[0] = str(dest)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(markdown)
        _place(Path(tmp_name), dest, None, placed)
    if step_summary:
        # Last step: an append cannot be undone, so nothing may fail after it.
        current[0] = step_summary
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")


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


def _place(
    src: Path, dest: Path, backups: Path | None, placed: list[tuple[Path, Path | None]]
) -> None:
    """Move ``src`` onto ``dest``, keeping any existing file as a backup in ``backups``.

    Backups sit in the staging folder (beside ``dest`` when ``backups`` is None), so a run
    killed between the two renames leaves them only inside that folder.
    """
    backup = None
    if dest.exists() or dest.is_symlink():
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(dest))
        where = backups if backups is not None else dest.parent
        backup = where / f".{dest.name}.{os.getpid()}.bak"
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
