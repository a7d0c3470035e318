"""The report-format registry: every file ``--format`` can name is one entry here.

Owns: :class:`ReportFormat` (a name, the file it writes, the renderer), the registry, the
four built-in formats (``json``, ``md``, ``html``, ``junit``) and the validation of a list of
format names. ``AuditConfig``, the CLI's ``--format`` of ``check`` and ``report``, and
:func:`audit.report.write_reports` all ask this module, so a format registered with
:func:`register_report_format` (from any package, before the run) is accepted by every one
of them and an unknown name is refused by every one of them with the same message.

Must not compute a metric or write a file: renderers format the report dict into text, and
the writer places the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from audit.errors import UsageError
from audit.report.html import render_html
from audit.report.json_report import render_json
from audit.report.junit import render_junit
from audit.report.markdown import render_markdown

Renderer = Callable[[Mapping[str, Any]], str]

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Files the writer places besides the report formats; a format may not take their names.
_RESERVED_FILENAMES = frozenset({"predictions.npz"})


@dataclass(frozen=True)
class ReportFormat:
    """One report format: what ``--format NAME`` writes.

    Parameters
    ----------
    name : str
        The name given to ``--format`` (lower-case letters, digits, ``-``, ``_``).
    filename : str
        The file written in the report directory (a plain file name, no directory).
    render : callable
        ``render(report) -> str``: turns the report dict (docs/report-json.md) into the file's
        text (written as UTF-8). It formats; it must not compute a metric.
    description : str, default=""
        One line for ``--help`` and the README.
    """

    name: str
    filename: str
    render: Renderer
    description: str = ""


_REGISTRY: dict[str, ReportFormat] = {}


class UnknownFormatError(UsageError, ValueError):
    """A format name that is not registered (a usage error, exit 2; also a ValueError)."""


def register_report_format(
    name: str,
    render: Renderer,
    *,
    filename: str,
    description: str = "",
    replace: bool = False,
) -> ReportFormat:
    """Register a report format so that ``--format``, ``AuditConfig`` and the writer know it.

    Parameters
    ----------
    name : str
        Format name (``[a-z][a-z0-9_-]*``, at most 32 characters), e.g. ``"csv"``.
    render : callable
        ``render(report: Mapping) -> str``.
    filename : str
        File name in the report directory, e.g. ``"report.csv"``.
    description : str, default=""
        One line describing the format.
    replace : bool, default=False
        Allow replacing a format already registered under ``name``.

    Returns
    -------
    ReportFormat
        The registered entry.

    Raises
    ------
    TypeError
        If ``render`` is not callable or a name is not a string.
    ValueError
        If ``name`` or ``filename`` is malformed, ``name`` is taken (without ``replace``), or
        ``filename`` is already written by another format or by the writer itself.
    """
    if not isinstance(name, str) or not isinstance(filename, str):
        raise TypeError(
            f"report format name and filename must be strings, got {type(name).__name__} "
            f"and {type(filename).__name__}"
        )
    if not callable(render):
        raise TypeError(
            f"report format {name!r}: render must be a callable render(report) -> str, "
            f"got {type(render).__name__}"
        )
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"report format name {name!r} is not valid: use 1-32 lower-case letters, digits, "
            "'-' or '_', starting with a letter (it is typed in a comma list: --format json,NAME)"
        )
    if not _FILENAME.fullmatch(filename) or filename in _RESERVED_FILENAMES:
        raise ValueError(
            f"report format {name!r}: filename {filename!r} is not valid: give a plain file "
            "name (letters, digits, '.', '-', '_'; no directory, not hidden) other than "
            f"{', '.join(sorted(_RESERVED_FILENAMES))}, e.g. 'report.csv'"
        )
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"report format {name!r} is already registered (writing "
            f"{_REGISTRY[name].filename}); pass replace=True to replace it"
        )
    clash = [f.name for f in _REGISTRY.values() if f.filename == filename and f.name != name]
    if clash:
        raise ValueError(
            f"report format {name!r}: filename {filename!r} is already written by format "
            f"{clash[0]!r}; choose another file name"
        )
    entry = ReportFormat(name=name, filename=filename, render=render, description=description)
    _REGISTRY[name] = entry
    return entry


def unregister_report_format(name: str) -> None:
    """Remove a registered format (tests and plug-ins that register temporarily use it).

    Parameters
    ----------
    name : str
        A registered format name.

    Raises
    ------
    KeyError
        If no format of that name is registered.
    """
    if name not in _REGISTRY:
        raise KeyError(f"no report format {name!r} is registered")
    del _REGISTRY[name]


def report_format_names() -> tuple[str, ...]:
    """Names of the registered formats, in registration order (built-ins first)."""
    return tuple(_REGISTRY)


def get_report_format(name: str) -> ReportFormat:
    """The registered format ``name``; an unknown name raises as ``--format`` does."""
    return _REGISTRY[check_formats((name,))[0]]


def check_formats(formats: Iterable[str] | str, *, flag: str = "--format") -> tuple[str, ...]:
    """Validate a list of format names against the registry.

    Parameters
    ----------
    formats : iterable of str, or str
        Format names; a string is read as a comma list (``"json,md"``).
    flag : str, default="--format"
        The option named in the error message.

    Returns
    -------
    tuple of str
        The names, stripped, in the given order, duplicates removed.

    Raises
    ------
    UnknownFormatError
        (a :class:`UsageError`, exit code 2, and a ``ValueError``) if the list is empty or
        names a format that is not registered; the message lists the registered formats.
    """
    if isinstance(formats, str):
        names = [f.strip() for f in formats.split(",")]
    else:
        names = [f.strip() if isinstance(f, str) else f for f in formats]
    names = [f for f in names if f != ""]
    unknown = [f for f in names if not isinstance(f, str) or f not in _REGISTRY]
    if unknown or not names:
        given = ",".join(str(f) for f in names)
        what = f"unknown report format(s) {unknown}" if unknown else "no report format named"
        raise UnknownFormatError(
            f"{flag} {given!r}: {what}; the registered report formats are "
            f"{', '.join(report_format_names())}. Give a comma list of them, e.g. "
            f"{flag} json,md,html."
        )
    return tuple(dict.fromkeys(names))


def _register_builtins() -> None:
    builtins: tuple[tuple[str, str, Renderer, str], ...] = (
        ("json", "report.json", render_json, "everything, machine-readable (report.json)"),
        ("md", "report.md", render_markdown, "verdict and tables for a PR comment (report.md)"),
        ("html", "report.html", render_html, "self-contained page with plots (report.html)"),
        ("junit", "report.junit.xml", render_junit, "one JUnit test case per gate check"),
    )
    for name, filename, render, description in builtins:
        register_report_format(name, render, filename=filename, description=description)


_register_builtins()
