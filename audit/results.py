"""Typed results: what the audit's stages return, and report.json read and written at the edge.

Owns: the frozen dataclasses of an audit's results — an estimate with its interval, cell
statistics, a group result, a target's and a model's metrics, the forecast, a validation
level, the validation, a gate check and the gate, the verdict, the whole :class:`Report` —
and their one JSON mapping: ``Report.from_json(d).to_json() == d`` for every report.json
the tool writes (schema in ``audit/report/report.schema.json``, docs/report-json.md).
Also owns the few decisions that read a result rather than compute one: whether bias
amplification applies to a (target, group) pair, and which levels the gate grades.

Must not: compute a metric, import torch, touch files or devices. JSON objects that the
report passes through without anyone deciding on them (per-layer sparsities, flips,
ranking quality, the forecast model's benchmark figures, plot data) stay JSON mappings.

Each record writes its keys in the order the tool writes them, omits optional keys that
were absent, and keeps keys it does not model (the schema allows extra keys) and the key
order of a report it read, so a saved report re-renders exactly as it was written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

JSON = Any
"""A plain JSON value (dict/list/str/int/float/bool/None)."""


class _Absent:
    """Marks an optional key that the report does not have (distinct from JSON null)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()

R = TypeVar("R", bound="Record")

#: Every record is frozen and built by keyword (optional keys may precede required ones).
_record = dataclass(frozen=True, kw_only=True)


def _plain(value: JSON) -> JSON:
    return value


def _key(name: str, meta: Mapping[str, Any]) -> str:
    return meta.get("key", name)


def _spec(
    parse: Callable[[JSON], Any] = _plain,
    dump: Callable[[Any], JSON] = _plain,
    *,
    optional: bool = False,
    key: str | None = None,
) -> Any:
    meta: dict[str, Any] = {
        "parse": parse,
        "dump": dump,
        "nested": parse is not _plain and (getattr(parse, "nested", False)),
    }
    if key is not None:
        meta["key"] = key
    if optional:
        return field(default=ABSENT, metadata=meta)
    return field(metadata=meta)


