"""Detect and load checkpoint formats safely; write prune-audit checkpoints.

Owns: reading model files (SPEC §3.1) — prune-audit checkpoints, raw/wrapped state_dicts,
TorchScript, ``torch.export`` programs and (only with ``--trust-checkpoint``) pickled
modules — and ``save_checkpoint``. Each format is one loader registered in
:func:`_register_builtin_formats` (:mod:`audit.models.formats`); architectures are built
through the registry of :mod:`audit.models.architectures`. Must not touch devices
(everything loads on CPU), widen ``torch.serialization``'s allowlist of globals, or run code
named by a file: a factory named in a checkpoint is only ever a registered one (even with
``--trust-checkpoint``), ``package.module:factory`` is imported only when the user typed it
with ``--arch``, and pickle callables or exported-program payloads run only with
``--trust-checkpoint``.

Loading rules
-------------
* Plain ``torch.save`` files are read with ``torch.load(weights_only=True)``; if that
  refuses the file (it holds pickled objects, e.g. a whole ``nn.Module``), loading stops with
  a ``CheckpointError`` unless ``trust_checkpoint`` is set.
* ``torch.export.load`` is *not* safe on untrusted files: in torch 2.15 it unpickles
  payloads marked ``use_pickle`` and opaque/custom objects, retries sample inputs with
  ``weights_only=False``, evaluates symbolic-shape strings with ``sympy.sympify`` (``eval``),
  resolves graph targets by name from ``torch`` and loads AOTInductor shared libraries. So
  an archive is first scanned (:func:`_pt2_unsafe_reasons`) and anything outside a plain
  tensor program is refused without ``trust_checkpoint``; the module is built with
  ``ep.module(check_guards=False)``, which does not ``exec`` the archive's guard code.
  Programs exported in training mode are refused (their outputs depend on the batch); the
  GraphModule's ``train()``/``eval()`` only set flags (the graph fixed eval behaviour), and
  a program with a fixed batch size is wrapped in :class:`ExportedProgramModule`.
* TorchScript archives are loaded with ``torch.jit.load``: their code is TorchScript, which
  cannot call Python, and their pickles go through TorchScript's restricted unpickler.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from audit.errors import CheckpointError
from audit.models.architectures import EXAMPLE_ARCH, build_architecture
from audit.models.formats import (
    CheckpointFormat,
    ModelFile,
    checkpoint_formats,
    register_format,
)
from audit.pruning.reparam import fold_pruning_reparametrisations, sparsifier_masks

CHECKPOINT_FORMAT = "prune-audit/1"

#: A registered checkpoint format's name (see :func:`audit.models.formats.format_names`).
Format = str
Task = Literal["multilabel", "binary", "multiclass"]
TASKS = ("multilabel", "binary", "multiclass")

#: Keys that hold the weights in the usual training-checkpoint wrappers, in priority order
#: (the non-EMA weights win when a file holds both).
WRAPPER_KEYS = ("state_dict", "model", "model_ema", "ema", "net")

#: Module names (digits stripped) that mark a classifier layer, e.g. ``fc``, ``classifier.6``,
#: ``heads.head``, ``last_linear``.
CLASSIFIER_NAMES = frozenset({"fc", "classifier", "head", "heads", "last_linear", "logits"})

_EXAMPLE_ARCH = EXAMPLE_ARCH
# Plain-data classes that common training checkpoints hold next to their weights, allowed in
# weights-only loading (an explicit allow-list; it runs no code when unpickled):
# ``argparse.Namespace`` is the ``args`` of a timm training checkpoint (timm's own loader
# allow-lists it the same way).
WEIGHTS_ONLY_EXTRA_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


@dataclass
class LoadedModel:
    """A model read from disk, ready for inference on CPU.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on CPU.
    format : str
        What the file was: the name of a registered checkpoint format ("prune-audit",
        "state_dict", "torchscript", "export", "pickle", ...).
    arch : str or None
        The architecture string used to rebuild it (None for TorchScript/export/pickle).
    arch_kwargs : dict
        The keyword arguments it was built with (plain data; ``{}`` when none).
    outputs : list of str or None
        Output names, when the checkpoint records them.
    num_outputs : int or None
        Output count: the recorded outputs, else the rows of the classifier weight (see
        :func:`infer_num_outputs`); None when unknown. A hint: the runner still checks the
        width of the first batch of logits.
    task : {"multilabel", "binary", "multiclass"} or None
        Recorded task, if any.
    preprocess : dict
        Subset of ``image_size``/``mean``/``std`` from the checkpoint (``{}`` when none; an
        exported program with a fixed input size contributes ``image_size``).
    """

    model: torch.nn.Module
    format: Format
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None
    num_outputs: int | None = None
    task: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        """Number of parameter elements."""
        return sum(p.numel() for p in self.model.parameters())


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


# ---------------------------------------------------------------------------- entry point
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
    file = ModelFile(p, arch=arch, trust_checkpoint=trust_checkpoint, read_torch=_torch_load)
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


# ---------------------------------------------------------------------------- format registry
def _is_torchscript(file: ModelFile) -> bool:
    return "constants.pkl" in file.zip_entries or "code" in file.zip_entries


def _is_export(file: ModelFile) -> bool:
    if not file.is_zip:
        if file.path.suffix.lower() == ".pt2":
            raise CheckpointError(
                f"{str(file.path)!r} has the .pt2 suffix but is not a zip archive, so it is not a "
                "torch.export program (truncated or corrupt?); re-export it with "
                "torch.export.save(torch.export.export(model.eval(), (example,)), path)."
            )
        return False
    return "archive_format" in file.zip_entries or "models" in file.zip_entries


def _is_prune_audit(file: ModelFile) -> bool:
    obj = file.torch_object
    if not isinstance(obj, dict) or "format" not in obj:
        return False
    fmt = obj["format"]
    # A 'format' key of the wrong type next to 'arch' is a damaged prune-audit file, not a
    # training checkpoint that happens to have a 'format' entry.
    return (isinstance(fmt, str) and fmt.startswith("prune-audit/")) or "arch" in obj


def _is_pickled_module(file: ModelFile) -> bool:
    obj = file.torch_object
    if isinstance(obj, torch.nn.Module):
        return True
    return (
        file.pickled
        and isinstance(obj, dict)
        and any(isinstance(obj.get(k), torch.nn.Module) for k in WRAPPER_KEYS)
    )


def _load_pickled_module(file: ModelFile) -> LoadedModel:
    obj = file.torch_object
    if isinstance(obj, torch.nn.Module):
        return _loaded_module(obj, "pickle")
    key = next(k for k in WRAPPER_KEYS if isinstance(obj.get(k), torch.nn.Module))
    return _loaded_module(obj[key], "pickle")


def _register_builtin_formats() -> None:
    """The formats of SPEC §3.1, in detection order (archives by their entries first)."""
    for fmt in (
        CheckpointFormat(
            "safetensors", lambda f: not f.is_zip and _is_safetensors(f.path),
            lambda f: _from_state_dict(_load_safetensors(f.path), f.path, arch=f.arch),
            "safetensors state_dict (safetensors.torch.save_file, with --arch)",
        ),
        CheckpointFormat(
            "torchscript", _is_torchscript, lambda f: _load_torchscript(f.path),
            "TorchScript archive (torch.jit.save)",
        ),
        CheckpointFormat(
            "export", _is_export,
            lambda f: _load_export(f.path, trust_checkpoint=f.trust_checkpoint),
            "torch.export program (torch.export.save, .pt2)",
        ),
        CheckpointFormat(
            "prune-audit", _is_prune_audit,
            lambda f: _from_prune_audit(
                f.torch_object, f.path, arch=f.arch, trust_checkpoint=f.trust_checkpoint
            ),
            "prune-audit checkpoint (audit.save_checkpoint)",
        ),
        CheckpointFormat(
            "pickle", _is_pickled_module, _load_pickled_module,
            "pickled nn.Module (torch.save(model), only with --trust-checkpoint)",
        ),
        CheckpointFormat(
            "state_dict", lambda f: isinstance(f.torch_object, dict),
            lambda f: _from_state_dict(f.torch_object, f.path, arch=f.arch),
            "state_dict or a training checkpoint wrapping one (with --arch)",
        ),
    ):  # fmt: skip
        register_format(fmt)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON object."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
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


# ---------------------------------------------------------------------------- torch.save files
def _torch_load(path: Path, *, trust_checkpoint: bool) -> tuple[Any, bool]:
    """``torch.load`` with ``weights_only=True``; unpickle fully only when trusted.

    Returns the object and whether it came from a full (code-executing) unpickle.
    """
    try:
        with torch.serialization.safe_globals(list(WEIGHTS_ONLY_EXTRA_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        names = [found.group(1)] if found else _pickle_callables(path)
        if not names:
            # Not a pickle that calls anything: random bytes and damaged files end up here.
            raise _unreadable(path, e, maybe_pickle=not trust_checkpoint) from e
        if not trust_checkpoint:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            what = f" (it references {shown})"
            raise CheckpointError(
                f"{str(path)!r} is not a plain weights file: it contains pickled Python "
                f"objects{what}, typically a whole nn.Module saved with torch.save(model) or a "
                "training checkpoint holding non-tensor objects. Loading it would execute "
                "arbitrary code from the file, so prune-audit refuses. Safe alternatives: save "
                f"model.state_dict() and pass --arch (e.g. {_EXAMPLE_ARCH} or --arch "
                "mypkg.models:build_model), write it with audit.save_checkpoint(...), or save "
                "it as TorchScript (torch.jit.save) or a torch.export program "
                "(torch.export.save). If you trust the file and where it came from, pass "
                "--trust-checkpoint to load it anyway."
            ) from None
    except Exception as e:  # torch.load raises many types for files that are not checkpoints
        raise _unreadable(path, e) from e
    try:
        # The user vouched for the file with --trust-checkpoint: full unpickling runs its code.
        return torch.load(path, map_location="cpu", weights_only=False), True
    except Exception as e:
        hint = ""
        if isinstance(e, (AttributeError, ImportError)):
            hint = (
                " The classes it was pickled with must be importable under the same module "
                "names (a class defined in a training script's __main__ cannot be found)."
            )
        raise CheckpointError(
            f"Loading {str(path)!r} with --trust-checkpoint failed ({type(e).__name__}: {e})."
            f"{hint} Prefer saving model.state_dict() and passing --arch, or audit."
            "save_checkpoint(...)."
        ) from e


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
     "SHORT_BINSTRING"}
)  # fmt: skip
#: Globals the weights-only reader itself resolves for plain tensors and dicts.
_TENSOR_GLOBALS = frozenset(
    {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
     "collections.OrderedDict", "torch.FloatStorage", "torch._utils._rebuild_tensor"}
)  # fmt: skip


def _pickle_callables(path: Path) -> list[str]:
    """Name the callables a pickle would import (``module.name``), without running it.

    Reads the opcodes with ``pickletools.genops`` (a parser: nothing is imported or called)
    of a raw pickle or of the ``data.pkl`` inside a ``torch.save`` zip. The weights-only
    reader stops at the first opcode it does not know (protocol 4/5 ``STACK_GLOBAL``/
    ``FRAME``), so this is what tells a code-running pickle from a damaged file. Returns []
    when the bytes are not a pickle or reference only the globals of plain tensors.
    """
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                inner = [n for n in zf.namelist() if n.endswith("data.pkl")]
                data = zf.read(inner[0]) if inner else b""
        else:
            with path.open("rb") as f:
                data = f.read(64 << 20)
    except (OSError, zipfile.BadZipFile, ValueError):
        return []
    names: list[str] = []
    strings: list[str] = []  # the most recent string pushes, for STACK_GLOBAL
    memo: dict[int, str] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _STRING_OPS:
                strings.append(str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[int(arg)] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                strings.append(memo[int(arg)])
            elif op.name in ("GLOBAL", "INST"):
                names.append(".".join(str(arg).split(" ", 1)))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "(unnamed global)")
            if op.name == "STOP":
                break
    except Exception:  # pickletools raises ValueError and friends on bytes that are no pickle
        if not names:
            return []
    unsafe = [n for n in dict.fromkeys(names) if n not in _TENSOR_GLOBALS]
    return unsafe


def _unreadable(path: Path, err: BaseException, *, maybe_pickle: bool = False) -> CheckpointError:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else "")[:200]
    what = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    trust = (
        " If it is a full pickle from a source you trust, --trust-checkpoint loads it without "
        "the weights-only restrictions (running any code it contains)."
        if maybe_pickle
        else ""
    )
    return CheckpointError(
        f"Cannot read {str(path)!r} as a PyTorch checkpoint ({what}); "
        "the file is truncated, corrupt or not a model file. Expected a file written by "
        "torch.save (a state_dict or audit.save_checkpoint), torch.jit.save or "
        f"torch.export.save; re-save or re-download it.{trust}"
    )


def _from_state_dict(obj: dict[Any, Any], path: Path, *, arch: str | None) -> LoadedModel:
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
        _clean_keys(state_dict, path), masks=sparsifier_masks(obj), source=repr(str(path))
    )
    if arch is None:
        keys = ", ".join(repr(k) for k in list(state_dict)[:6])
        raise CheckpointError(
            f"{str(path)!r} is a raw state_dict ({len(state_dict)} tensors; keys {keys}, ...), "
            "which holds weights but not the architecture; pass --arch to say how to build the "
            f"model, e.g. {_EXAMPLE_ARCH} or --arch mypkg.models:build_model (a factory called "
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
    _load_weights(model, state_dict, path, arch)
    return LoadedModel(model=model.eval(), format="state_dict", arch=arch, num_outputs=found[0])


def _loaded_module(module: torch.nn.Module, fmt: Format) -> LoadedModel:
    module = module.to("cpu").eval()
    found = infer_num_outputs(module.state_dict())
    return LoadedModel(model=module, format=fmt, num_outputs=found[0] if found else None)


def _find_state_dict(obj: dict[Any, Any], depth: int = 0) -> dict[str, torch.Tensor] | None:
    """Return the tensors of a state_dict, or of one nested under a wrapper key.

    A state_dict is a dict of str → tensor; ``_extra_state`` entries (modules' non-tensor
    extra state) are allowed beside them, as ``nn.Module.state_dict`` writes them.
    """
    if obj and all(
        isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state"))
        for k, v in obj.items()
    ) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if depth < 2:
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict):
                found = _find_state_dict(inner, depth + 1)
                if found is not None:
                    return found
    return None


def _clean_keys(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
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


def infer_num_outputs(state_dict: dict[str, torch.Tensor]) -> tuple[int, str] | None:
    """Read the output count from the classifier weight of a state_dict.

    Rule: among ``*.weight`` tensors, the last 2-D one (in state_dict order, i.e. module
    registration order) whose module path has a component named ``fc``, ``classifier``,
    ``head``, ``heads``, ``last_linear`` or ``logits`` (trailing digits ignored, so ``fc8``
    counts); failing that the last 2-D weight (the last Linear); failing that the last 1×1
    convolution under such a name (SqueezeNet). Its first dimension is the output count.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor
        Weights, prefixes already stripped.

    Returns
    -------
    (int, str) or None
        The output count and the key it was read from; None when nothing qualifies.
    """
    weights = [(k, v) for k, v in state_dict.items() if k == "weight" or k.endswith(".weight")]

    def named(key: str) -> bool:
        return any(part.rstrip("0123456789") in CLASSIFIER_NAMES for part in key.split(".")[:-1])

    for pick in (
        lambda k, v: v.ndim == 2 and named(k),
        lambda k, v: v.ndim == 2,
        lambda k, v: v.ndim == 4 and tuple(v.shape[2:]) == (1, 1) and named(k),
    ):
        hits = [(k, v) for k, v in weights if pick(k, v)]
        if hits:
            k, v = hits[-1]
            return int(v.shape[0]), k
    return None


def _load_weights(
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


# ---------------------------------------------------------------------------- prune-audit files
def _from_prune_audit(
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
        _clean_keys(state_dict, path), source=repr(str(path))
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
    _load_weights(model, state_dict, path, chosen)
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


# ---------------------------------------------------------------------------- architectures
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
    return build_architecture(
        arch, num_outputs, arch_kwargs=arch_kwargs, allow_import=allow_import
    )


# ---------------------------------------------------------------------------- TorchScript
def _load_torchscript(path: Path) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # the C++ reader raises RuntimeError and friends
        raise CheckpointError(
            f"Cannot load {str(path)!r} as TorchScript ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); the archive is truncated, "
            "corrupt or from an incompatible PyTorch. Re-save it with torch.jit.save."
        ) from e
    return _loaded_module(module, "torchscript")


# ---------------------------------------------------------------------------- torch.export
def _load_export(path: Path, *, trust_checkpoint: bool) -> LoadedModel:
    if not trust_checkpoint:
        reasons = list(dict.fromkeys(_pt2_unsafe_reasons(path)))
        if reasons:
            raise CheckpointError(
                f"{str(path)!r} is a torch.export archive whose loading could execute code from "
                f"the file: {'; '.join(reasons[:3])}. torch.export.load would unpickle or "
                "evaluate those parts. Re-export a plain tensor program (torch.export.export("
                "model.eval(), "
                "(example,)) without custom objects or AOTInductor artifacts), save "
                "model.state_dict() and pass --arch, or pass --trust-checkpoint if you trust "
                "the file."
            )
    try:
        with path.open("rb") as f:
            program = torch.export.load(f)
    except Exception as e:
        raise CheckpointError(
            f"Cannot load {str(path)!r} as a torch.export program ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); it is corrupt or from an "
            "incompatible PyTorch version. Re-export it with this PyTorch."
        ) from e
    _refuse_training_graph(program, path)
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise CheckpointError(
            f"The exported program in {str(path)!r} takes {len(user_inputs)} inputs; prune-audit "
            "feeds a single image batch (N, 3, H, W). Export a module whose forward takes one "
            "tensor."
        )
    placeholder = next(
        n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0]
    )
    shape = tuple(placeholder.meta["val"].shape)
    lo, hi = _batch_range(program, shape[0])
    preprocess: dict[str, Any] = {}
    if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:]) and shape[2] == shape[3]:
        preprocess["image_size"] = int(shape[2])
    graph_module = program.module(check_guards=False)
    # ep.module() makes train()/eval() raise. The graph's BatchNorm/dropout behaviour was fixed
    # at export (refused above unless eval), so the mode flag changes nothing: restore the
    # ordinary flag-setting methods so callers can use .eval()/.train() like on any module.
    for name in ("train", "eval"):
        graph_module.__dict__.pop(name, None)
    graph_module.eval()
    module: torch.nn.Module = graph_module
    if lo > 1 or hi is not None:
        module = ExportedProgramModule(graph_module, lo, hi)
    found = infer_num_outputs(module.state_dict())
    return LoadedModel(
        model=module,
        format="export",
        num_outputs=found[0] if found else None,
        preprocess=preprocess,
    )


def _batch_range(program: Any, dim: Any) -> tuple[int, int | None]:
    """Batch sizes the program accepts: fixed when exported without a dynamic batch dim."""
    if isinstance(dim, int):
        return dim, dim
    ranges = program.range_constraints.get(dim.node.expr)
    if ranges is None:
        return 1, None
    return max(1, _finite_int(ranges.lower) or 1), _finite_int(ranges.upper)


def _finite_int(value: Any) -> int | None:
    """``int(value)`` for a finite sympy/int bound, None for an infinite one."""
    if getattr(value, "is_finite", True) is False:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _refuse_training_graph(program: Any, path: Path) -> None:
    """Refuse graphs traced in training mode (exported graphs freeze train/eval behaviour)."""
    for node in program.graph.nodes:
        target = str(node.target)
        if node.op != "call_function" or not ("batch_norm" in target or "dropout" in target):
            continue
        schema = getattr(node.target, "_schema", None)
        names = [a.name for a in schema.arguments] if schema is not None else []
        values = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
        if (
            "_native_batch_norm_legit." in target
            or "_native_batch_norm_legit_functional" in target
            or values.get("training") is True
            or ("dropout" in target and values.get("train") is True)
        ):
            raise CheckpointError(
                f"The program in {str(path)!r} was exported in training mode ({target} runs with "
                "batch statistics/dropout), so its outputs depend on the batch. Re-export after "
                "model.eval()."
            )


class ExportedProgramModule(torch.nn.Module):
    """Feed batches of any size to an exported program that accepts only some.

    A program exported without a dynamic batch dimension takes exactly the batch size B it
    was traced with (and a dynamic one may have a minimum): batches are split into chunks of
    at most B, and a short chunk is padded by repeating its last image, its extra outputs
    dropped. The program is the ``program`` submodule, so parameter names gain a
    ``program.`` prefix.
    """

    def __init__(self, program: torch.nn.Module, min_batch: int, max_batch: int | None) -> None:
        super().__init__()
        self.program = program
        self.min_batch = min_batch
        self.max_batch = max_batch
        self.eval()

    def forward(self, x: torch.Tensor) -> Any:
        """Run the program on ``x``, chunking/padding the batch to sizes it accepts."""
        n = x.shape[0]
        if n >= self.min_batch and (self.max_batch is None or n <= self.max_batch):
            return self.program(x)
        step = self.max_batch or max(n, self.min_batch)
        outs = []
        for a in range(0, n, step):
            chunk = x[a : a + step]
            k = chunk.shape[0]
            if k < self.min_batch:
                pad = chunk[-1:].expand(self.min_batch - k, *chunk.shape[1:])
                chunk = torch.cat([chunk, pad])
            out = self.program(chunk)
            if not isinstance(out, torch.Tensor):
                raise CheckpointError(
                    f"The exported program returns a {type(out).__name__}; prune-audit needs a "
                    "single logits tensor (N, outputs)."
                )
            outs.append(out[:k])
        return torch.cat(outs)


# ---------------------------------------------------------------------------- .pt2 safety scan
_PT2_ENTRIES = [
    re.compile(p)
    for p in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"version",
        r"\.data/[\w.]+",
        r"models/[\w.-]+\.json",
        r"data/weights/[\w.-]+",
        r"data/constants/[\w.-]+",
        r"data/sample_inputs/[\w.-]+\.pt",
        r"extra/[^/]+",
    )
]
_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order)\.[a-z][a-z0-9_]*(\.[A-Za-z0-9_]+)?")
_OPERATOR_FUNCS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ not_"
    " invert".split()
)
_SYM_CALLS = frozenset(
    "Symbol Integer Rational Float Eq Ne Lt Le Gt Ge And Or Not Abs Max Min Mod floor ceiling"
    " sqrt FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv"
    " LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv TruncToFloat TruncToInt"
    " RoundToInt RoundDecimal ToFloat Identity IsNonOverlappingAndDenseIndicator".split()
)
_SYM_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo"})
_SYMBOL_NAME = re.compile(r"[A-Za-z]+\d+")


def _safe_target(target: str) -> bool:
    if "__" in target:
        return False
    if _OP_TARGET.fullmatch(target):
        return True
    if target.startswith("_operator."):
        return target[len("_operator.") :] in _OPERATOR_FUNCS
    return re.fullmatch(r"math\.[a-z]+", target) is not None


def _safe_sym_expr(text: str) -> bool:
    """Whether a symbolic-shape string only builds sympy numbers, symbols and arithmetic."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False
    allowed = (
        ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Load,
        ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
        ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
        ast.And, ast.Or, ast.Call, ast.Name, ast.Constant, ast.keyword,
    )  # fmt: skip
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            return False
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _SYM_CALLS
        ):
            return False
        if isinstance(node, ast.Name) and not (
            node.id in _SYM_CALLS or node.id in _SYM_CONSTANTS or _SYMBOL_NAME.fullmatch(node.id)
        ):
            return False
        if isinstance(node, ast.Constant) and not (
            isinstance(node.value, (int, float, bool))
            or (isinstance(node.value, str) and _SYMBOL_NAME.fullmatch(node.value))
        ):
            return False
        if isinstance(node, ast.keyword) and not (
            node.arg is not None
            and node.arg.isidentifier()
            and not node.arg.startswith("_")
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bool)
        ):
            return False
    return True


