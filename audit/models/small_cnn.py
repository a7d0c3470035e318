"""The demo's small CNN: an architecture prune-audit ships and registers.

Owns: ``SmallCNN`` and its factory ``small_cnn``, registered in
:mod:`audit.models.architectures` as ``audit.demo:small_cnn`` (the name the demo's
checkpoints record; ``audit.demo`` re-exports both). Must not import the rest of prune-audit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks with max-pooling between them and a linear head.

    The head reads the globally average-pooled outputs of the last ``head_from`` blocks,
    concatenated (a multi-scale head): global cues such as colour and brightness then reach
    the classifier by a short path, so the model degrades gradually under pruning instead of
    collapsing when its widest (most pruned) layer goes. BatchNorm matters: BN
    recalibration is the audit's default recovery after pruning.

    Parameters
    ----------
    num_outputs : int
        Number of logits (one per target for multilabel).
    widths : tuple of int, default (16, 32, 64, 128)
        Output channels of the four blocks (about 100k parameters by default).
    in_channels : int, default 3
        Input channels.
    head_from : int, default 2
        How many of the last blocks feed the head (1: only the last one, the classic
        layout).
    """

    def __init__(
        self,
        num_outputs: int,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        in_channels: int = 3,
        head_from: int = 2,
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        if not 1 <= head_from <= len(widths):
            raise ValueError(f"head_from must be in [1, {len(widths)}], got {head_from}")
        blocks: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            layers += [
                nn.Conv2d(prev, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            blocks.append(nn.Sequential(*layers))
            prev = width
        self.blocks = nn.ModuleList(blocks)
        self.head_from = head_from
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(sum(widths[-head_from:]), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` normalised images to ``(N, num_outputs)`` logits."""
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - self.head_from:
                pooled.append(torch.flatten(self.pool(x), 1))
        return self.head(torch.cat(pooled, 1))


def small_cnn(num_outputs: int, **kwargs: Any) -> nn.Module:
    """Build a ``SmallCNN``; the factory registered as ``audit.demo:small_cnn``.

    Parameters
    ----------
    num_outputs : int
        Number of logits.
    **kwargs
        Passed to ``SmallCNN`` (``widths``, ``in_channels``, ``head_from``); lists are
        accepted for ``widths`` because checkpoint metadata stores JSON-like values.

    Returns
    -------
    torch.nn.Module
        An untrained ``SmallCNN``.
    """
    if "widths" in kwargs:
        kwargs["widths"] = tuple(int(w) for w in kwargs["widths"])
    return SmallCNN(num_outputs, **kwargs)
