"""Reading ``torch.save`` files safely: weights-only ``torch.load`` and what a refusal means.

Owns: the one ``torch.load`` call (``weights_only=True``, ``map_location="cpu"``; full
unpickling only with ``--trust-checkpoint``), the explicit allow-list of plain-data globals,
and naming the callables a refused pickle would run (read from its opcodes, never executed).
Must not widen ``torch.serialization``'s allowlist or unpickle untrusted code.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from audit.errors import CheckpointError
from audit.models.architectures import EXAMPLE_ARCH

# Plain-data classes that common training checkpoints hold next to their weights, allowed in
# weights-only loading (an explicit allow-list; it runs no code when unpickled):
# ``argparse.Namespace`` is the ``args`` of a timm training checkpoint (timm's own loader
# allow-lists it the same way).
WEIGHTS_ONLY_EXTRA_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def torch_load(path: Path, *, trust_checkpoint: bool) -> tuple[Any, bool]:
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
                f"model.state_dict() and pass --arch (e.g. {EXAMPLE_ARCH} or --arch "
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
