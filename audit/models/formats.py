"""The checkpoint-format registry: each model file format is one registered loader.

Owns: the :class:`CheckpointFormat` record, the ordered registry, and :class:`ModelFile`, the
lazily read view of a file that loaders detect formats on. Must not load anything itself
(``audit.model_io`` registers the built-in loaders and is the public entry point), touch
devices, or read a file with a code-executing unpickler (``ModelFile.torch_object`` is
whatever the weights-only reader supplied by ``model_io`` returns).

Adding a format is one :func:`register_format` call: a name, a ``detect(file) -> bool`` that
only looks (cheap checks first: ``is_zip``, ``zip_entries``, ``head``; ``torch_object`` only
for formats that are ``torch.save`` files) and a ``load(file) -> LoadedModel``. Formats are
tried in registration order (``before=`` inserts ahead of another), the first whose
``detect`` says yes loads the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.models.loaded import LoadedModel


class ModelFile:
    """A model file being loaded, with the user's options and cached views of its content.

    Parameters
    ----------
    path : Path
        The file (exists, is a readable regular file).
    arch : str or None
        ``--arch`` as the user gave it.
    trust_checkpoint : bool
        ``--trust-checkpoint``.
    read_torch : callable
        ``read_torch(path, trust_checkpoint=...) -> (object, pickled)``: the weights-only
        ``torch.load`` (full unpickling only when trusted), supplied by ``model_io``.
    """

    def __init__(
        self,
        path: Path,
        *,
        arch: str | None,
        trust_checkpoint: bool,
        read_torch: Callable[..., tuple[Any, bool]],
    ) -> None:
        self.path = path
        self.arch = arch
        self.trust_checkpoint = trust_checkpoint
        self._read_torch = read_torch

    @cached_property
    def head(self) -> bytes:
        """The first 64 bytes."""
        with self.path.open("rb") as f:
            return f.read(64)

    @cached_property
    def is_zip(self) -> bool:
        """Whether the file is a readable zip archive (torch.save, TorchScript, .pt2 all are)."""
        try:
            if not zipfile.is_zipfile(self.path):
                return False
            with zipfile.ZipFile(self.path) as zf:
                zf.namelist()
        except (OSError, zipfile.BadZipFile, ValueError):
            return False
        return True

    @cached_property
    def zip_entries(self) -> frozenset[str]:
        """Second-level entry names of a zip archive (``archive/code`` → ``code``), else empty."""
        if not self.is_zip:
            return frozenset()
        with zipfile.ZipFile(self.path) as zf:
            names = zf.namelist()
        return frozenset(
            PurePosixPath(n).parts[1] for n in names if len(PurePosixPath(n).parts) > 1
        )

    @cached_property
    def _torch(self) -> tuple[Any, bool]:
        return self._read_torch(self.path, trust_checkpoint=self.trust_checkpoint)

    @property
    def torch_object(self) -> Any:
        """What ``torch.load(weights_only=True)`` returned (``CheckpointError`` if refused)."""
        return self._torch[0]

    @property
    def pickled(self) -> bool:
        """Whether ``torch_object`` came from a full, code-executing unpickle (trusted)."""
        return self._torch[1]


@dataclass(frozen=True)
class CheckpointFormat:
    """One model file format.

    Attributes
    ----------
    name : str
        Recorded as ``LoadedModel.format`` (``prune-audit``, ``state_dict``, ...).
    detect : callable
        ``detect(file: ModelFile) -> bool``; looks only.
    load : callable
        ``load(file: ModelFile) -> LoadedModel``; raises ``CheckpointError`` with the fix.
    summary : str
        One phrase for messages and README ("TorchScript archive (torch.jit.save)").
    """

    name: str
    detect: Callable[[ModelFile], bool]
    load: Callable[[ModelFile], LoadedModel]
    summary: str


_FORMATS: list[CheckpointFormat] = []


def register_format(fmt: CheckpointFormat, *, before: str | None = None) -> None:
    """Add ``fmt`` to the registry (replacing one of the same name), optionally ahead of another."""
    existing = [f for f in _FORMATS if f.name != fmt.name]
    if before is None:
        existing.append(fmt)
    else:
        names = [f.name for f in existing]
        if before not in names:
            raise ValueError(f"no registered checkpoint format named {before!r} (have {names})")
        existing.insert(names.index(before), fmt)
    _FORMATS[:] = existing


def checkpoint_formats() -> tuple[CheckpointFormat, ...]:
    """The registered formats in detection order."""
    return tuple(_FORMATS)


def format_names() -> tuple[str, ...]:
    """Names of the registered formats in detection order."""
    return tuple(f.name for f in _FORMATS)
