"""Which weights pruning may touch, and independent copies of a model to prune.

Owns: the prunable-weight scope (Conv/Linear weights, the classifier included; never
biases, norms or embeddings; ``--exclude`` patterns), the TorchScript/fx fallbacks for
finding them, and deep copies that share no storage with the loaded model.

Must not: compute masks, train, choose a device, or print.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import numbers
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "RUNNING_STATS_TYPE_NAMES",
    "check_fraction",
    "copy_module",
    "prunable_parameters",
    "type_name",
]

# Type names as TorchScript records them in ``original_name`` (scripted or traced modules
# are all ``RecursiveScriptModule``, so ``isinstance`` cannot tell a Conv2d from a ReLU).
_PRUNABLE_TYPE_NAMES = frozenset(
    {
        "Conv1d",
        "Conv2d",
        "Conv3d",
        "ConvTranspose1d",
        "ConvTranspose2d",
        "ConvTranspose3d",
        "LazyConv1d",
        "LazyConv2d",
        "LazyConv3d",
        "LazyConvTranspose1d",
        "LazyConvTranspose2d",
        "LazyConvTranspose3d",
        "Linear",
        "LazyLinear",
        "NonDynamicallyQuantizableLinear",
    }
)
RUNNING_STATS_TYPE_NAMES = frozenset(
    {
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "SyncBatchNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
    }
)
_FALLBACK_WEIGHT_NDIMS = frozenset({2, 3, 4, 5})


def check_fraction(value: object, name: str) -> float:
    """Return ``value`` as a float in ``[0, 1)``, or raise naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number in [0, 1) (the fraction of prunable weights set to "
            f"zero); got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    # Written so that NaN fails too.
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (the fraction of prunable weights set to zero); "
            f"got {value!r}. Use e.g. 0.9 for 90% zeros; 1.0 would remove every weight."
        )
    return value


def type_name(module: nn.Module | None) -> str:
    """The layer type of ``module``, as TorchScript records it for scripted modules."""
    if module is None:
        return ""
    return str(getattr(module, "original_name", None) or type(module).__name__)


def _is_typed_prunable(module: nn.Module) -> bool:
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return True
    return isinstance(module, torch.jit.ScriptModule) and type_name(module) in (
        _PRUNABLE_TYPE_NAMES
    )


def _is_embedding_or_norm(module: nn.Module | None) -> bool:
    if isinstance(
        module,
        (
            nn.Embedding,
            nn.EmbeddingBag,
            nn.modules.batchnorm._NormBase,
            nn.LayerNorm,
            nn.GroupNorm,
            nn.LocalResponseNorm,
            nn.RMSNorm,
        ),
    ):
        return True
    name = type_name(module).lower()
    return "embedding" in name or "norm" in name


def _graph_consumers(model: nn.Module) -> dict[str, set[str]]:
    """Map each ``get_attr`` target of an fx graph to the names of the ops that read it."""
    graph = getattr(model, "graph", None)
    nodes = getattr(graph, "nodes", None)
    if nodes is None:
        return {}
    consumers: dict[str, set[str]] = {}
    for node in nodes:
        if getattr(node, "op", None) == "get_attr":
            consumers.setdefault(str(node.target), set()).update(
                str(getattr(user, "target", "")).lower() for user in node.users
            )
    return consumers


def _fallback_prunable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    owners = dict(model.named_modules())
    consumers = _graph_consumers(model)
    found = []
    for name, param in model.named_parameters():
        if not name.endswith("weight") or param.ndim not in _FALLBACK_WEIGHT_NDIMS:
            continue
        if _is_embedding_or_norm(owners.get(name.rpartition(".")[0])):
            continue
        ops = consumers.get(name)
        if ops and all("embedding" in op or "norm" in op for op in ops):
            continue
        found.append((name, param))
    return found


