"""Re-estimating BatchNorm running statistics of a pruned model (recovery ``bn``).

Owns: finding every module with running statistics (eager and TorchScript), resetting them
and re-estimating them as a cumulative average over given input batches, with every other
layer kept in eval mode and every mode and momentum restored afterwards.

Must not: prune, train, choose a device (the caller passes it), or print.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from audit.pruning.scope import RUNNING_STATS_TYPE_NAMES, type_name

__all__ = ["has_running_stats", "recalibrate_batchnorm", "set_training"]


def set_training(model: nn.Module, mode: bool) -> None:
    """``model.train(mode)``, ignoring modules (torch.export) whose mode is fixed."""
    try:
        model.train(mode)
    except NotImplementedError:
        # torch.export GraphModules refuse train()/eval(): their mode was fixed at export.
        pass


def _running_stats_modules(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Split the modules with running statistics into eager ones and TorchScript ones."""
    eager: list[nn.Module] = []
    scripted: list[nn.Module] = []
    covered: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            if module.track_running_stats and module.running_mean is not None:
                eager.append(module)
                covered.add(name)
        elif (
            isinstance(module, torch.jit.ScriptModule)
            and type_name(module) in RUNNING_STATS_TYPE_NAMES
        ):
            buffers = dict(module.named_buffers(recurse=False))
            if buffers.get("running_mean") is not None:
                scripted.append(module)
                covered.add(name)
    for buffer_name, _ in model.named_buffers():
        owner, _, leaf = buffer_name.rpartition(".")
        if leaf == "running_mean" and owner not in covered:
            raise TypeError(
                f"the model has BatchNorm statistics ({buffer_name!r}) outside a BatchNorm "
                "module that can be put in train mode (a torch.export program fixes "
                "BatchNorm's mode when it is exported), so they cannot be re-estimated; use "
                "recovery 'none' or 'finetune', or export the model after recalibrating"
            )
    return eager, scripted


@contextmanager
def _preserved_modes(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        # Pre-order, so a parent's recursive train() is overridden by its children after.
        for module, mode in modes:
            set_training(module, mode)


def _first_tensor(batch: object) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"recalibrate_batchnorm expects batches of input tensors (or (x, y) pairs); got "
            f"{type(batch).__name__}"
        )
    return batch


def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> int:
    """Re-estimate BatchNorm running statistics of ``model`` in place (recovery ``bn``).

    Every BatchNorm layer (and InstanceNorm with ``track_running_stats``) has its running
    statistics reset and re-estimated as the cumulative average over the given batches
    (``momentum=None``): forward passes under ``torch.no_grad()`` with only those layers in
    train mode, so dropout and every other layer stay in eval mode. Each batch's mean and
    unbiased variance get equal weight. Afterwards every module's train/eval mode and every
    momentum is restored.

    TorchScript norm layers store ``momentum`` as a constant, so the same average is
    recovered from their buffers: before each batch the buffers are set to zero, which makes
    ``running = momentum * batch_stat`` after the forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The model to recalibrate (normally a pruned copy); moved to ``device`` in place.
    batches : iterable of torch.Tensor
        Input batches (calibration split). A ``(x, y)`` tuple or list uses ``x``.
    device : torch.device or str, default="cpu"
        Where to run the forward passes.
    max_batches : int, optional
        Stop after this many batches.

    Returns
    -------
    int
        Number of batches used; 0, without iterating ``batches``, when the model has no
        BatchNorm layer.

    Raises
    ------
    ValueError
        If ``max_batches < 1``, or ``batches`` is empty for a model with BatchNorm (the
        statistics are then left unchanged).
    TypeError
        If the model's BatchNorm statistics cannot be re-estimated (a ``torch.export``
        program), or a batch is not a tensor.
    """
    if max_batches is not None and (isinstance(max_batches, bool) or max_batches < 1):
        raise ValueError(f"max_batches must be None or an integer >= 1; got {max_batches!r}")
    eager, scripted = _running_stats_modules(model)
    if not eager and not scripted:
        return 0
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise ValueError(
            "recalibrate_batchnorm got no batches, so the BatchNorm statistics cannot be "
            "re-estimated; pass a non-empty calibration split"
        )

    model.to(device)
    momenta = [(module, module.momentum) for module in eager]
    with _preserved_modes(model), torch.no_grad():
        try:
            for module in eager:
                module.reset_running_stats()
                module.momentum = None
            set_training(model, False)
            for module in (*eager, *scripted):
                module.train(True)
            return _run_batches(model, first, iterator, scripted, device, max_batches)
        finally:
            for module, momentum in momenta:
                module.momentum = momentum


def _run_batches(
    model: nn.Module,
    first: object,
    iterator: Iterator[object],
    scripted: Sequence[nn.Module],
    device: torch.device | str,
    max_batches: int | None,
) -> int:
    """Forward the batches (norm layers in train mode); average the scripted layers' stats.

    Eager layers (``momentum=None``) average by themselves; each scripted layer's buffers
    are zeroed before a batch and read back after it, then set to the mean over batches.
    """
    # Float64 running sums so many small batches do not lose precision.
    sums = {
        id(m): [
            torch.zeros_like(m.running_mean, dtype=torch.float64),
            torch.zeros_like(m.running_var, dtype=torch.float64),
        ]
        for m in scripted
    }
    used = 0
    batch: object = first
    while True:
        for module in scripted:
            module.running_mean.zero_()
            module.running_var.zero_()
        model(_first_tensor(batch).to(device))
        used += 1
        for module in scripted:
            mean_sum, var_sum = sums[id(module)]
            factor = _scripted_momentum(module)
            mean_sum += module.running_mean.double() / factor
            var_sum += module.running_var.double() / factor
        if max_batches is not None and used >= max_batches:
            break
        batch = next(iterator, None)
        if batch is None:
            break
    for module in scripted:
        mean_sum, var_sum = sums[id(module)]
        module.running_mean.copy_(mean_sum / used)
        module.running_var.copy_(var_sum / used)
        tracked = dict(module.named_buffers(recurse=False)).get("num_batches_tracked")
        if tracked is not None:
            tracked.fill_(used)
    return used


def _scripted_momentum(module: nn.Module) -> float:
    momentum = getattr(module, "momentum", None)
    if momentum is None:
        # momentum=None baked in: the first update after zeroing copies the batch stat.
        return 1.0
    if momentum <= 0:
        raise TypeError(
            f"a TorchScript norm layer has momentum={momentum!r}, so its statistics never "
            "update and cannot be re-estimated"
        )
    return float(momentum)


def has_running_stats(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm-like running statistics that can be re-estimated."""
    eager, scripted = _running_stats_modules(model)
    return bool(eager or scripted)