def _pt2_unsafe_reasons(path: Path) -> list[str]:
    """List what in a ``.pt2`` archive would make ``torch.export.load`` run code from it.

    Fails closed: entries, payload kinds, graph targets and symbolic expressions outside a
    plain tensor program are all reported. An empty list means the archive holds only JSON,
    raw tensor bytes and weights-only pickles of tensors.
    """
    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                return ["the zip repeats entry names (readers may disagree on which is used)"]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1:
                return [f"entries under several top-level folders ({', '.join(sorted(tops))})"]
            files = {n.split("/", 1)[1]: n for n in names if "/" in n and not n.endswith("/")}
            for rel in files:
                if not any(p.fullmatch(rel) for p in _PT2_ENTRIES):
                    reasons.append(f"unexpected entry {rel!r}")
            for rel, full in files.items():
                data = zf.read(full)
                if rel.endswith("_config.json") and rel.startswith(
                    ("data/weights/", "data/constants/")
                ):
                    reasons += _payload_reasons(rel, data)
                elif rel.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                    except Exception:
                        reasons.append(f"{rel!r} is a pickle that is not weights-only")
                elif rel.startswith("models/"):
                    reasons += _graph_reasons(rel, data)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        return [f"the archive cannot be read ({type(e).__name__}: {e})"]
    return reasons