@_record
class Record:
    """Base of every result: field ↔ JSON key, in declaration order."""

    #: Keys of the JSON object this type does not model, kept as read.
    extra: Mapping[str, JSON] = field(default_factory=dict)
    #: The key order of the object it was read from (None: the tool's own order).
    key_order: tuple[str, ...] | None = field(default=None, compare=False)

    _WHAT: ClassVar[str] = "object"

    @classmethod
    def _fields(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if f.name not in ("extra", "key_order")]

    @classmethod
    def from_json(cls: type[R], data: JSON, *, where: str = "$") -> R:
        """Read the record from its JSON object; a missing required key is a ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{where}: expected a JSON object for the {cls._WHAT}, got {type(data).__name__}."
            )
        kwargs: dict[str, Any] = {}
        known = set()
        for f in cls._fields():
            key = _key(f.name, f.metadata)
            known.add(key)
            if key in data:
                parse = f.metadata["parse"]
                here = f"{where}.{key}"
                try:
                    kwargs[f.name] = (
                        parse(data[key], here) if f.metadata["nested"] else parse(data[key])
                    )
                except (TypeError, AttributeError, KeyError) as exc:
                    raise ValueError(f"{here}: {exc}") from None
            elif f.default is not dataclasses.MISSING:
                kwargs[f.name] = f.default
            else:
                raise ValueError(f"{where}: the {cls._WHAT} has no {key!r} key.")
        extra = {k: v for k, v in data.items() if k not in known}
        order = tuple(data)
        return cls(**kwargs, extra=extra, key_order=order)

    def to_json(self) -> dict[str, JSON]:
        """The record as report.json writes it (plain dicts, lists and scalars)."""
        out: dict[str, JSON] = {}
        for f in self._fields():
            value = getattr(self, f.name)
            if value is ABSENT:
                continue
            out[_key(f.name, f.metadata)] = f.metadata["dump"](value)
        out.update(self.extra)
        if self.key_order is not None and list(self.key_order) != list(out):
            ordered = {k: out[k] for k in self.key_order if k in out}
            ordered.update({k: v for k, v in out.items() if k not in ordered})
            out = ordered
        return out


# ---------------------------------------------------------------------------- field kinds
def _path_aware(parse: Callable[[JSON, str], Any]) -> Callable[[JSON, str], Any]:
    """Mark a parser that takes the key path (so errors name where they are)."""
    parse.nested = True  # type: ignore[attr-defined]
    return parse


def _one(cls: type[Record]) -> dict[str, Callable[..., Any]]:
    return {
        "parse": _path_aware(lambda d, where: cls.from_json(d, where=where)),
        "dump": lambda r: r.to_json(),
    }


def _maybe(cls: type[Record]) -> dict[str, Callable[..., Any]]:
    return {
        "parse": _path_aware(lambda d, where: None if d is None else cls.from_json(d, where=where)),
        "dump": lambda r: None if r is None else r.to_json(),
    }


def _many(cls: type[Record]) -> dict[str, Callable[..., Any]]:
    @_path_aware
    def parse(d: JSON, where: str) -> tuple[Any, ...]:
        if not isinstance(d, list):
            raise ValueError(
                f"{where}: expected a JSON array of {cls._WHAT}s, got {type(d).__name__}."
            )
        return tuple(cls.from_json(x, where=f"{where}[{i}]") for i, x in enumerate(d))

    return {"parse": parse, "dump": lambda rs: [r.to_json() for r in rs]}


def _by_name(cls: type[Record]) -> dict[str, Callable[..., Any]]:
    @_path_aware
    def parse(d: JSON, where: str) -> dict[str, Any]:
        if not isinstance(d, Mapping):
            raise ValueError(
                f"{where}: expected a JSON object of {cls._WHAT}s, got {type(d).__name__}."
            )
        return {k: cls.from_json(v, where=f"{where}.{k}") for k, v in d.items()}

    return {"parse": parse, "dump": lambda rs: {k: r.to_json() for k, r in rs.items()}}


def _nested(
    inner: Callable[[], dict[str, Callable[..., Any]]],
) -> dict[str, Callable[..., Any]]:
    """A JSON object whose values are of kind ``inner`` (e.g. {group: {metric: Estimate}})."""
    kind = inner()

    @_path_aware
    def parse(d: JSON, where: str) -> dict[str, Any]:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}.")
        return {k: kind["parse"](v, f"{where}.{k}") for k, v in d.items()}

    return {"parse": parse, "dump": lambda m: {k: kind["dump"](v) for k, v in m.items()}}


_STRINGS = {"parse": lambda d: tuple(str(x) for x in d), "dump": list}
_PAIR = {
    "parse": lambda d: None if d is None else tuple(d),
    "dump": lambda p: None if p is None else list(p),
}


# ---------------------------------------------------------------------------- estimates
@_record
class Estimate(Record):
    """A point estimate, None (with the reason) when not estimable, and maybe its interval.

    ``ci`` is the 95% interval ``(lo, hi)`` (None when none could be formed), ``ci_method``
    how it was formed (``percentile``, ``projection``, ``box``), ``replicates`` how many
    bootstrap replicates were defined. A dense gap has no interval: those keys are absent.
    """

    _WHAT: ClassVar[str] = "estimate"
    value: float | None = _spec()
    ci: tuple[float, float] | None = _spec(**_PAIR, optional=True)
    reason: str | None = _spec()
    ci_method: str | None = _spec(optional=True)
    replicates: int | None = _spec(optional=True)

    @property
    def estimable(self) -> bool:
        """Whether there is a value (otherwise ``reason`` says why not)."""
        return self.value is not None


@_record
class GroupChange(Record):
    """A change measured in one group cell (the excess accuracy change of a level)."""

    _WHAT: ClassVar[str] = "group change"
    group_value: str = _spec()
    n: int | None = _spec()
    value: float | None = _spec()
    ci: tuple[float, float] | None = _spec(**_PAIR, optional=True)
    reason: str | None = _spec(optional=True)
    ci_method: str | None = _spec(optional=True)
    replicates: int | None = _spec(optional=True)


# ---------------------------------------------------------------------------- metrics
@_record
class CellStats(Record):
    """Counts and rates of one cell: overall, or one group value (``value``, ``small``).

    ``reasons`` maps each rate that is not estimable (None) to why.
    """

    _WHAT: ClassVar[str] = "cell"
    n: int = _spec()
    positives: int = _spec()
    negatives: int = _spec()
    accuracy: float | None = _spec()
    tpr: float | None = _spec()
    fpr: float | None = _spec()
    fnr: float | None = _spec()
    selection_rate: float | None = _spec()
    uncertainty_rate: float | None = _spec()
    ece: float | None = _spec()
    underprediction: float | None = _spec()
    reasons: Mapping[str, str] = _spec()
    value: str = _spec(optional=True)
    small: bool = _spec(optional=True)


#: Phrases of the reasons criteria gives when bias amplification is not applicable to a
#: (target, group) pair because of the *train* split (no majority group v*, or train rates
#: too close): such a pair is not judged. Any other missing BA (too few positives in the
#: evaluated data, no predicted positives) is undefined and judged as such. A report.json
#: stores only the reason, so this is where the reading of it lives.
_TRAIN_SIDE = ("train",)


@_record
class BiasAmplification(Record):
    """BA of a (target, group) pair (SPEC §4.5), None with the reason when not estimable.

    ``majority_value`` is v*, the group value where the target is more frequent in train.
    """

    _WHAT: ClassVar[str] = "bias amplification"
    value: float | None = _spec()
    reason: str | None = _spec(optional=True)
    majority_value: str | None = _spec()

    @property
    def applicable(self) -> bool:
        """Whether BA is defined for this pair at all (the gate judges only those).

        Not applicable: no majority group v* (not a binary attribute, or no train rows of a
        group value), or the train positive rates differ by less than the required relative
        difference. Applicable but not estimable (None) otherwise: an undefined check.
        """
        if self.majority_value is None:
            return False
        return not (
            self.value is None
            and isinstance(self.reason, str)
            and any(p in self.reason for p in _TRAIN_SIDE)
        )


@_record
class GroupResult(Record):
    """One target by one group attribute (or intersection): cells, gaps, BA."""

    _WHAT: ClassVar[str] = "group entry"
    cells: tuple[CellStats, ...] = _spec(**_many(CellStats))
    gaps: Mapping[str, Estimate] = _spec(**_by_name(Estimate))
    bias_amplification: BiasAmplification = _spec(**_one(BiasAmplification))

    def cell_summary(self) -> tuple[list[dict[str, Any]], int | None]:
        """``[{value, n, positives, negatives}]`` per cell and their total n (None if 0)."""
        cells = [
            {
                "value": c.value if c.value is not ABSENT else None,
                "n": c.n,
                "positives": c.positives,
                "negatives": c.negatives,
            }
            for c in self.cells
        ]
        n = sum(int(c["n"]) for c in cells if isinstance(c["n"], int))
        return cells, (n or None)


@_record
class TargetMetrics(Record):
    """Every metric of one target under one threshold mode."""

    _WHAT: ClassVar[str] = "target block"
    threshold: float = _spec()
    overall: CellStats = _spec(**_one(CellStats))
    by_group: Mapping[str, GroupResult] = _spec(**_by_name(GroupResult))


@_record
class ModelMetrics(Record):
    """A model's metrics (dense, or one pruned level): per threshold mode and target.

    ``interdependence`` maps each target to ``{predictions, labels, excess}`` R² (or None).
    """

    _WHAT: ClassVar[str] = "metrics"
    default: Mapping[str, TargetMetrics] = _spec(**_by_name(TargetMetrics))
    calibrated: Mapping[str, TargetMetrics] = _spec(**_by_name(TargetMetrics))
    interdependence: Mapping[str, JSON] = _spec()

    def mode(self, name: str) -> Mapping[str, TargetMetrics]:
        """The targets' metrics under threshold mode ``default`` or ``calibrated``."""
        if name not in ("default", "calibrated"):
            raise ValueError(f"threshold mode must be 'default' or 'calibrated', got {name!r}")
        return self.default if name == "default" else self.calibrated


