"""Recoveries as registered strategies: what happens after pruning (SPEC §6.2).

Owns: the :class:`Recovery` interface, the registry that ``--recovery``,
``AuditConfig.recovery`` and the CLI's choices come from, the :class:`RecoveryContext` a
recovery receives (batches, loss, budget; built by the runner), and the built-ins:

- ``none``: one-shot pruning, nothing else;
- ``bn``: one-shot pruning, then BatchNorm running statistics re-estimated on the
  calibration split;
- ``finetune``: gradual magnitude pruning with fine-tuning on the train split
  (:func:`audit.pruning.finetune.gradual_prune_finetune`: 300 optimiser steps or two
  epochs, whichever is more, lr 0.01 with warm-up and cosine decay), then BatchNorm
  statistics re-estimated on the train split; repeated per fine-tuning seed.

Every recovery works with every pruning method. Adding one is one subclass decorated with
:func:`register_recovery`.

Must not: build batches, choose a device (the context carries it), or print.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from audit.pruning.batchnorm import recalibrate_batchnorm
from audit.pruning.finetune import DEFAULT_FINETUNE_LR, gradual_prune_finetune
from audit.pruning.masks import PruneStats
from audit.pruning.methods import PruningMethod

__all__ = [
    "Recovery",
    "RecoveryContext",
    "get_recovery",
    "recovery_choices",
    "recovery_help",
    "register_recovery",
]

_REGISTRY: dict[str, type[Recovery]] = {}


@dataclass(frozen=True)
class RecoveryContext:
    """What a recovery may use; the runner builds it once per audit.

    Attributes
    ----------
    device : torch.device
        Where models run and train.
    exclude : tuple of str
        ``fnmatch`` patterns of weights to leave dense.
    prepare : callable
        ``prepare(model)`` puts a pruned copy on the device in eval mode and the inference
        memory layout (in place) and returns it.
    calib_batches : callable
        ``calib_batches()`` yields normalised calibration input batches on the device.
    train_batches : callable, optional
        ``train_batches(epoch, seed)`` yields ``(x, y)`` training batches on the device (under
        torchrun with a sharded train split, ``(x, y, w)``: see
        :func:`audit.pruning.finetune.gradual_prune_finetune`); ``None`` when there is no
        train split.
    train_wrapper : callable, optional
        ``train_wrapper(copy)`` returns the module that fine-tunes ``copy`` (under torchrun a
        DistributedDataParallel wrapper); ``None`` trains the copy itself.
    loss_fn : callable, optional
        ``loss_fn(logits, y)`` for fine-tuning.
    example_input : torch.Tensor, optional
        One normalised input batch on the device (structural methods trace with it).
    finetune_steps, finetune_epochs : int, optional
        The fine-tuning budget (see :func:`audit.pruning.finetune.finetune_budget`).
    finetune_lr : float
        Peak fine-tuning learning rate.
    progress : callable, optional
        ``progress(description, total)`` returns a context manager yielding ``advance(n)``.
    """

    device: torch.device
    exclude: tuple[str, ...] = ()
    prepare: Callable[[nn.Module], nn.Module] = lambda model: model
    calib_batches: Callable[[], Iterable[torch.Tensor]] | None = None
    train_batches: Callable[[int, int], Iterable[tuple[torch.Tensor, ...]]] | None = None
    train_wrapper: Callable[[nn.Module], nn.Module] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    example_input: torch.Tensor | None = None
    finetune_steps: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float = DEFAULT_FINETUNE_LR
    progress: Callable[..., object] | None = None


class Recovery(ABC):
    """One way of recovering accuracy after pruning.

    Subclasses set ``name``, a one-line ``help``, ``needs_train_split`` and ``seeded``
    (whether the audit repeats it per ``--finetune-seeds`` seed), and implement :meth:`run`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    needs_train_split: ClassVar[bool] = False
    seeded: ClassVar[bool] = False

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        sparsity: float,
        method: PruningMethod,
        context: RecoveryContext,
        *,
        seed: int,
    ) -> tuple[nn.Module, PruneStats]:
        """Prune a copy of ``model`` with ``method`` at ``sparsity`` and recover it.

        Returns the recovered copy (on ``context.device``, eval mode) and its statistics;
        ``model`` is never modified.
        """


