"""What every model loader returns, and the checkpoint vocabulary the loaders share.

Owns: :class:`LoadedModel`, the prune-audit checkpoint format tag and tasks, the wrapper keys
of training checkpoints, and reading the output count off a classifier weight. Must not read
files or touch devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

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


def loaded_module(module: torch.nn.Module, fmt: Format) -> LoadedModel:
    """Wrap a module read whole (TorchScript, pickle): CPU, eval mode, outputs from its weights."""
    module = module.to("cpu").eval()
    found = infer_num_outputs(module.state_dict())
    return LoadedModel(model=module, format=fmt, num_outputs=found[0] if found else None)


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