# ---------------------------------------------------------------------------- forecast
@_record
class ForecastPair(Record):
    """The dense-only forecast for one (target, group) pair (SPEC §5.2)."""

    _WHAT: ClassVar[str] = "forecast pair"
    target: str = _spec()
    group: str = _spec()
    predicted_delta: Mapping[str, float | None] = _spec()
    interval: Mapping[str, JSON] = _spec(optional=True)
    interdependence_excess: float | None = _spec()
    dense_gap: Mapping[str, float | None] = _spec()
    dense_bias_amplification: float | None = _spec(optional=True)
    risk: str = _spec()
    reason: str = _spec()
    why: Sequence[JSON] = _spec(optional=True)
    by_sparsity: Sequence[JSON] = _spec(optional=True)


@_record
class Forecast(Record):
    """The bias-increase forecast: the rule, its coefficients, and every pair's forecast."""

    _WHAT: ClassVar[str] = "forecast"
    rule: str = _spec()
    model: Mapping[str, JSON] = _spec(optional=True)
    target_sparsity: float = _spec(optional=True)
    sparsities: Sequence[float] = _spec(optional=True)
    verdict: str = _spec()
    pairs: tuple[ForecastPair, ...] = _spec(**_many(ForecastPair))


# ---------------------------------------------------------------------------- validation
@_record
class TargetDelta(Record):
    """Δ = pruned − dense of one target: accuracy, every gap per group, excess accuracy."""

    _WHAT: ClassVar[str] = "delta block"
    accuracy: Estimate = _spec(**_one(Estimate))
    by_group: Mapping[str, Mapping[str, Estimate]] = _spec(**_nested(lambda: _by_name(Estimate)))
    excess_accuracy_change: Mapping[str, tuple[GroupChange, ...]] = _spec(
        **_nested(lambda: _many(GroupChange)), optional=True
    )