def _payload_reasons(rel: str, data: bytes) -> list[str]:
    try:
        config = json.loads(data).get("config", {})
    except (ValueError, AttributeError):
        return [f"{rel!r} is not valid JSON"]
    out = []
    for name, meta in config.items() if isinstance(config, dict) else []:
        if not isinstance(meta, dict):
            out.append(f"{rel!r} entry {name!r} is malformed")
        elif meta.get("use_pickle"):
            out.append(f"{name!r} in {rel!r} is stored as a pickle")
        elif rel.startswith("data/constants/") and not str(meta.get("path_name", "")).startswith(
            "tensor_"
        ):
            out.append(f"constant {name!r} is a custom/opaque object (unpickled on load)")
    return out


def _graph_reasons(rel: str, data: bytes) -> list[str]:
    try:
        tree = json.loads(data)
    except ValueError:
        return [f"{rel!r} is not valid JSON"]
    out: list[str] = []
    stack: list[Any] = [tree]
    while stack and len(out) < 5:
        obj = stack.pop()
        if isinstance(obj, dict):
            target = obj.get("target")
            if isinstance(target, str) and "inputs" in obj and not _safe_target(target):
                out.append(f"graph calls {target[:80]!r}")
            for key, value in obj.items():
                if key == "as_operator" and isinstance(value, str) and not _safe_target(value):
                    out.append(f"graph passes operator {value[:80]!r}")
                elif key == "expr_str" and isinstance(value, str) and not _safe_sym_expr(value):
                    out.append(f"symbolic shape {value[:80]!r} is not a plain expression")
                elif key in ("custom_obj_values", "as_custom_obj") and value:
                    out.append("graph uses custom (torchbind) objects")
                else:
                    stack.append(value)
        elif isinstance(obj, list):
            stack.extend(obj)
    return out


_register_builtin_formats()
