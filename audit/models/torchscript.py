"""The TorchScript format: archives written by ``torch.jit.save``.

TorchScript code cannot call Python and its pickles go through TorchScript's restricted
unpickler, so loading needs no trust. Must not touch devices.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from audit.errors import CheckpointError
from audit.models.formats import ModelFile
from audit.models.loaded import LoadedModel, loaded_module


def is_torchscript(file: ModelFile) -> bool:
    """Whether the zip archive has TorchScript's entries (``constants.pkl`` or ``code/``)."""
    return "constants.pkl" in file.zip_entries or "code" in file.zip_entries


def load_torchscript(path: Path) -> LoadedModel:
    """Load a TorchScript archive with ``torch.jit.load`` on CPU."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # the C++ reader raises RuntimeError and friends
        raise CheckpointError(
            f"Cannot load {str(path)!r} as TorchScript ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); the archive is truncated, "
            "corrupt or from an incompatible PyTorch. Re-save it with torch.jit.save."
        ) from e
    return loaded_module(module, "torchscript")