@_record
class LevelAccuracy(Record):
    """Mean accuracy over targets, dense and pruned (and one-shot + BN for fine-tuning)."""

    _WHAT: ClassVar[str] = "level accuracy"
    dense: float = _spec()
    pruned: float = _spec()
    change: float = _spec()
    one_shot_bn: float | None = _spec()


@_record
class LevelResult(Record):
    """One validation level: a pruned copy of MODEL, or a ``--pruned`` model (``supplied``)."""

    _WHAT: ClassVar[str] = "level"
    sparsity: float = _spec()
    label: str = _spec(optional=True)
    source: str = _spec(optional=True)
    achieved_sparsity: float = _spec()
    per_layer: Sequence[JSON] = _spec()
    metrics: ModelMetrics = _spec(**_one(ModelMetrics))
    delta: Mapping[str, Mapping[str, TargetDelta]] = _spec(**_nested(lambda: _by_name(TargetDelta)))
    flips: Mapping[str, JSON] = _spec()
    ranking_quality: Mapping[str, JSON] = _spec()
    cie: Mapping[str, JSON] = _spec()
    structure: Mapping[str, JSON] | None = _spec(optional=True)
    model: Mapping[str, JSON] = _spec(optional=True)
    accuracy: LevelAccuracy = _spec(**_one(LevelAccuracy), optional=True)

    @property
    def supplied(self) -> bool:
        """Whether this level is a user-supplied ``--pruned`` model."""
        return self.source == "supplied"

    @property
    def name(self) -> str:
        """The level's name in tables and plot data: its label, else ``f"{sparsity:g}"``."""
        return self.label if self.label else f"{self.sparsity:g}"


def judged_level_indices(levels: Sequence[tuple[float, bool]], target_sparsity: float) -> list[int]:
    """Which levels the validated gate grades, given each level's (sparsity, supplied).

    Every ``--pruned`` model when there are any (they replace ``target_sparsity``: they are
    what ships), else the tool's own level closest to ``target_sparsity`` (the first of
    equally close ones). The one place this is decided; the gate, the runner and the
    renderers ask it.
    """
    supplied = [i for i, (_, is_supplied) in enumerate(levels) if is_supplied]
    if supplied:
        return supplied
    if not levels:
        return []
    return [min(range(len(levels)), key=lambda i: abs(levels[i][0] - target_sparsity))]


@_record
class Validation(Record):
    """What pruning actually did: the levels, the forecast's grade, the max safe sparsity."""

    _WHAT: ClassVar[str] = "validation"
    method: str = _spec()
    recovery: str = _spec()
    levels: tuple[LevelResult, ...] = _spec(**_many(LevelResult))
    forecast_agreement: Mapping[str, JSON] = _spec()
    max_safe_sparsity: float | None = _spec()

    def judged_levels(self, target_sparsity: float) -> list[LevelResult]:
        """The levels the gate grades (:func:`judged_level_indices`)."""
        keys = [(lv.sparsity, lv.supplied) for lv in self.levels]
        return [self.levels[i] for i in judged_level_indices(keys, target_sparsity)]


