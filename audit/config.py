"""Frozen run configuration and the gate policy (SPEC §2, §8).

Owns: ``AuditConfig`` (every knob of a run, validated once here) and ``Policy`` with its
TOML loading. Must not load models or data, nor touch devices.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audit.errors import PolicyError, UsageError
from audit.pruning.finetune import DEFAULT_FINETUNE_LR
from audit.pruning.methods import get_method
from audit.pruning.recovery import get_recovery

Task = Literal["multilabel", "binary", "multiclass"]
Precision = Literal["fp32", "bf16", "fp16"]
FailOn = Literal["validated", "forecast"]

DEFAULT_SPARSITIES: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98, 0.99)
#: Report formats written when none are chosen; every registered format can be asked for
#: (``audit.report.formats``: built in json, md, html, junit).
DEFAULT_FORMATS: tuple[str, ...] = ("json", "md", "html")


@dataclass(frozen=True)
class Policy:
    """Gate policy: limits on what pruning may change (SPEC §8).

    Every ``max_delta_*`` limit is compared with the 95% paired-bootstrap CI of
    Δ = pruned − dense at ``target_sparsity`` (``fail_on="validated"``): pass when the upper
    bound is within the limit, fail when the lower bound exceeds it, inconclusive between
    (``on_inconclusive`` decides whether that fails the gate); or with the forecast's
    predicted Δ (``fail_on="forecast"``). ``max_accuracy_drop`` limits the overall accuracy
    drop, ``max_excess_accuracy_drop`` each group's accuracy drop beyond the overall one.
    """

    target_sparsity: float = 0.9
    max_delta_fnr_gap: float = 0.05
    max_delta_fpr_gap: float = 0.05
    max_delta_accuracy_gap: float = 0.05
    max_delta_bias_amplification: float = 0.05
    max_accuracy_drop: float = 0.05
    max_excess_accuracy_drop: float = 0.05
    min_group_size: int = 30
    fail_on: FailOn = "validated"
    thresholds: Literal["default", "calibrated"] = "default"
    on_undefined: Literal["fail", "warn"] = "fail"
    on_inconclusive: Literal["fail", "warn"] = "fail"

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as plain data."""
        return dataclasses.asdict(self)


_CHOICES: dict[str, tuple[str, ...]] = {
    "fail_on": ("validated", "forecast"),
    "thresholds": ("default", "calibrated"),
    "on_undefined": ("fail", "warn"),
    "on_inconclusive": ("fail", "warn"),
}


