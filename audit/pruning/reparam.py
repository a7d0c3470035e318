"""Reading pruned checkpoints: fold pruning reparametrisations back into plain weights.

Owns: recognising ``torch.nn.utils.prune`` (``X.weight_orig`` + ``X.weight_mask``) and
``torch.ao.pruning`` (``X.parametrizations.weight.original`` + a mask) state_dict entries
and turning each pair into ``X.weight = original`` with the masked-out entries set to 0.

Must not: load files or build models (``audit.model_io`` does), touch devices, or print.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from audit.errors import CheckpointError

__all__ = ["fold_pruning_reparametrisations", "sparsifier_masks"]

_NN_PRUNE = re.compile(r"^(?P<owner>(?:.*\.)?)(?P<name>[^.]+)_orig$")
_AO_ORIGINAL = re.compile(r"^(?P<owner>(?:.*\.)?)parametrizations\.(?P<name>[^.]+)\.original$")
_AO_MASK = re.compile(r"^(?P<owner>(?:.*\.)?)parametrizations\.(?P<name>[^.]+)\.0\.mask$")


def fold_pruning_reparametrisations(
    state: Mapping[str, Any], *, masks: Mapping[str, torch.Tensor] | None = None, source: str
) -> dict[str, Any]:
    """Turn pruning reparametrisations back into plain weights (``weight = orig * mask``).

    ``torch.nn.utils.prune`` leaves ``X.weight_orig`` and ``X.weight_mask`` until
    ``prune.remove``; ``torch.ao.pruning`` leaves ``X.parametrizations.weight.original``
    until ``squash_mask``, its mask living in the sparsifier's state (``masks``, keyed by
    ``X.weight``) or, when saved with the model, in ``X.parametrizations.weight.0.mask``.
    Masked-out weights become exactly 0 (``masked_fill``, so ``0 * inf`` cannot leak NaN).
    Other keys pass through unchanged.

    Raises
    ------
    CheckpointError
        If a reparametrised weight has no mask (an ao model saved without its
        sparsifier state would otherwise be audited dense), or a mask's shape differs.
    """
    out: dict[str, Any] = {}
    ao_masks = {}
    for key, value in state.items():
        if m := _AO_MASK.match(key):
            ao_masks[f"{m['owner']}{m['name']}"] = value
    for key, value in state.items():
        if _AO_MASK.match(key):
            continue
        if (m := _AO_ORIGINAL.match(key)) is not None:
            target = f"{m['owner']}{m['name']}"
            mask = ao_masks.get(target)
            if mask is None and masks is not None:
                mask = masks.get(target)
            if mask is None:
                raise CheckpointError(
                    f"{source} holds {key!r}, a torch.ao.pruning parametrisation, but not its "
                    "mask (the sparsifier keeps masks out of the model's state_dict), so the "
                    "weights would be audited unpruned. Call sparsifier.squash_mask() before "
                    "saving the model, or save the masks with it: {'state_dict': "
                    "model.state_dict(), 'sparsifier': {'state': "
                    "dict(sparsifier.state_dict()['state'])}} (a plain dict: the sparsifier's "
                    "own defaultdict cannot be read without running code)."
                )
            out[target] = _masked(value, mask, target, source)
            continue
        if (m := _NN_PRUNE.match(key)) is not None:
            target = f"{m['owner']}{m['name']}"
            mask_key = f"{target}_mask"
            if mask_key in state:
                out[target] = _masked(value, state[mask_key], target, source)
                continue
        if key.endswith("_mask") and f"{key[: -len('_mask')]}_orig" in state:
            continue
        out[key] = value
    return out


def _masked(weight: torch.Tensor, mask: torch.Tensor, name: str, source: str) -> torch.Tensor:
    if tuple(mask.shape) != tuple(weight.shape):
        raise CheckpointError(
            f"{source}: the pruning mask of {name!r} has shape {tuple(mask.shape)} but the "
            f"weight has shape {tuple(weight.shape)}; the file is inconsistent."
        )
    return weight.masked_fill(mask == 0, 0)


def sparsifier_masks(obj: Mapping[Any, Any]) -> dict[str, torch.Tensor] | None:
    """Masks of a ``torch.ao.pruning`` sparsifier state saved next to the weights.

    ``{"state_dict": ..., "sparsifier": {"state": dict(sparsifier.state_dict()["state"])}}``:
    the sparsifier's ``state`` maps each ``tensor_fqn`` (``"layer1.0.conv1.weight"``) to
    ``{"mask": ...}``.
    """
    state = obj.get("sparsifier")
    state = state.get("state") if isinstance(state, Mapping) else None
    if not isinstance(state, Mapping):
        return None
    return {
        str(fqn): entry["mask"]
        for fqn, entry in state.items()
        if isinstance(entry, Mapping) and isinstance(entry.get("mask"), torch.Tensor)
    }
