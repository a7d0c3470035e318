"""The ``torch.export`` format: ``.pt2`` programs, scanned before they are loaded.

Owns: detecting and loading exported programs after :mod:`audit.models.pt2_scan` found
nothing unsafe (or with ``--trust-checkpoint``), refusing training-mode graphs, and wrapping
a fixed-batch program in :class:`ExportedProgramModule`. Must not run the archive's guard
code (the module is built with ``check_guards=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audit.errors import CheckpointError
from audit.models.formats import ModelFile
from audit.models.loaded import LoadedModel, infer_num_outputs
from audit.models.pt2_scan import pt2_unsafe_reasons


def is_export(file: ModelFile) -> bool:
    """Whether the file is a torch.export archive (a .pt2 zip with its program entries)."""
    if not file.is_zip:
        if file.path.suffix.lower() == ".pt2":
            raise CheckpointError(
                f"{str(file.path)!r} has the .pt2 suffix but is not a zip archive, so it is not a "
                "torch.export program (truncated or corrupt?); re-export it with "
                "torch.export.save(torch.export.export(model.eval(), (example,)), path)."
            )
        return False
    return "archive_format" in file.zip_entries or "models" in file.zip_entries


def load_export(path: Path, *, trust_checkpoint: bool) -> LoadedModel:
    """Load a scanned (or trusted) exported program as an eval-mode module on CPU."""
    if not trust_checkpoint:
        reasons = list(dict.fromkeys(pt2_unsafe_reasons(path)))
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
