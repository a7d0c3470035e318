"""Detect and load checkpoint formats safely; write prune-audit checkpoints (the entry point).

Owns: :func:`load_model` (check the path, try each registered format's ``detect`` in order,
load with the first that says yes) and the registration of the built-in formats in
:func:`_register_builtin_formats` (:mod:`audit.models.formats`). The loaders live in
:mod:`audit.models`, one module per format -- :mod:`~audit.models.prune_audit` (and
``save_checkpoint``), :mod:`~audit.models.state_dict` (raw and wrapped state_dicts,
safetensors, pickled modules), :mod:`~audit.models.torchscript`, :mod:`~audit.models.export`
with the archive scanner :mod:`~audit.models.pt2_scan` -- over the weights-only reader
:mod:`~audit.models.pickles` and :class:`~audit.models.loaded.LoadedModel`; this module
re-exports the public names so ``from audit.model_io import ...`` keeps working.
Architectures are built through the registry of :mod:`audit.models.architectures`. Must not
touch devices (everything loads on CPU), widen ``torch.serialization``'s allowlist of
globals, or run code named by a file: a factory named in a checkpoint is only ever a
registered one (even with ``--trust-checkpoint``), ``package.module:factory`` is imported
only when the user typed it with ``--arch``, and pickle callables or exported-program
payloads run only with ``--trust-checkpoint``.

Loading rules
-------------
* Plain ``torch.save`` files are read with ``torch.load(weights_only=True)``; if that
  refuses the file (it holds pickled objects, e.g. a whole ``nn.Module``), loading stops with
  a ``CheckpointError`` unless ``trust_checkpoint`` is set.
* ``torch.export.load`` is *not* safe on untrusted files: in torch 2.15 it unpickles
  payloads marked ``use_pickle`` and opaque/custom objects, retries sample inputs with
  ``weights_only=False``, evaluates symbolic-shape strings with ``sympy.sympify``
  (``eval``), resolves graph targets by name from ``torch`` and loads AOTInductor shared
  libraries. So an archive is first scanned
  (:func:`audit.models.pt2_scan.pt2_unsafe_reasons`) and anything outside a plain tensor
  program is refused without ``trust_checkpoint``; the module is built with
  ``ep.module(check_guards=False)``, which does not ``exec`` the archive's guard code.
  Programs exported in training mode are refused (their outputs depend on the batch); the
  GraphModule's ``train()``/``eval()`` only set flags (the graph fixed eval behaviour), and
  a program with a fixed batch size is wrapped in :class:`ExportedProgramModule`.
* TorchScript archives are loaded with ``torch.jit.load``: their code is TorchScript, which
  cannot call Python, and their pickles go through TorchScript's restricted unpickler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audit.errors import CheckpointError
from audit.models.architectures import build_architecture
from audit.models.export import ExportedProgramModule, is_export, load_export
from audit.models.formats import CheckpointFormat, ModelFile, checkpoint_formats, register_format
from audit.models.loaded import (
    CHECKPOINT_FORMAT,
    CLASSIFIER_NAMES,
    TASKS,
    WRAPPER_KEYS,
    Format,
    LoadedModel,
    Task,
    infer_num_outputs,
)
from audit.models.pickles import WEIGHTS_ONLY_EXTRA_GLOBALS, torch_load
from audit.models.prune_audit import from_prune_audit, is_prune_audit, save_checkpoint
from audit.models.state_dict import (
    from_state_dict,
    is_pickled_module,
    is_safetensors,
    load_pickled_module,
    load_safetensors,
)
from audit.models.torchscript import is_torchscript, load_torchscript


def load_model(
    path: str | Path, *, arch: str | None = None, trust_checkpoint: bool = False
) -> LoadedModel:
    """Load a model file of any supported format, safely, on CPU, in eval mode.

    Parameters
    ----------
    path : str or Path
        The model file.
    arch : str, optional
        ``--arch``: ``torchvision:NAME`` or ``package.module:factory``. Required for raw
        state_dicts; for prune-audit checkpoints it overrides (and confirms) the recorded one.
    trust_checkpoint : bool, default False
        ``--trust-checkpoint``: allow formats whose loading executes code from the file
        (pickled modules, exported programs with pickled payloads, factories named inside a
        checkpoint).

    Returns
    -------
    LoadedModel
        The module and what the file recorded about it.

    Raises
    ------
    CheckpointError
        Missing, unreadable or unrecognised file; a file that needs code execution without
        ``trust_checkpoint``; a state_dict without ``--arch``; weights that do not fit the
        architecture. The message names the file and the fix.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"Model file {str(p)!r} does not exist; pass the path of a checkpoint as the first "
            "argument of `prune-audit check MODEL DATA`."
        )
    if not p.is_file():
        raise CheckpointError(
            f"Model path {str(p)!r} is a directory, not a checkpoint file; pass the .pt/.pt2 "
            "file itself."
        )
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise CheckpointError(
            f"Cannot read model file {str(p)!r} ({e.strerror or e}); check its permissions."
        ) from e
    if p.stat().st_size == 0:
        raise CheckpointError(
            f"Model file {str(p)!r} is empty (0 bytes): an interrupted copy or save? Re-save the "
            "model (audit.save_checkpoint, torch.save(model.state_dict()), torch.jit.save or "
            "torch.export.save) or copy it again."
        )
    file = ModelFile(p, arch=arch, trust_checkpoint=trust_checkpoint, read_torch=torch_load)
    for fmt in checkpoint_formats():
        if fmt.detect(file):
            return fmt.load(file)
    obj = file.torch_object
    raise CheckpointError(
        f"{str(p)!r} holds a {type(obj).__name__}, not a model: expected a state_dict, a "
        "dict wrapping one (state_dict/model/model_ema/ema/net), or an audit."
        "save_checkpoint file (formats read: "
        f"{'; '.join(f.summary for f in checkpoint_formats())})."
    )


