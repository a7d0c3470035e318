"""Pruning methods as registered strategies (SPEC §6.1).

Owns: the :class:`PruningMethod` interface, the registry every method name resolves
through (``--method``, ``AuditConfig.method`` and the CLI's choices all come from it), and
the built-in methods: ``global`` and ``layerwise`` magnitude pruning, ``N:M`` (e.g.
``2:4``) and ``structured`` (channel/filter removal through Torch-Pruning).

A method prunes a *copy*: :meth:`PruningMethod.prune` never modifies the model it is given.
Mask methods (everything but ``structured``) only define :meth:`PruningMethod.masks`; the
copy, the masking and the statistics are shared. Adding a method is one subclass decorated
with :func:`register_method`.

Must not: train, recalibrate, choose a device, or print.
"""

from __future__ import annotations

import re
from abc import ABC
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from audit.pruning.masks import PruneStats, apply_masks, magnitude_masks, nm_masks, sparsity_stats
from audit.pruning.scope import check_fraction, copy_module, prunable_parameters

__all__ = [
    "PruningMethod",
    "get_method",
    "method_choices",
    "method_help",
    "prune_copy",
    "register_method",
]

_REGISTRY: dict[str, type[PruningMethod]] = {}


class PruningMethod(ABC):
    """One way of choosing which weights (or channels) to remove.

    Subclasses set ``name`` (what ``--method`` accepts, or a pattern's display form such as
    ``"N:M"``), a one-line ``help`` and either implement :meth:`masks` (mask methods) or
    override :meth:`prune` (methods that change the architecture, ``structural = True``).
    A method whose spelling carries parameters (``2:4``) overrides :meth:`parse`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    structural: ClassVar[bool] = False

    @classmethod
    def parse(cls, spec: str) -> PruningMethod | None:
        """Return the method ``spec`` names, or ``None`` when it is not this method."""
        return cls() if spec == cls.name else None

    @property
    def label(self) -> str:
        """The name the reports show (``"2:4"`` rather than ``"N:M"``)."""
        return self.name

    @property
    def fixed_sparsity(self) -> float | None:
        """The only sparsity this method can produce, or ``None`` if any is possible."""
        return None

    def masks(
        self, model: nn.Module, sparsity: float, *, exclude: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Boolean keep-masks for the prunable weights of ``model`` at ``sparsity``."""
        raise NotImplementedError(f"method {self.label!r} does not prune with masks")

    def prune(
        self,
        model: nn.Module,
        sparsity: float,
        *,
        exclude: Sequence[str] = (),
        example_input: torch.Tensor | None = None,
    ) -> tuple[nn.Module, PruneStats]:
        """Return a pruned copy of ``model`` and its statistics (``model`` is not modified).

        Parameters
        ----------
        model : torch.nn.Module
            The dense model.
        sparsity : float
            The requested sparsity, in ``[0, 1)``.
        exclude : sequence of str, default=()
            ``fnmatch`` patterns of weights to leave dense.
        example_input : torch.Tensor, optional
            One input batch on the model's device; structural methods trace the model with it.

        Returns
        -------
        pruned : torch.nn.Module
            The pruned copy, on the model's device.
        stats : PruneStats
            Requested and achieved sparsity, overall and per layer.
        """
        sparsity = check_fraction(sparsity, "sparsity")
        # Validate against the original first so a bad pattern costs no copy.
        prunable_parameters(model, exclude=exclude)
        pruned = copy_module(model)
        masks = self.masks(pruned, sparsity, exclude=exclude)
        apply_masks(pruned, masks)
        return pruned, sparsity_stats(pruned, masks, requested=sparsity, method=self.label)


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: make ``cls`` available to ``--method`` and ``AuditConfig.method``.

    Raises
    ------
    ValueError
        If another class already registered the same ``name``.
    """
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a pruning method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def method_help() -> list[tuple[str, str]]:
    """``(name, one-line help)`` of every registered method, for the CLI's help text."""
    return [(name, cls.help) for name, cls in _REGISTRY.items()]


def method_choices() -> tuple[str, ...]:
    """The registered method names, as ``--method`` lists them."""
    return tuple(_REGISTRY)


def get_method(spec: object) -> PruningMethod:
    """Resolve a ``--method`` value to its method.

    Raises
    ------
    ValueError
        If no registered method accepts ``spec``; the message lists the choices.
    """
    if isinstance(spec, PruningMethod):
        return spec
    if isinstance(spec, str):
        for cls in _REGISTRY.values():
            found = cls.parse(spec)
            if found is not None:
                return found
    raise ValueError(
        f"--method {spec!r} is not one of {', '.join(method_choices())} (N:M as two integers "
        "with N < M, e.g. 2:4)."
    )