def register_recovery(cls: type[Recovery]) -> type[Recovery]:
    """Class decorator: make ``cls`` available to ``--recovery`` and ``AuditConfig``.

    Raises
    ------
    ValueError
        If another class already registered the same ``name``.
    """
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a recovery named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def recovery_help() -> list[tuple[str, str]]:
    """``(name, one-line help)`` of every registered recovery, for the CLI's help text."""
    return [(name, cls.help) for name, cls in _REGISTRY.items()]


def recovery_choices() -> tuple[str, ...]:
    """The registered recovery names, as ``--recovery`` lists them."""
    return tuple(_REGISTRY)


def get_recovery(name: object) -> Recovery:
    """Resolve a ``--recovery`` value.

    Raises
    ------
    ValueError
        If ``name`` is not a registered recovery; the message lists the choices.
    """
    if isinstance(name, Recovery):
        return name
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"--recovery {name!r} is not one of {', '.join(recovery_choices())}.")
    return cls()


def _one_shot(
    model: nn.Module, sparsity: float, method: PruningMethod, context: RecoveryContext
) -> tuple[nn.Module, PruneStats]:
    pruned, stats = method.prune(
        model, sparsity, exclude=context.exclude, example_input=context.example_input
    )
    return context.prepare(pruned), stats


@register_recovery
class NoRecovery(Recovery):
    """One-shot pruning and nothing else."""

    name = "none"
    help = "one-shot pruning, nothing else"

    def run(
        self,
        model: nn.Module,
        sparsity: float,
        method: PruningMethod,
        context: RecoveryContext,
        *,
        seed: int,
    ) -> tuple[nn.Module, PruneStats]:
        """Prune once."""
        return _one_shot(model, sparsity, method, context)


@register_recovery
class BatchNormRecovery(Recovery):
    """One-shot pruning, then BatchNorm statistics re-estimated on the calibration split."""

    name = "bn"
    help = "one-shot pruning + BatchNorm statistics re-estimated on the calibration split"

    def run(
        self,
        model: nn.Module,
        sparsity: float,
        method: PruningMethod,
        context: RecoveryContext,
        *,
        seed: int,
    ) -> tuple[nn.Module, PruneStats]:
        """Prune once, then recalibrate BatchNorm."""
        pruned, stats = _one_shot(model, sparsity, method, context)
        if context.calib_batches is None:
            raise ValueError("recovery 'bn' needs calibration batches")
        recalibrate_batchnorm(pruned, context.calib_batches(), device=context.device)
        return pruned, stats


@register_recovery
class FinetuneRecovery(Recovery):
    """Gradual pruning with fine-tuning on the train split, then BatchNorm re-estimated."""

    name = "finetune"
    help = (
        "gradual pruning while fine-tuning on the train split (>= 300 steps, lr 0.01, "
        "warm-up + cosine), then BatchNorm re-estimated"
    )
    needs_train_split = True
    seeded = True

    def run(
        self,
        model: nn.Module,
        sparsity: float,
        method: PruningMethod,
        context: RecoveryContext,
        *,
        seed: int,
    ) -> tuple[nn.Module, PruneStats]:
        """Fine-tune while pruning (one seed)."""
        train, loss_fn = context.train_batches, context.loss_fn
        if train is None or loss_fn is None:
            raise ValueError("recovery 'finetune' needs training batches and a loss")

        def recalibration_inputs() -> Iterable[torch.Tensor]:
            return (batch[0] for batch in train(0, seed))

        progress = context.progress or _no_progress
        with progress(f"Fine-tuning to {sparsity:g} (seed {seed})", None) as advance:
            pruned, stats = gradual_prune_finetune(
                model,
                sparsity,
                batches=lambda epoch: train(epoch, seed),
                loss_fn=loss_fn,
                steps=context.finetune_steps,
                epochs=context.finetune_epochs,
                lr=context.finetune_lr,
                seed=seed,
                method=method,
                exclude=context.exclude,
                recalibrate=recalibration_inputs,
                example_input=context.example_input,
                wrap=context.train_wrapper,
                device=context.device,
                progress=lambda done, total: advance(1),
            )
        return context.prepare(pruned), stats


@contextmanager
def _no_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda n: None