# ---------------------------------------------------------------------------- gate
@_record
class GateCheck(Record):
    """One policy check with its outcome (``pass``/``fail``/``inconclusive``/``undefined``)."""

    _WHAT: ClassVar[str] = "gate check"
    name: str = _spec()
    target: str | None = _spec()
    group: str | None = _spec()
    sparsity: float | None = _spec()
    value: float | None = _spec()
    ci: tuple[float, float] | None = _spec(**_PAIR, optional=True)
    limit: float = _spec()
    outcome: str = _spec()
    detail: str = _spec()
    width: float | None = _spec(optional=True)
    n_eval: int | None = _spec(optional=True)
    n_needed: int | None = _spec(optional=True)
    ci_method: str | None = _spec(optional=True)
    cells: Sequence[JSON] | None = _spec(optional=True)
    group_value: str = _spec(optional=True)
    model: str = _spec(optional=True)


@_record
class GateResult(Record):
    """The gate decision: every check, the blocking ones' texts, and the policy judged by."""

    _WHAT: ClassVar[str] = "gate"
    passed: bool = _spec()
    mode: str = _spec()
    policy: Mapping[str, JSON] = _spec()
    checks: tuple[GateCheck, ...] = _spec(**_many(GateCheck))
    counts: Mapping[str, int] = _spec(optional=True)
    failures: tuple[str, ...] = _spec(**_STRINGS)
    notes: tuple[str, ...] = _spec(**_STRINGS, optional=True)


@_record
class Verdict(Record):
    """The one-line answer: passed, the headline, the forecast risk, the max safe sparsity."""

    _WHAT: ClassVar[str] = "verdict"
    passed: bool = _spec()
    headline: str = _spec()
    forecast: str = _spec()
    max_safe_sparsity: float | None = _spec()


# ---------------------------------------------------------------------------- report
@_record
class Inputs(Record):
    """What was audited and how: model, data, task, columns, splits, runtime, seeds."""

    _WHAT: ClassVar[str] = "inputs"
    model: Mapping[str, JSON] = _spec()
    data: Mapping[str, JSON] = _spec()
    n_samples: int = _spec()
    task: str = _spec()
    targets: tuple[str, ...] = _spec(**_STRINGS)
    groups: tuple[str, ...] = _spec(**_STRINGS)
    splits: Mapping[str, JSON] = _spec()
    preprocessing: Mapping[str, JSON] = _spec()
    device: str = _spec()
    precision: str = _spec()
    world_size: int = _spec(optional=True)
    seed: int = _spec()
    bootstrap: int = _spec()
    uncertainty_band: Sequence[float] = _spec()
    thresholds: Mapping[str, Mapping[str, float]] = _spec()
    skipped_images: Sequence[Mapping[str, str]] = _spec()


@_record
class Report(Record):
    """A whole audit's results: what ``run_audit`` returns and report.json holds."""

    _WHAT: ClassVar[str] = "report"
    schema_version: str = _spec()
    tool: Mapping[str, str] = _spec()
    created: str = _spec(optional=True)
    verdict: Verdict = _spec(**_one(Verdict), optional=True)
    inputs: Inputs = _spec(**_one(Inputs))
    dense: ModelMetrics = _spec(**_one(ModelMetrics))
    forecast: Forecast = _spec(**_one(Forecast))
    susceptible: Sequence[Mapping[str, JSON]] = _spec()
    gallery: Sequence[Mapping[str, JSON]] = _spec(optional=True)
    calibration_curves: Mapping[str, JSON] = _spec(optional=True)
    uncertainty_histograms: Mapping[str, JSON] = _spec(optional=True)
    validation: Validation | None = _spec(**_maybe(Validation))
    gate: GateResult = _spec(**_one(GateResult))
    warnings: tuple[str, ...] = _spec(**_STRINGS, optional=True)

    @property
    def passed(self) -> bool:
        """The gate's decision."""
        return bool(self.gate.passed)

    def judged_levels(self) -> list[LevelResult]:
        """The validation levels the gate graded (none without validation)."""
        if self.validation is None:
            return []
        target = self.gate.policy.get("target_sparsity")
        if not isinstance(target, int | float):
            target = self.forecast.target_sparsity if self.forecast.target_sparsity else 0.0
        return self.validation.judged_levels(float(target))


__all__ = [
    "ABSENT",
    "BiasAmplification",
    "CellStats",
    "Estimate",
    "Forecast",
    "ForecastPair",
    "GateCheck",
    "GateResult",
    "GroupChange",
    "GroupResult",
    "Inputs",
    "LevelAccuracy",
    "LevelResult",
    "ModelMetrics",
    "Record",
    "Report",
    "TargetDelta",
    "TargetMetrics",
    "Validation",
    "Verdict",
    "judged_level_indices",
]