def policy_from_mapping(data: dict[str, Any], *, source: str) -> Policy:
    """Build a :class:`Policy` from a TOML table, rejecting unknown keys and bad values.

    Parameters
    ----------
    data : dict
        The ``[tool.prune-audit]`` table or a whole policy file.
    source : str
        Where the table came from, named in error messages.

    Returns
    -------
    Policy
        The validated policy.
    """
    known = {f.name: f for f in dataclasses.fields(Policy)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PolicyError(
            f"Policy {source} has unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"known keys are {', '.join(sorted(known))}. Remove or rename them (a typo in a "
            "gate policy would otherwise silently disable a check)."
        )
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in _CHOICES:
            if raw not in _CHOICES[key]:
                raise PolicyError(
                    f"Policy {source} key {key!r} is {raw!r}; expected one of "
                    f"{', '.join(repr(c) for c in _CHOICES[key])}."
                )
            values[key] = raw
        elif key == "min_group_size":
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise PolicyError(
                    f"Policy {source} key 'min_group_size' is {raw!r}; expected an integer ≥ 1."
                )
            values[key] = raw
        else:
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                raise PolicyError(
                    f"Policy {source} key {key!r} is {raw!r}; expected a finite number."
                )
            raw = float(raw)
            if key == "target_sparsity" and not 0.0 < raw < 1.0:
                raise PolicyError(
                    f"Policy {source} key 'target_sparsity' is {raw}; expected a fraction of "
                    "weights removed, strictly between 0 and 1 (e.g. 0.9 for 90% sparsity)."
                )
            if key != "target_sparsity" and not 0.0 <= raw <= 1.0:
                raise PolicyError(
                    f"Policy {source} key {key!r} is {raw}; expected a limit between 0 and 1 "
                    "(rates and gaps are fractions, e.g. 0.05 for five percentage points)."
                )
            values[key] = raw
    return Policy(**values)


def load_policy(path: str | Path | None, *, cwd: Path | None = None) -> tuple[Policy, str]:
    """Load the gate policy from ``path``, else ``[tool.prune-audit]`` in ./pyproject.toml.

    Parameters
    ----------
    path : str or Path or None
        An explicit policy TOML file (``--policy``). Its keys sit either at the top level or
        under ``[tool.prune-audit]``, not both (a top-level key beside that table would be
        silently ignored, so it is refused).
    cwd : Path, optional
        Where to look for ``pyproject.toml`` (default: the working directory).

    Returns
    -------
    (Policy, str)
        The policy and a description of its source ("built-in" when none was found).
    """
    if path is not None:
        p = Path(path)
        data = _parse_toml(_read_text(p, "Pass an existing UTF-8 TOML file to --policy."), str(p))
        table = _tool_table(data, str(p))
        if table is None:
            if "tool" in data:
                raise PolicyError(
                    f"Policy file {str(p)!r} has a [tool] table but no [tool.prune-audit] "
                    "table. Put the policy keys under [tool.prune-audit] or at the top level "
                    "(without a [tool] table)."
                )
            return policy_from_mapping(data, source=repr(str(p))), str(p)
        others = sorted(k for k in data if k != "tool")
        if others:
            raise PolicyError(
                f"Policy file {str(p)!r} has top-level key(s) "
                f"{', '.join(repr(k) for k in others)} besides its [tool.prune-audit] table, "
                "which is the one read; they would be silently ignored. Move them into "
                "[tool.prune-audit] (or drop that table and keep every key at the top level)."
            )
        return policy_from_mapping(table, source=repr(f"{p} [tool.prune-audit]")), str(p)
    pyproject = (cwd or Path.cwd()) / "pyproject.toml"
    if pyproject.is_file():
        text = _read_text(pyproject, "Fix the file, or pass --policy to use another policy.")
        table = _tool_table(_parse_toml(text, str(pyproject)), str(pyproject))
        if table is not None:
            src = f"{pyproject} [tool.prune-audit]"
            return policy_from_mapping(table, source=repr(src)), src
    return Policy(), "built-in"


def _read_text(path: Path, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"Cannot read policy file {str(path)!r}: {exc.strerror or exc}. {fix}"
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"Policy file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); TOML files are UTF-8. {fix}"
        ) from None


def _parse_toml(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(
            f"Policy file {name!r} is not valid TOML: {exc}. Fix the syntax."
        ) from None


def _tool_table(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``data["tool"]["prune-audit"]`` checked to be tables; None when absent."""
    tool = data.get("tool")
    if tool is None:
        return None
    if not isinstance(tool, dict):
        raise PolicyError(
            f"{name!r}: 'tool' is {tool!r}, not a table; TOML reserves it for [tool.NAME] "
            "tables such as [tool.prune-audit]. Fix or remove that key."
        )
    table = tool.get("prune-audit")
    if table is not None and not isinstance(table, dict):
        raise PolicyError(
            f"{name!r}: 'tool.prune-audit' is {table!r}, not a table. Write the policy as a "
            "[tool.prune-audit] table of keys (e.g. target_sparsity = 0.9)."
        )
    return table


@dataclass(frozen=True)
class AuditConfig:
    """Everything one audit run needs; the CLI builds it from flags, the API from keywords."""

    model: Path
    data: Path
    out: Path = Path("reports")
    targets: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    labels_file: Path | None = None
    split: str | None = None
    calib_split: str | None = None
    train_split: str | None = None
    arch: str | None = None
    trust_checkpoint: bool = False
    ignore_output_names: bool = False
    task: Task | None = None
    sparsities: tuple[float, ...] | None = None
    method: str = "global"
    recovery: str = "bn"
    exclude: tuple[str, ...] = ()
    pruned: tuple[Path, ...] = ()
    finetune_steps: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float = DEFAULT_FINETUNE_LR
    finetune_seeds: tuple[int, ...] = (0,)
    validate: bool = True
    device: str = "auto"
    precision: Precision | None = None
    batch_size: int | None = None
    workers: int | None = None
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    top_k: int = 50
    bootstrap: int = 1000
    seed: int = 0
    uncertainty_band: tuple[float, float] = (0.1, 0.9)
    policy: Policy = field(default_factory=Policy)
    policy_source: str = "built-in"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    save_pruned: bool = False
    skip_bad_images: bool = False
    summary_out: Path | None = None
    quiet: bool = False
    mlflow: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "pruned", tuple(Path(p) for p in self.pruned))
        # The registries are the only source of valid names, for the CLI and the API alike.
        for lookup, value in ((get_method, self.method), (get_recovery, self.recovery)):
            try:
                lookup(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        if self.sparsities is not None:
            object.__setattr__(self, "sparsities", tuple(float(s) for s in self.sparsities))
            if not self.sparsities:
                raise UsageError(
                    "--sparsity is empty; give a comma list such as 0.8,0.9,0.95, or drop it "
                    "for the default levels."
                )
        if self.pruned and not self.validate:
            raise UsageError(
                "--pruned models are audited by measuring them (validation), which --no-validate "
                "turns off; drop one of the two."
            )
        fixed = get_method(self.method).fixed_sparsity
        if fixed is not None and self.sparsities is not None:
            off = [s for s in self.sparsities if abs(s - fixed) > 1e-9]
            if off:
                raise UsageError(
                    f"--method {self.method} always prunes to sparsity {fixed:g} (N of every M "
                    f"weights kept), so --sparsity {','.join(f'{s:g}' for s in off)} cannot be "
                    "audited with it; drop --sparsity or use --method global/layerwise."
                )
        for s in self.sparsities or ():
            if not 0.0 < float(s) < 1.0:
                raise UsageError(
                    f"--sparsity value {s} is out of range; each sparsity is the fraction of "
                    "weights removed, strictly between 0 and 1 (e.g. 0.8,0.9,0.95)."
                )
        # The registry imports the renderers; imported here so that the config stays light.
        from audit.report.formats import check_formats

        object.__setattr__(self, "formats", check_formats(self.formats))
        if self.mlflow:
            from audit.integrations.mlflow import require

            require()
        lo, hi = self.uncertainty_band
        if not 0.0 <= lo < 0.5 < hi <= 1.0:
            raise UsageError(
                f"Uncertainty band ({lo}, {hi}) must satisfy 0 ≤ low < 0.5 < high ≤ 1."
            )
        for name, value, minimum in (
            ("--top-k", self.top_k, 1),
            ("--bootstrap", self.bootstrap, 0),
            ("--batch-size", self.batch_size, 1),
            ("--image-size", self.image_size, 1),
            ("--workers", self.workers, 1),
            ("--finetune-epochs", self.finetune_epochs, 1),
            ("--finetune-steps", self.finetune_steps, 1),
            ("--seed", self.seed, 0),
        ):
            # None means "not given" (the default applies); 0 is a value and is checked.
            if value is not None and value < minimum:
                raise UsageError(f"{name} is {value}; it must be at least {minimum}.")
        if self.finetune_epochs is not None and self.finetune_steps is not None:
            raise UsageError(
                f"--finetune-steps {self.finetune_steps} and --finetune-epochs "
                f"{self.finetune_epochs} both set the fine-tuning budget; give one of them."
            )
        if not (math.isfinite(self.finetune_lr) and self.finetune_lr > 0):
            raise UsageError(f"--finetune-lr is {self.finetune_lr}; it must be a number > 0.")
        for name, triple in (("--mean", self.mean), ("--std", self.std)):
            if triple is not None and (
                len(triple) != 3
                or not all(math.isfinite(v) for v in triple)
                or (name == "--std" and min(triple) <= 0)
            ):
                raise UsageError(
                    f"{name} {triple!r} must be three finite comma-separated numbers (one per "
                    "RGB channel)" + (", all positive." if name == "--std" else ".")
                )

    @property
    def audit_sparsities(self) -> tuple[float, ...]:
        """The sparsities the tool prunes to itself, sorted and unique.

        The requested ones (default ``DEFAULT_SPARSITIES``) plus the policy's target
        sparsity; with ``pruned`` models and no ``sparsities`` none at all (the supplied
        models replace the target); a method with a fixed sparsity (N:M) has only that one.
        """
        if not self.validate:
            return ()
        fixed = get_method(self.method).fixed_sparsity
        if fixed is not None:
            return (round(fixed, 6),)
        if self.pruned and self.sparsities is None:
            return ()
        levels = {round(float(s), 6) for s in self.sparsities or DEFAULT_SPARSITIES}
        if not self.pruned:
            levels.add(round(self.policy.target_sparsity, 6))
        return tuple(sorted(levels))