def _register_builtin_formats() -> None:
    """The formats of SPEC §3.1, in detection order (archives by their entries first)."""
    for fmt in (
        CheckpointFormat(
            "safetensors", lambda f: not f.is_zip and is_safetensors(f.path),
            lambda f: from_state_dict(load_safetensors(f.path), f.path, arch=f.arch),
            "safetensors state_dict (safetensors.torch.save_file, with --arch)",
        ),
        CheckpointFormat(
            "torchscript", is_torchscript, lambda f: load_torchscript(f.path),
            "TorchScript archive (torch.jit.save)",
        ),
        CheckpointFormat(
            "export", is_export,
            lambda f: load_export(f.path, trust_checkpoint=f.trust_checkpoint),
            "torch.export program (torch.export.save, .pt2)",
        ),
        CheckpointFormat(
            "prune-audit", is_prune_audit,
            lambda f: from_prune_audit(
                f.torch_object, f.path, arch=f.arch, trust_checkpoint=f.trust_checkpoint
            ),
            "prune-audit checkpoint (audit.save_checkpoint)",
        ),
        CheckpointFormat(
            "pickle", is_pickled_module, load_pickled_module,
            "pickled nn.Module (torch.save(model), only with --trust-checkpoint)",
        ),
        CheckpointFormat(
            "state_dict", lambda f: isinstance(f.torch_object, dict),
            lambda f: from_state_dict(f.torch_object, f.path, arch=f.arch),
            "state_dict or a training checkpoint wrapping one (with --arch)",
        ),
    ):  # fmt: skip
        register_format(fmt)


def build_arch(
    arch: str,
    num_outputs: int,
    *,
    arch_kwargs: dict[str, Any] | None = None,
    allow_import: bool,
) -> torch.nn.Module:
    """Build an untrained model from an architecture string (see the architecture registry).

    Parameters
    ----------
    arch : str
        A registered name (``torchvision:NAME``, ``audit.demo:small_cnn``) or, with
        ``allow_import``, ``package.module:factory`` (called as ``factory(num_outputs=N,
        **arch_kwargs)``).
    num_outputs : int
        Width of the classifier.
    arch_kwargs : dict, optional
        Extra keyword arguments: plain data, checked against the factory's parameters.
    allow_import : bool
        True only for a string the user typed (``--arch``): importing a module runs its code.

    Returns
    -------
    torch.nn.Module
        The freshly built model (random weights, never downloaded).

    Raises
    ------
    CheckpointError
        See :func:`audit.models.architectures.build_architecture`.
    """
    return build_architecture(arch, num_outputs, arch_kwargs=arch_kwargs, allow_import=allow_import)


_register_builtin_formats()

__all__ = [
    "CHECKPOINT_FORMAT",
    "CLASSIFIER_NAMES",
    "TASKS",
    "WEIGHTS_ONLY_EXTRA_GLOBALS",
    "WRAPPER_KEYS",
    "ExportedProgramModule",
    "Format",
    "LoadedModel",
    "Task",
    "build_arch",
    "infer_num_outputs",
    "load_model",
    "save_checkpoint",
]