def prunable_parameters(
    model: nn.Module, *, exclude: Sequence[str] = ()
) -> list[tuple[str, nn.Parameter]]:
    """List the weights that magnitude pruning may zero, in model order.

    Prunable are the ``weight`` parameters of every ``Conv1d/2d/3d``, ``ConvTranspose*`` and
    ``Linear`` module, the classifier included (as in the paper). Biases, norm layers and
    embeddings are never pruned. TorchScript modules are recognised by the type name they
    record (``original_name``).

    When the model has no such typed module at all (a ``torch.export`` GraphModule, whose
    submodules are plain ``Module`` containers, or a model built from raw parameters), a
    heuristic is used instead: every parameter whose name ends in ``weight`` with 2–5
    dimensions (a matrix or a convolution kernel; norm weights are 1-D), unless its owning
    module's type name contains "Embedding" or "Norm", or (for an fx graph) every op that
    reads it is an embedding or norm op.

    Parameters
    ----------
    model : torch.nn.Module
        Eager, TorchScript or fx/``torch.export`` module.
    exclude : sequence of str, default=()
        ``fnmatch`` patterns on the full parameter name (e.g. ``"fc.*"``,
        ``"*.downsample.*"``); matching weights stay dense.

    Returns
    -------
    list of (str, torch.nn.Parameter)
        Full parameter name and the parameter itself. A weight shared by several modules
        is listed once; one shared with an embedding or norm module is not listed.

    Raises
    ------
    ValueError
        If an ``exclude`` pattern matches no prunable weight (most likely a typo).
    """
    if isinstance(exclude, str):
        raise TypeError(
            f"exclude must be a sequence of patterns, not a single string; got {exclude!r}. "
            f"Pass ({exclude!r},) instead."
        )
    excluded_owner_ids = {
        id(p)
        for m in model.modules()
        if _is_embedding_or_norm(m)
        for p in m.parameters(recurse=False)
    }
    found: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if not _is_typed_prunable(module):
            continue
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        if weight is None or id(weight) in seen or id(weight) in excluded_owner_ids:
            continue
        seen.add(id(weight))
        found.append((f"{module_name}.weight" if module_name else "weight", weight))
    if not found:
        found = _fallback_prunable(model)

    patterns = tuple(exclude)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in found):
            examples = ", ".join(name for name, _ in found[:5]) or "none"
            raise ValueError(
                f"exclude pattern {pattern!r} matches no prunable weight of the model; "
                f"patterns are fnmatch patterns on full parameter names, e.g. 'fc.*'. "
                f"Prunable weights include: {examples}"
            )
    return [
        (name, param)
        for name, param in found
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    ]


def copy_module(model: nn.Module) -> nn.Module:
    """Deep-copy ``model`` into independent leaf parameters that share no storage with it."""
    try:
        clone: nn.Module | None = copy.deepcopy(model)
    except Exception:
        if not isinstance(model, torch.jit.ScriptModule):
            raise
        clone = None
    if clone is not None and _is_independent_copy(model, clone):
        return clone
    if not isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"copy.deepcopy of a {type(model).__name__} shares tensors or autograd history "
            "with the original, so pruning the copy would touch the loaded model"
        )
    # deepcopy of a ScriptModule clones its parameters *through autograd* (non-leaf tensors
    # whose gradients flow back into the original), so fall back to an archive round-trip,
    # which always yields fresh leaf parameters.
    first = next(iter(model.parameters()), None)
    buffer = io.BytesIO()
    torch.jit.save(model, buffer)
    buffer.seek(0)
    return torch.jit.load(
        buffer, map_location=first.device if first is not None else torch.device("cpu")
    )


def _is_independent_copy(original: nn.Module, clone: nn.Module) -> bool:
    def pointers(m: nn.Module) -> set[int]:
        tensors = [*m.parameters(), *m.buffers()]
        return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}

    leaves = all(p.is_leaf for p in clone.parameters())
    return leaves and not pointers(original) & pointers(clone)
