"""The architecture registry: the only factories a name read from a file can build.

Owns: resolving an architecture string to a factory, checking ``arch_kwargs`` against it,
and building the untrained module. Must not load weights, touch devices or import a module
named by a file.

Rules
-----
* A name recorded in a checkpoint (``arch``) resolves **only** through the registry: an
  exact registered name (``audit.demo:small_cnn``) or a registered family
  (``torchvision:NAME`` for torchvision's classification models). Nothing is imported or
  looked up by attribute from the string, so a file cannot reach ``torch.hub.load``,
  ``os.system``, ``builtins.eval`` or any other callable.
* ``package.module:factory`` is imported only when the user typed it (``--arch``), which is
  their own choice of code (SPEC §2).
* ``arch_kwargs`` from a file must be plain data (None, bool, int, float, str, and lists,
  tuples and str-keyed dicts of those, at most :data:`MAX_DEPTH` deep), and each key must be
  a parameter of the factory that does not take code (a parameter annotated ``Callable``,
  ``type[...]``, a module or another class, or whose default is callable, is refused). Keys
  the loader sets itself (the output count, ``weights``) are refused too.

Extending
---------
``register_architecture(name, factory, accepts=...)`` adds one exact name;
``register_family(ArchitectureFamily(...))`` adds a ``prefix:NAME`` namespace with its own
list of names (e.g. ``timm:NAME``). Registrations live in :func:`_register_builtins` so the
allow-list is readable in one place.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from audit.errors import CheckpointError

#: Deepest nesting of lists/dicts accepted in ``arch_kwargs``.
MAX_DEPTH = 8

_PLAIN_SCALARS = (type(None), bool, int, float, str)
_IMPORT_ARCH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
EXAMPLE_ARCH = "--arch torchvision:resnet18"


@dataclass(frozen=True)
class ArchitectureSpec:
    """One buildable architecture.

    Attributes
    ----------
    name : str
        The full architecture string (``torchvision:resnet18``).
    build : callable
        ``build(num_outputs, **kwargs) -> torch.nn.Module``.
    parameters : callable
        Returns the keyword parameters ``build`` accepts (name → ``inspect.Parameter``, with
        annotations resolved where possible), not counting the output count.
    open_kwargs : bool
        Whether keys outside ``parameters()`` are accepted (only for a factory the user named
        with ``--arch`` that takes ``**kwargs``).
    reserved : dict of str to str
        Keys ``arch_kwargs`` may not set, with the reason.
    """

    name: str
    build: Callable[..., torch.nn.Module]
    parameters: Callable[[], Mapping[str, inspect.Parameter]]
    open_kwargs: bool = False
    reserved: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchitectureFamily:
    """A registered ``prefix:NAME`` namespace (e.g. torchvision's classification models).

    Attributes
    ----------
    prefix : str
        The part before the colon.
    names : callable
        Returns the names the family can build (checked before anything is built).
    spec : callable
        ``spec(name) -> ArchitectureSpec`` for a name in ``names()``.
    description : str
        For messages: what the family is.
    """

    prefix: str
    names: Callable[[], Iterable[str]]
    spec: Callable[[str], ArchitectureSpec]
    description: str


_EXACT: dict[str, Callable[[], ArchitectureSpec]] = {}
_FAMILIES: dict[str, ArchitectureFamily] = {}


def register_architecture(
    name: str,
    factory: Callable[[], Callable[..., torch.nn.Module]],
    *,
    accepts: Callable[[], Callable[..., Any]] | None = None,
    output_kwarg: str = "num_outputs",
) -> None:
    """Register one exact architecture name.

    Parameters
    ----------
    name : str
        The string a checkpoint records, e.g. ``audit.demo:small_cnn``.
    factory : callable
        Returns the factory (lazily, so registering imports nothing); the factory is called
        as ``factory(**{output_kwarg: n}, **arch_kwargs)``.
    accepts : callable, optional
        Returns the callable whose signature lists the accepted keyword arguments, when the
        factory itself forwards ``**kwargs`` (e.g. a class's ``__init__``).
    output_kwarg : str, default "num_outputs"
        The factory's parameter for the output count.
    """

    def spec() -> ArchitectureSpec:
        fn = factory()
        sig_of = accepts() if accepts is not None else fn

        def build(num_outputs: int, **kwargs: Any) -> torch.nn.Module:
            return fn(**{output_kwarg: num_outputs}, **kwargs)

        return ArchitectureSpec(
            name=name,
            build=build,
            parameters=lambda: _parameters(sig_of, skip=(output_kwarg,)),
            reserved={output_kwarg: "prune-audit sets the output count from the checkpoint"},
        )

    _EXACT[name] = spec


def register_family(family: ArchitectureFamily) -> None:
    """Register a ``prefix:NAME`` namespace of architectures."""
    _FAMILIES[family.prefix] = family


def architecture_names() -> list[str]:
    """Every architecture string a checkpoint may record, sorted."""
    out = set(_EXACT)
    for fam in _FAMILIES.values():
        out.update(f"{fam.prefix}:{n}" for n in fam.names())
    return sorted(out)


def _registered_summary() -> str:
    parts = [f"{fam.prefix}:NAME ({fam.description})" for fam in _FAMILIES.values()]
    parts += sorted(_EXACT)
    return ", ".join(parts)


# ---------------------------------------------------------------------------- resolving
def resolve_architecture(
    arch: str, *, allow_import: bool = False, described: str | None = None
) -> ArchitectureSpec:
    """Find the factory for ``arch``.

    Parameters
    ----------
    arch : str
        ``prefix:NAME`` of a registered family, an exact registered name, or (only with
        ``allow_import``) ``package.module:factory``.
    allow_import : bool, default False
        True only for a string the user typed (``--arch``): importing runs the named module.
    described : str, optional
        How to name the string in messages (e.g. "The 'arch' entry of checkpoint 'm.pt'").

    Returns
    -------
    ArchitectureSpec

    Raises
    ------
    CheckpointError
        Malformed string, unknown family member, an unregistered name read from a file, or
        (for a user's factory) an import that fails.
    """
    what = described or f"Architecture {arch!r}"
    if not isinstance(arch, str) or ":" not in arch:
        raise CheckpointError(
            f"{what} ({arch!r}) is not of the form 'torchvision:NAME' or "
            f"'package.module:factory'; e.g. {EXAMPLE_ARCH}."
        )
    if arch in _EXACT:
        return _EXACT[arch]()
    prefix, _, name = arch.partition(":")
    family = _FAMILIES.get(prefix)
    if family is not None:
        available = list(family.names())
        if name not in available:
            close = difflib.get_close_matches(name, available, n=3)
            raise CheckpointError(
                f"{what}: {family.prefix} has no model named {name!r}"
                f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''} among "
                f"{family.description}; e.g. --arch {family.prefix}:{available[0]}."
            )
        return family.spec(name)
    if not allow_import:
        raise CheckpointError(
            f"{what} ({arch!r}) is not a registered architecture. A name read from a file may "
            "only select a registered factory, never import or call anything else (that "
            f"would run code named by the file); registered: {_registered_summary()}. If "
            f"{arch!r} is your own factory and you trust it, pass --arch {arch} on the "
            "command line (you choose the code, the file only supplies weights); otherwise "
            "re-save the checkpoint with a registered architecture."
        )
    return _imported_spec(arch)


def _imported_spec(arch: str) -> ArchitectureSpec:
    """``package.module:factory`` the user typed: import and look up the factory."""
    prefix, _, name = arch.partition(":")
    if not _IMPORT_ARCH.fullmatch(arch) or any(
        part.startswith("_") for part in re.split(r"[.:]", arch)
    ):
        raise CheckpointError(
            f"Architecture {arch!r} is not a valid 'package.module:factory' reference (dotted "
            "module path, a colon, a public factory name); e.g. --arch mypkg.models:build_model."
        )
    try:
        target: Any = importlib.import_module(prefix)
        for part in name.split("."):
            target = getattr(target, part)
    except ImportError as e:
        raise CheckpointError(
            f"Cannot import module {prefix!r} for architecture {arch!r} ({e}); install the "
            "package that defines it or add its folder to PYTHONPATH."
        ) from e
    except AttributeError as e:
        raise CheckpointError(
            f"Module {prefix!r} has no factory {name!r} (architecture {arch!r}); check the name "
            "after the colon."
        ) from e
    if not callable(target):
        raise CheckpointError(f"{arch!r} names a {type(target).__name__}, not a factory.")
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        sig = None
    takes_outputs = (
        sig is None
        or "num_outputs" in sig.parameters
        or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    )
    if not takes_outputs:
        raise CheckpointError(
            f"Factory {arch!r} does not take num_outputs (its signature is {sig}); the factory "
            "must accept a num_outputs keyword argument (plus the recorded arch_kwargs)."
        )
    open_kwargs = sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return ArchitectureSpec(
        name=arch,
        build=lambda n, **kw: target(num_outputs=n, **kw),
        parameters=lambda: _parameters(target, skip=("num_outputs",)),
        open_kwargs=open_kwargs,
        reserved={"num_outputs": "prune-audit sets the output count from the checkpoint"},
    )


# ---------------------------------------------------------------------------- building
def build_architecture(
    arch: str,
    num_outputs: int,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    allow_import: bool = False,
    described: str | None = None,
) -> torch.nn.Module:
    """Build an untrained model (random weights, never downloaded).

    Parameters
    ----------
    arch : str
        See :func:`resolve_architecture`.
    num_outputs : int
        Width of the classifier.
    arch_kwargs : mapping, optional
        Extra keyword arguments (from a file: checked by :func:`check_plain_kwargs` and
        against the factory's parameters).
    allow_import : bool, default False
        Whether ``arch`` came from the user (``--arch``) and may name a module to import.
    described : str, optional
        How to name ``arch`` in messages.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    CheckpointError
        Unknown or refused architecture, refused ``arch_kwargs``, a factory that fails or
        does not return a module.
    """
    spec = resolve_architecture(arch, allow_import=allow_import, described=described)
    kwargs = dict(arch_kwargs or {})
    check_plain_kwargs(kwargs, where=f"arch_kwargs for {spec.name}")
    check_kwargs_fit(spec, kwargs)
    try:
        model = spec.build(num_outputs, **kwargs)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, AssertionError) as e:
        shown = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        raise CheckpointError(
            f"Building {spec.name} with num_outputs={num_outputs}{shown} failed "
            f"({type(e).__name__}: {e}); check the architecture and its arch_kwargs (the "
            "factory must accept the output count plus the recorded arch_kwargs)."
        ) from e
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(
            f"Factory {spec.name!r} returned a {type(model).__name__}, not a torch.nn.Module."
        )
    return model


def check_plain_kwargs(kwargs: Any, *, where: str) -> None:
    """Refuse anything in ``kwargs`` that is not plain data.

    Plain data: None, bool, int, float, str, and lists, tuples and str-keyed dicts of plain
    data, nested at most :data:`MAX_DEPTH` deep.

    Parameters
    ----------
    kwargs : object
        Should be a dict with str keys.
    where : str
        Names the entry in messages (``arch_kwargs for torchvision:resnet18``).

    Raises
    ------
    CheckpointError
        Naming the key path and the type found.
    """
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(
            f"{where} must be a dict with string keys, got {type(kwargs).__name__}; re-save the "
            "checkpoint with arch_kwargs={'name': value, ...}."
        )

    def visit(value: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CheckpointError(
                f"{where}: {path} is nested more than {MAX_DEPTH} levels deep; arch_kwargs hold "
                "plain data (numbers, strings, lists, dicts). Flatten or remove it."
            )
        if isinstance(value, _PLAIN_SCALARS):
            return
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(v, f"{path}[{i}]", depth + 1)
            return
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise CheckpointError(
                        f"{where}: {path} has a non-string key {k!r}; arch_kwargs hold plain "
                        "data (numbers, strings, lists, string-keyed dicts). Re-save it."
                    )
                visit(v, f"{path}[{k!r}]", depth + 1)
            return
        kind = type(value).__name__
        if isinstance(value, torch.dtype):
            kind = f"dtype {value}"
        raise CheckpointError(
            f"{where}: {path} is a {kind} ({str(value)[:60]!r}), not plain data; a checkpoint "
            "may only pass numbers, strings, booleans, None and lists/dicts of them to a "
            "factory (never objects, tensors or callables). Remove it from arch_kwargs."
        )

    for key, value in kwargs.items():
        visit(value, repr(key), 1)


def check_kwargs_fit(spec: ArchitectureSpec, kwargs: Mapping[str, Any]) -> None:
    """Refuse keys the factory does not take, reserved keys and parameters that take code.

    Raises
    ------
    CheckpointError
        Naming the key, the architecture and the fix.
    """
    params = spec.parameters()
    for key in kwargs:
        if key in spec.reserved:
            raise CheckpointError(
                f"arch_kwargs for {spec.name} may not set {key!r} ({spec.reserved[key]}); "
                "remove it from arch_kwargs."
            )
        param = params.get(key)
        if param is None:
            if spec.open_kwargs and key.isidentifier() and not key.startswith("_"):
                continue
            shown = ", ".join(sorted(params)) or "none"
            raise CheckpointError(
                f"arch_kwargs: {key!r} is not a parameter of {spec.name} (it accepts: {shown}); "
                "remove it or fix its name."
            )
        if _takes_code(param):
            raise CheckpointError(
                f"arch_kwargs: {key!r} of {spec.name} takes a callable, class or object "
                f"({param.annotation if param.annotation is not param.empty else 'default ' + repr(param.default)}), "  # noqa: E501
                "which checkpoint metadata may not supply; remove it from arch_kwargs (build "
                "such a model in your own factory and pass it with --arch)."
            )


def _parameters(
    fn: Callable[..., Any], *, skip: Iterable[str] = ()
) -> dict[str, inspect.Parameter]:
    """Keyword-passable parameters of ``fn`` with annotations resolved where possible."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: keep the raw annotations
        hints = {}
    skipped = set(skip) | {"self"}
    out = {}
    for name, p in sig.parameters.items():
        if name in skipped or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        out[name] = p.replace(annotation=hints.get(name, p.annotation))
    return out


_CODE_WORDS = re.compile(r"Callable|\btype\[|\bType\[|Module|partial")


def _takes_code(param: inspect.Parameter) -> bool:
    """Whether a parameter is meant to receive code (a callable, class or object)."""
    default = param.default
    if (
        default is not param.empty
        and default is not None
        and not isinstance(default, (*_PLAIN_SCALARS, list, tuple, dict))
    ):
        return True  # e.g. norm_layer=nn.BatchNorm2d, a functools.partial
    return _annotation_takes_code(param.annotation)


def _annotation_takes_code(tp: Any) -> bool:
    if tp is inspect.Parameter.empty or tp is Any or tp in _PLAIN_SCALARS:
        return False
    if isinstance(tp, str):
        return _CODE_WORDS.search(tp) is not None
    if tp in (list, tuple, dict, Ellipsis) or tp is type(Ellipsis):
        return False
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return False
    if origin in (typing.Union, types.UnionType, list, tuple, dict, collections.abc.Sequence,
                  collections.abc.Mapping):  # fmt: skip
        return any(_annotation_takes_code(a) for a in typing.get_args(tp))
    return True  # Callable, type[...], a class such as nn.Module or a config dataclass


# ---------------------------------------------------------------------------- built-ins
def _torchvision_names() -> list[str]:
    import torchvision

    # module=torchvision.models lists the classification builders only (detection and
    # segmentation builders return dicts, not logits).
    return list(torchvision.models.list_models(module=torchvision.models))


def _torchvision_spec(name: str) -> ArchitectureSpec:
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    model_class = inspect.signature(builder).return_annotation

    def build(num_outputs: int, **kwargs: Any) -> torch.nn.Module:
        return builder(weights=None, num_classes=num_outputs, **kwargs)

    def parameters() -> dict[str, inspect.Parameter]:
        if isinstance(model_class, type) and issubclass(model_class, torch.nn.Module):
            return _parameters(model_class.__init__, skip=("num_classes",))
        return {}

    return ArchitectureSpec(
        name=f"torchvision:{name}",
        build=build,
        parameters=parameters,
        reserved={
            "weights": "prune-audit never downloads weights: they come from the checkpoint",
            "num_classes": "prune-audit sets num_classes from the outputs",
            "progress": "nothing is downloaded",
        },
    )


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:
        raise CheckpointError(
            "timm:NAME architectures need timm, which is not installed; install it with "
            "pip install 'prune-audit[timm]' (or pip install timm)."
        ) from None
    return list(timm.list_models())


def _timm_spec(name: str) -> ArchitectureSpec:
    import timm

    def build(num_outputs: int, **kwargs: Any) -> torch.nn.Module:
        # Offline: pretrained=False never downloads; the weights come from the checkpoint.
        return timm.create_model(name, pretrained=False, num_classes=num_outputs, **kwargs)

    return ArchitectureSpec(
        name=f"timm:{name}",
        build=build,
        parameters=dict,
        reserved={
            "pretrained": "prune-audit never downloads weights: they come from the checkpoint",
            "num_classes": "prune-audit sets num_classes from the outputs",
            "pretrained_cfg_overlay": "nothing is downloaded",
            "checkpoint_path": "the weights come from the checkpoint being audited",
        },
    )


def _register_builtins() -> None:
    register_family(
        ArchitectureFamily(
            prefix="timm",
            names=_timm_names,
            spec=_timm_spec,
            description="timm models (optional extra prune-audit[timm]), e.g. timm:resnet18",
        )
    )
    register_family(
        ArchitectureFamily(
            prefix="torchvision",
            names=_torchvision_names,
            spec=_torchvision_spec,
            description="torchvision classification models, e.g. torchvision:resnet18",
        )
    )

    def demo_factory() -> Callable[..., torch.nn.Module]:
        from audit.models.small_cnn import small_cnn

        return small_cnn

    def demo_accepts() -> Callable[..., Any]:
        from audit.models.small_cnn import SmallCNN

        return SmallCNN.__init__

    register_architecture("audit.demo:small_cnn", demo_factory, accepts=demo_accepts)


_register_builtins()
