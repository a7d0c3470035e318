"""The run context and the scope that owns an audit's resources.

Owns: :class:`RunContext` (the config, the resolved device and precision, the distributed
context, the progress sink and the scope), :class:`Scope` (the decoded-image caches, the
staging folder inside ``--out`` and the process group: each released exactly once, however
the run ends), the :class:`Progress` protocol and :class:`AuditResult`.
Must not: compute metrics, or write anything but the staging folder it opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from audit import inference
from audit.config import AuditConfig
from audit.data import ImageCache
from audit.report.writer import Staging, open_staging
from audit.results import Report


class Progress(Protocol):
    """Where the runner reports progress; the CLI passes a rich-backed implementation."""

    def task(
        self, description: str, total: int | None
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Open a task; the context yields an ``advance(n)`` callable."""
        ...

    def log(self, message: str) -> None:
        """A one-line status message."""
        ...


class SilentProgress:
    """Progress that reports nothing (the Python API default)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Open a task that ignores its advances."""
        yield lambda n: None

    def log(self, message: str) -> None:
        """Drop the message."""


@dataclass(frozen=True)
class AuditResult:
    """What ``run_audit`` returns: the report data, the gate decision, the written files."""

    report: dict[str, Any]
    passed: bool
    files: tuple[Path, ...] = field(default=())
    #: The MLflow run the audit was logged to (``mlflow=True``), else None.
    mlflow_run_id: str | None = None
    #: Warnings raised after the reports were written (so not in report.json), e.g. a failed
    #: MLflow logging; the CLI prints them with the report's warnings.
    notices: tuple[str, ...] = ()
    #: The typed results ``report`` is the JSON of (None on non-zero torchrun ranks).
    results: Report | None = None

    @property
    def gate(self) -> dict[str, Any]:
        """The report's gate object."""
        return self.report["gate"]

    @property
    def exit_code(self) -> int:
        """0 when the gate passed, 1 when it failed."""
        return 0 if self.passed else 1


@dataclass
class Scope:
    """The resources of one run, released by :meth:`close` (once, in reverse order)."""

    dist: inference.Dist
    staging: Staging | None = None
    caches: list[ImageCache] = field(default_factory=list)

    def adopt(self, cache: ImageCache) -> ImageCache:
        """Keep ``cache`` until the run ends; returns it."""
        self.caches.append(cache)
        return cache

    def pruned_dir(self, cfg: AuditConfig) -> Path | None:
        """Where ``--save-pruned`` checkpoints go (inside the staging folder), else None."""
        return self.staging.path if cfg.save_pruned and self.staging is not None else None

    def close(self) -> None:
        """Close the caches, discard an uncommitted staging folder, leave the process group."""
        for c in self.caches:
            c.close()
        self.caches.clear()
        if self.staging is not None:
            self.staging.discard()  # a no-op once write_reports committed it
        inference.shutdown_distributed()


@dataclass(frozen=True)
class RunContext:
    """What every stage receives: the config, where it runs, and how it reports progress."""

    cfg: AuditConfig
    device: torch.device
    precision: str
    dist: inference.Dist
    progress: Progress
    scope: Scope

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that measures, judges and writes)."""
        return self.dist.is_main


@contextlib.contextmanager
def open_run(cfg: AuditConfig, progress: Progress, output_names: list[str]) -> Iterator[RunContext]:
    """Resolve the device, join the process group, open the staging folder (rank 0).

    The staging folder opens before any loading or inference: a bad ``--out`` fails in a
    second, not after the audit; it also holds the pruned checkpoints.
    """
    device = inference.resolve_device(cfg.device)
    precision = inference.resolve_precision(cfg.precision, device)
    scope = Scope(dist=inference.init_distributed(device))
    try:
        if scope.dist.is_main:
            scope.staging = open_staging(cfg.out, output_names, summary_out=cfg.summary_out)
        yield RunContext(cfg, device, precision, scope.dist, progress, scope)
    finally:
        scope.close()
