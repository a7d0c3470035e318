"""Error types of prune-audit and the exit codes they map to.

Owns: the exception hierarchy and exit codes (SPEC §2). Every error a user can cause is an
``AuditError`` whose message is one paragraph naming the file/row/column/key, the constraint,
the value received and the fix. Nothing here prints or exits; ``cli`` does that.
"""

from __future__ import annotations

EXIT_PASSED = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4


class AuditError(Exception):
    """Base class of errors caused by the user's inputs; ``exit_code`` says how to exit."""

    exit_code: int = EXIT_INPUT


class UsageError(AuditError):
    """A flag or option combination that makes no sense (exit 2)."""

    exit_code = EXIT_USAGE


class InputError(AuditError):
    """Bad input of any kind (exit 3); subclasses say which kind."""


class CheckpointError(InputError):
    """The model file cannot be loaded safely or does not fit the data."""


class DataError(InputError):
    """The dataset (layout, labels, images, splits) is unusable as given."""


class PolicyError(InputError):
    """The gate policy has unknown keys or out-of-range values."""


class OutputError(InputError):
    """The report folder (``--out``) or a file in it cannot be written as asked."""
