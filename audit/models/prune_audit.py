"""The prune-audit checkpoint format: ``save_checkpoint`` and its loader.

Owns: writing ``{"format": "prune-audit/1", "arch", "arch_kwargs", "state_dict", "outputs",
"task", "preprocess"}`` and reading it back (weights-only), validating every recorded field.
Must not build an architecture the registry does not allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audit.errors import CheckpointError
from audit.models.architectures import build_architecture
from audit.models.formats import ModelFile
from audit.models.loaded import CHECKPOINT_FORMAT, TASKS, LoadedModel, infer_num_outputs
from audit.models.state_dict import clean_keys, load_weights
from audit.pruning.reparam import fold_pruning_reparametrisations


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


def is_prune_audit(file: ModelFile) -> bool:
    """Whether the file is a dict tagged ``format: prune-audit/...``."""
    obj = file.torch_object
    if not isinstance(obj, dict) or "format" not in obj:
        return False
    fmt = obj["format"]
    # A 'format' key of the wrong type next to 'arch' is a damaged prune-audit file, not a
    # training checkpoint that happens to have a 'format' entry.
    return (isinstance(fmt, str) and fmt.startswith("prune-audit/")) or "arch" in obj


def from_prune_audit(
    obj: dict[str, Any], path: Path, *, arch: str | None, trust_checkpoint: bool
) -> LoadedModel:
    """Rebuild a model from an ``audit.save_checkpoint`` file."""

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(
            f"The prune-audit checkpoint {str(path)!r} has an invalid {key!r} entry ({expected}, "
            f"got {type(obj.get(key)).__name__}: {str(obj.get(key))[:80]!r}); re-save it with "
            "audit.save_checkpoint(...)."
        )

    fmt = obj.get("format")
    if not isinstance(fmt, str):
        raise bad("format", f"the string {CHECKPOINT_FORMAT!r}")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a prune-audit checkpoint of format {fmt[:40]!r}, but this version "
            f"reads {CHECKPOINT_FORMAT!r}; upgrade prune-audit or re-save the checkpoint."
        )
    recorded = obj.get("arch")
    if not isinstance(recorded, str) or not recorded:
        raise bad("arch", "a non-empty string such as 'torchvision:resnet18'")
    state_dict = obj.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise bad("state_dict", "a dict of parameter name -> tensor")
    outputs = obj.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)
    ):
        raise bad("outputs", "a list of output names")
    task = obj.get("task")
    if task is not None and task not in TASKS:
        raise bad("task", f"one of {', '.join(TASKS)}")
    arch_kwargs = obj.get("arch_kwargs") or {}
    if not isinstance(arch_kwargs, dict) or not all(isinstance(k, str) for k in arch_kwargs):
        raise bad("arch_kwargs", "a dict of keyword arguments")
    preprocess = _preprocess(obj.get("preprocess"), path)

    state_dict = fold_pruning_reparametrisations(
        clean_keys(state_dict, path), source=repr(str(path))
    )
    chosen = arch or recorded
    num_outputs = len(outputs) if outputs else None
    if num_outputs is None:
        found = infer_num_outputs(state_dict)
        if found is None:
            raise bad("outputs", "the output names (no classifier weight to count them from)")
        num_outputs = found[0]
    # A name read from the file resolves only through the architecture registry, even with
    # --trust-checkpoint (which vouches for pickles, not for calling whatever the file names);
    # --arch is the user's own choice and may import their factory.
    if arch is not None:
        described = f"--arch {arch}"
    else:
        described = f"The 'arch' entry of checkpoint {str(path)!r}"
    model = build_architecture(
        chosen, num_outputs, arch_kwargs=arch_kwargs, allow_import=arch is not None,
        described=described,
    )  # fmt: skip
    load_weights(model, state_dict, path, chosen)
    return LoadedModel(
        model=model.eval(),
        format="prune-audit",
        arch=chosen,
        arch_kwargs=dict(arch_kwargs),
        outputs=list(outputs) if outputs else None,
        num_outputs=num_outputs,
        task=task,
        preprocess=preprocess,
    )


def _preprocess(raw: Any, path: Path) -> dict[str, Any]:
    """Validate recorded preprocessing; keep its ``image_size``/``mean``/``std``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"The 'preprocess' entry of {str(path)!r} is a {type(raw).__name__}, expected a dict "
            "like {'image_size': 224, 'mean': [...], 'std': [...]}; re-save the checkpoint."
        )
    out: dict[str, Any] = {}
    size = raw.get("image_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CheckpointError(
                f"preprocess['image_size'] in {str(path)!r} is {size!r}; expected a positive "
                "integer. Re-save the checkpoint or pass --image-size."
            )
        out["image_size"] = int(size)
    for key in ("mean", "std"):
        value = raw.get(key)
        if value is None:
            continue
        ok = (
            isinstance(value, (list, tuple))
            and len(value) in (1, 3)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
            and (key == "mean" or all(x > 0 for x in value))
        )
        if not ok:
            raise CheckpointError(
                f"preprocess[{key!r}] in {str(path)!r} is {value!r}; expected 3 numbers (one per "
                f"RGB channel{', all positive' if key == 'std' else ''}). Re-save the checkpoint "
                f"or pass --{key}."
            )
        out[key] = [float(x) for x in value]
    return out