@register_method
class GlobalMagnitude(PruningMethod):
    """Unstructured magnitude pruning with one threshold across all prunable layers."""

    name = "global"
    help = "unstructured, one |w| threshold across layers"

    def masks(
        self, model: nn.Module, sparsity: float, *, exclude: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Global magnitude masks (see :func:`audit.pruning.masks.magnitude_masks`)."""
        return magnitude_masks(model, sparsity, method="global", exclude=exclude)


@register_method
class LayerwiseMagnitude(PruningMethod):
    """Unstructured magnitude pruning to the same sparsity in every prunable layer."""

    name = "layerwise"
    help = "unstructured, the same sparsity in every layer"

    def masks(
        self, model: nn.Module, sparsity: float, *, exclude: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Per-layer magnitude masks (see :func:`audit.pruning.masks.magnitude_masks`)."""
        return magnitude_masks(model, sparsity, method="layerwise", exclude=exclude)


_NM = re.compile(r"(\d+):(\d+)")


@register_method
class NMSparsity(PruningMethod):
    """Semi-structured N:M pruning: the N largest |w| of every M consecutive input weights.

    Its sparsity is fixed at ``1 - N/M`` (0.5 for 2:4) over the layers it can group; the
    requested sparsity only labels the level.
    """

    name = "N:M"
    help = "keep the N largest of every M consecutive input weights, e.g. 2:4"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        if not 1 <= n < m:
            raise ValueError(f"N:M pruning keeps N of every M weights, so 1 <= N < M; got {n}:{m}")
        self.n, self.m = n, m

    @classmethod
    def parse(cls, spec: str) -> PruningMethod | None:
        """``"2:4"`` → ``NMSparsity(2, 4)``; anything else is not this method."""
        match = _NM.fullmatch(spec.strip()) if isinstance(spec, str) else None
        if match is None:
            return None
        n, m = int(match.group(1)), int(match.group(2))
        return cls(n, m) if 1 <= n < m else None

    @property
    def label(self) -> str:
        """``"N:M"`` with the numbers, e.g. ``"2:4"``."""
        return f"{self.n}:{self.m}"

    @property
    def fixed_sparsity(self) -> float:
        """``1 - N/M``."""
        return 1.0 - self.n / self.m

    def masks(
        self, model: nn.Module, sparsity: float, *, exclude: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """N:M masks (see :func:`audit.pruning.masks.nm_masks`); ``sparsity`` is ignored."""
        return nm_masks(model, self.n, self.m, exclude=exclude)


@register_method
class StructuredChannels(PruningMethod):
    """Channel/filter removal with dependency handling (Torch-Pruning); a smaller model.

    The requested sparsity is the fraction of prunable weights (Conv/Linear) to *remove*;
    see :mod:`audit.pruning.structured`.
    """

    name = "structured"
    help = "remove whole channels/filters (Torch-Pruning); a physically smaller model"
    structural = True

    def prune(
        self,
        model: nn.Module,
        sparsity: float,
        *,
        exclude: Sequence[str] = (),
        example_input: torch.Tensor | None = None,
    ) -> tuple[nn.Module, PruneStats]:
        """Remove channels until ``sparsity`` of the prunable weights are gone."""
        from audit.pruning.structured import prune_channels

        if example_input is None:
            raise ValueError("structured pruning traces the model and needs an example input batch")
        return prune_channels(model, sparsity, exclude=exclude, example_input=example_input)


def prune_copy(
    model: nn.Module,
    sparsity: float,
    *,
    method: str | PruningMethod = "global",
    exclude: Sequence[str] = (),
    example_input: torch.Tensor | None = None,
) -> tuple[nn.Module, PruneStats]:
    """Return a pruned deep copy of ``model`` and its sparsity (one-shot).

    Parameters
    ----------
    model : torch.nn.Module
        The dense model (eager, TorchScript or fx/``torch.export``); never modified.
    sparsity : float
        Fraction of prunable weights to zero (or remove), in ``[0, 1)``.
    method : str or PruningMethod, default="global"
        A registered method name (``global``, ``layerwise``, ``2:4``, ``structured``).
    exclude : sequence of str, default=()
        ``fnmatch`` patterns of weights to leave dense.
    example_input : torch.Tensor, optional
        An input batch, needed by structural methods.

    Returns
    -------
    pruned : torch.nn.Module
        The copy, on the same device and in the same train/eval mode as ``model``.
    stats : PruneStats
        Requested and achieved sparsity, overall and per layer.

    Raises
    ------
    ValueError
        For an unknown method, or as the method's masks do.
    """
    return get_method(method).prune(model, sparsity, exclude=exclude, example_input=example_input)
