"""Structured (channel/filter) pruning through Torch-Pruning: a physically smaller model.

Owns: finding the channel pruning ratio that removes the requested fraction of the prunable
weights, Torch-Pruning's dependency graph (a removed filter also removes the BatchNorm
channel after it, the input channels that read it and the residual partners it is summed
with), keeping the classifier's outputs, and counting parameters and MACs before and after.

Torch-Pruning (``pip install 'prune-audit[structured]'``) is imported only here, on first use.
Importance is the group L2 norm of each channel's weights (Torch-Pruning's
``GroupMagnitudeImportance``), the same magnitude criterion as the unstructured methods.

Must not: train, choose a device, or print.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from audit.pruning.masks import LayerSparsity, PruneStats
from audit.pruning.scope import check_fraction, prunable_parameters

__all__ = ["count_macs", "prune_channels"]

# Reductions are searched to within this many points of the request (the acceptance bound
# is 2 points; channel counts are integers, so exact hits are rarely possible).
_TOLERANCE = 0.005
_MAX_TRIES = 12


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise ValueError(
            "--method structured needs Torch-Pruning, which is not installed; install it with "
            "pip install 'prune-audit[structured]' (or pip install torch-pruning)"
        ) from None
    return torch_pruning


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of a single sample (Conv and Linear only).

    Counted from each Conv/Linear module's output shape: a convolution costs
    ``out.numel() * (in_channels / groups) * prod(kernel)``, a linear layer
    ``out.numel() * in_features``.
    """
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        per_output = (
            module.in_features
            if isinstance(module, nn.Linear)
            else module.in_channels // module.groups * int(torch.tensor(module.kernel_size).prod())
        )
        total += int(output[:1].numel()) * int(per_output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(example_input[:1])
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


def _output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module | None:
    """The last Conv/Linear module to run: it produces the outputs, which must all stay."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    return order[-1] if order else None


def _prunable_total(model: nn.Module) -> int:
    return sum(p.numel() for _, p in prunable_parameters(model))


def _prune_at(
    model: nn.Module, ratio: float, ignored: list[str], example_input: torch.Tensor
) -> nn.Module:
    tp = _torch_pruning()
    net = _structured_copy(model)
    modules = dict(net.named_modules())
    pruner = tp.pruner.BasePruner(
        net,
        example_input[:1],
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[modules[name] for name in ignored],
        global_pruning=False,
    )
    pruner.step()
    return net


def _structured_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    if not isinstance(clone, nn.Module) or isinstance(clone, torch.jit.ScriptModule):
        raise TypeError("structured pruning needs an eager nn.Module")
    return clone


def prune_channels(
    model: nn.Module,
    sparsity: float,
    *,
    exclude: Sequence[str] = (),
    example_input: torch.Tensor,
) -> tuple[nn.Module, PruneStats]:
    """Return a copy of ``model`` with whole channels removed, and its statistics.

    The same channel ratio is removed from every prunable layer (Torch-Pruning's local
    pruning, dependencies respected); the ratio is searched by bisection until the fraction
    of prunable weights removed is within half a point of ``sparsity`` (else the closest of
    twelve tries, stopping early once the bracket is narrower than 0.001, as channel counts
    are integers). The classifier (the last Conv/Linear layer to run) keeps all its outputs,
    and layers whose weight matches an ``exclude`` pattern keep their output channels.
    BatchNorm layers lose exactly the channels their convolution loses, so their statistics
    stay consistent.

    Parameters
    ----------
    model : torch.nn.Module
        The dense eager model; never modified.
    sparsity : float
        Fraction of the prunable weights to remove, in ``[0, 1)``.
    exclude : sequence of str, default=()
        ``fnmatch`` patterns of weights whose layers keep their output channels.
    example_input : torch.Tensor
        An input batch on the model's device, used to trace the model.

    Returns
    -------
    pruned : torch.nn.Module
        The smaller copy.
    stats : PruneStats
        ``achieved`` is the fraction of prunable weights removed; per layer, ``numel`` is the
        dense layer's weight count and ``zeros`` the weights removed from it; the parameter
        and MAC counts before and after are in ``stats.structure``.

    Raises
    ------
    TypeError
        If ``model`` is a TorchScript or ``torch.export`` module (no module graph to edit).
    ValueError
        If Torch-Pruning is not installed or as :func:`prunable_parameters`.
    """
    sparsity = check_fraction(sparsity, "sparsity")
    if isinstance(model, torch.jit.ScriptModule) or isinstance(model, torch.fx.GraphModule):
        raise TypeError(
            f"structured pruning edits the module graph, which a {type(model).__name__} "
            "does not expose; load the model as a prune-audit checkpoint, a state_dict with "
            "--arch, or a pickled module"
        )
    dense_params = dict(prunable_parameters(model))
    ignored = _ignored_layers(model, dense_params, exclude, example_input)
    achieved, net = _search_ratio(model, sparsity, ignored, example_input)
    after = dict(net.named_parameters())
    layers = tuple(
        LayerSparsity(
            name=name,
            numel=int(param.numel()),
            zeros=int(param.numel() - (after[name].numel() if name in after else 0)),
        )
        for name, param in dense_params.items()
    )
    structure = {
        "n_parameters_dense": int(sum(p.numel() for p in model.parameters())),
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "macs_dense": count_macs(model, example_input),
        "macs": count_macs(net, example_input),
    }
    return net, PruneStats(
        requested=sparsity,
        achieved=float(achieved),
        method="structured",
        layers=layers,
        structure=structure,
    )


def _ignored_layers(
    model: nn.Module,
    dense_params: dict[str, nn.Parameter],
    exclude: Sequence[str],
    example_input: torch.Tensor,
) -> list[str]:
    """Names of the layers that keep their output channels: excluded ones and the classifier."""
    kept = prunable_parameters(model, exclude=exclude)
    kept_names = {name for name, _ in kept}
    owners = {f"{name}.weight" if name else "weight": name for name, _ in model.named_modules()}
    output = _output_layer(model, example_input)
    ignored = [owners[name] for name in dense_params if name not in kept_names]
    output_name = next((n for n, m in model.named_modules() if m is output), None)
    if output_name is not None and output_name not in ignored:
        ignored.append(output_name)
    return ignored


def _search_ratio(
    model: nn.Module, sparsity: float, ignored: list[str], example_input: torch.Tensor
) -> tuple[float, nn.Module]:
    """Bisect the channel ratio; return the closest (achieved sparsity, pruned copy)."""
    total = _prunable_total(model)
    lo, hi = 0.0, 1.0
    best: tuple[float, nn.Module] | None = None
    # Removing a fraction r of channels on both sides of a layer leaves (1 - r)^2 of it.
    ratio = 1.0 - (1.0 - sparsity) ** 0.5
    for _ in range(_MAX_TRIES):
        net = (
            _prune_at(model, ratio, ignored, example_input)
            if ratio > 0
            else _structured_copy(model)
        )
        achieved = 1.0 - _prunable_total(net) / total
        if best is None or abs(achieved - sparsity) < abs(best[0] - sparsity):
            best = (achieved, net)
        if abs(achieved - sparsity) <= _TOLERANCE:
            break
        lo, hi = (ratio, hi) if achieved < sparsity else (lo, ratio)
        if hi - lo < 1e-3:  # integer channel counts: no ratio in between changes the model
            break
        ratio = (lo + hi) / 2
    assert best is not None
    return best
