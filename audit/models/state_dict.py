"""Loaders for weights without a model: state_dicts, training wrappers, safetensors, pickles.

Owns: finding the state_dict inside a checkpoint, stripping ``module.``/``_orig_mod.``
prefixes, folding pruning reparametrisations, loading the weights into an architecture named
by ``--arch``, safetensors files, and the pickled-module format (only with
``--trust-checkpoint``). Must not build an architecture outside the registry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from audit.errors import CheckpointError
from audit.models.architectures import EXAMPLE_ARCH, build_architecture
from audit.models.formats import ModelFile
from audit.models.loaded import (
    WRAPPER_KEYS,
    LoadedModel,
    infer_num_outputs,
    loaded_module,
)
from audit.pruning.reparam import fold_pruning_reparametrisations, sparsifier_masks


def is_pickled_module(file: ModelFile) -> bool:
    """Whether the file holds a whole ``nn.Module`` (bare or under a wrapper key)."""
    obj = file.torch_object
    if isinstance(obj, torch.nn.Module):
        return True
    return (
        file.pickled
        and isinstance(obj, dict)
        and any(isinstance(obj.get(k), torch.nn.Module) for k in WRAPPER_KEYS)
    )


def load_pickled_module(file: ModelFile) -> LoadedModel:
    """The pickled module (read only with ``--trust-checkpoint``), on CPU in eval mode."""
    obj = file.torch_object
    if isinstance(obj, torch.nn.Module):
        return loaded_module(obj, "pickle")
    key = next(k for k in WRAPPER_KEYS if isinstance(obj.get(k), torch.nn.Module))
    return loaded_module(obj[key], "pickle")


def is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON object."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (tensors only, no code) as a state_dict."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"Cannot read {str(path)!r} as a safetensors file ({e}); it is truncated or "
            "corrupt. Re-save it with safetensors.torch.save_file(model.state_dict(), path)."
        ) from e


def from_state_dict(obj: dict[Any, Any], path: Path, *, arch: str | None) -> LoadedModel:
    """A raw or wrapped state_dict: weights without an architecture, which ``--arch`` names."""
    state_dict = _find_state_dict(obj)
    if state_dict is None:
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointError(
            f"{str(path)!r} holds a dict without model weights (keys: {keys}); expected a "
            "state_dict (parameter name -> tensor) or a dict holding one under 'state_dict', "
            "'model', 'model_ema', 'ema' or 'net'. Save model.state_dict() and pass --arch."
        )
    state_dict = fold_pruning_reparametrisations(
        clean_keys(state_dict, path), masks=sparsifier_masks(obj), source=repr(str(path))
    )
    if arch is None:
        keys = ", ".join(repr(k) for k in list(state_dict)[:6])
        raise CheckpointError(
            f"{str(path)!r} is a raw state_dict ({len(state_dict)} tensors; keys {keys}, ...), "
            "which holds weights but not the architecture; pass --arch to say how to build the "
            f"model, e.g. {EXAMPLE_ARCH} or --arch mypkg.models:build_model (a factory called "
            "with num_outputs=N), or save it with audit.save_checkpoint(...)."
        )
    found = infer_num_outputs(state_dict)
    if found is None:
        raise CheckpointError(
            f"Cannot tell how many outputs the state_dict in {str(path)!r} has: no 2-D classifier "
            "weight (fc/classifier/head/last Linear) was found. Save it with audit."
            "save_checkpoint(..., outputs=[...]) so the output count is recorded."
        )
    # --arch is the user's own choice of code, so a package.module:factory may be imported.
    model = build_architecture(arch, found[0], allow_import=True, described=f"--arch {arch}")
    load_weights(model, state_dict, path, arch)
    return LoadedModel(model=model.eval(), format="state_dict", arch=arch, num_outputs=found[0])


def _find_state_dict(obj: dict[Any, Any], depth: int = 0) -> dict[str, torch.Tensor] | None:
    """Return the tensors of a state_dict, or of one nested under a wrapper key.

    A state_dict is a dict of str → tensor; ``_extra_state`` entries (modules' non-tensor
    extra state) are allowed beside them, as ``nn.Module.state_dict`` writes them.
    """
    if (
        obj
        and all(
            isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state"))
            for k, v in obj.items()
        )
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        return obj
    if depth < 2:
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict):
                found = _find_state_dict(inner, depth + 1)
                if found is not None:
                    return found
    return None


def clean_keys(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Drop ``_orig_mod.`` (torch.compile) components and a ``module.`` prefix shared by all keys.

    ``module.`` is stripped only when every key has it (DataParallel/DDP), so a real submodule
    named ``module`` survives; ``_orig_mod`` never names a real submodule.
    """
    cleaned = {re.sub(r"(^|\.)_orig_mod\.", r"\1", k): v for k, v in state_dict.items()}
    while cleaned and all(k.startswith("module.") for k in cleaned):
        cleaned = {k[len("module.") :]: v for k, v in cleaned.items()}
    if len(cleaned) != len(state_dict):
        raise CheckpointError(
            f"The state_dict in {str(path)!r} has keys that collide once the 'module.'/"
            "'_orig_mod.' wrapper prefixes are removed; re-save model.state_dict() of the "
            "unwrapped model."
        )
    return cleaned


def load_weights(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: Path, arch: str
) -> None:
    """``load_state_dict(strict=True)`` with a message listing what does not match."""
    own = model.state_dict()
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        # load_state_dict would stop at the shapes; list the key differences too.
        missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state_dict if k not in own]
    else:
        result = model.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if shapes or missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
        if shapes:
            parts.append(
                f"{len(shapes)} with other shapes (file vs model: {'; '.join(shapes[:3])})"
            )
        raise CheckpointError(
            f"The weights in {str(path)!r} do not fit architecture {arch!r}: "
            f"{'; '.join(parts)}. Check that --arch (and its arguments) is the architecture the "
            "weights were trained with."
        )
