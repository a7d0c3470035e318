"""Detect and load checkpoint formats safely; write prune-audit checkpoints.

Owns: reading model files (SPEC §3.1) and ``save_checkpoint``. Must not touch devices
(everything loads on CPU) or run code from a file unless the user passed
``--trust-checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "prune-audit/1"


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    arch: str,
    outputs: list[str],
    task: str,
    preprocess: dict[str, Any] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a prune-audit checkpoint that loads with ``weights_only=True``.

    Parameters
    ----------
    path : str or Path
        Destination file.
    model : torch.nn.Module
        The model; only its ``state_dict`` is stored (tensors on CPU).
    arch : str
        How to rebuild the module: ``torchvision:NAME`` or ``package.module:factory``.
    outputs : list of str
        Names of the model outputs, in output order.
    task : {"multilabel", "binary", "multiclass"}
        What the outputs mean.
    preprocess : dict, optional
        ``{"image_size": int, "mean": [r, g, b], "std": [r, g, b]}``.
    arch_kwargs : dict, optional
        Extra keyword arguments for the factory (plain JSON-like values only).

    Returns
    -------
    Path
        The written path.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": str(arch),
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "outputs": [str(o) for o in outputs],
        "task": str(task),
        "preprocess": dict(preprocess or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
