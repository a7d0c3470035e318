"""Pure array-in/number-out metric functions: group rates, gaps, BA, ECE, R², bootstrap.

Owns: every formula of SPEC §4 and the statistics of §6.3-§6.4, as functions of numpy
arrays that return numbers or arrays. Group metrics go through one disaggregation engine
(:func:`confusion_counts` -> :func:`rates_from_counts` -> :func:`between_groups`); the
paired bootstrap reweights those counts with :func:`bootstrap_weights`.

Must not: read or write files, touch torch or devices, print, log, or know column names.

NaN conventions (SPEC §4.7, "undefined is not zero"): a rate whose denominator is 0 is NaN;
a gap over cells ignores NaN cells and is NaN with fewer than 2 defined cells; functions
returning a single verdict object (:class:`BiasAmplification`) use ``value=None`` plus a
``reason`` instead. Callers turn NaN into "not estimable" with a reason.
"""

from __future__ import annotations

from .bias_amplification import (
    BiasAmplification,
    bias_amplification,
    bias_amplification_from_counts,
)
from .bootstrap import (
    abs_change_projection_ci,
    bootstrap_weights,
    include_point,
    percentile_ci,
    range_change_box_ci,
)
from .calibration import (
    calibration_curve,
    ece_from_binned,
    expected_calibration_error,
    multiclass_expected_calibration_error,
)
from .groups import (
    STATISTICS,
    accuracy_gap,
    between_groups,
    binned_sums,
    confusion_counts,
    demographic_parity_difference,
    encode_cells,
    equalized_odds_difference,
    equalized_odds_from_rates,
    fnr_gap,
    fpr_gap,
    rates_by_group,
    rates_from_counts,
    selection_rate_gap,
    signed_gap,
    tpr_gap,
)
from .interdependence import interdependence_r2
from .ranking import auroc, lift_at_k, precision_at_k, recall_at_k
from .thresholds import (
    calibrate_thresholds,
    underprediction_from_counts,
    underprediction_ratio,
)
from .uncertainty import (
    margin_uncertain_mask,
    probability_histogram,
    sample_susceptibility,
    susceptibility,
    uncertain_mask,
    uncertainty_rate,
)

__all__ = [
    "STATISTICS",
    "BiasAmplification",
    "abs_change_projection_ci",
    "accuracy_gap",
    "auroc",
    "between_groups",
    "bias_amplification",
    "bias_amplification_from_counts",
    "bootstrap_weights",
    "calibrate_thresholds",
    "binned_sums",
    "calibration_curve",
    "confusion_counts",
    "demographic_parity_difference",
    "ece_from_binned",
    "encode_cells",
    "equalized_odds_difference",
    "equalized_odds_from_rates",
    "expected_calibration_error",
    "fnr_gap",
    "fpr_gap",
    "include_point",
    "interdependence_r2",
    "lift_at_k",
    "margin_uncertain_mask",
    "multiclass_expected_calibration_error",
    "percentile_ci",
    "probability_histogram",
    "precision_at_k",
    "range_change_box_ci",
    "rates_by_group",
    "rates_from_counts",
    "recall_at_k",
    "sample_susceptibility",
    "selection_rate_gap",
    "signed_gap",
    "susceptibility",
    "tpr_gap",
    "uncertain_mask",
    "uncertainty_rate",
    "underprediction_from_counts",
    "underprediction_ratio",
]
