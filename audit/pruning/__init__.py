"""Pruning a copy of the model and recovering it (SPEC §6.1–6.2).

Owns, by module:

- ``scope``: which weights are prunable (Conv/Linear weights, the classifier included;
  never biases, norms or embeddings; ``--exclude``), and independent copies to prune;
- ``masks``: magnitude (global, layerwise) and N:M keep-masks, applying them, sparsity
  statistics overall and per layer;
- ``methods``: the registry of pruning methods (``global``, ``layerwise``, ``N:M``,
  ``structured``), each a small class;
- ``structured``: channel/filter removal through Torch-Pruning (a smaller model);
- ``batchnorm``: re-estimating BatchNorm running statistics;
- ``finetune``: gradual magnitude pruning with fine-tuning, the one training loop;
- ``recovery``: the registry of recoveries (``none``, ``bn``, ``finetune``).

Must not: compute metrics, format reports, print, or choose a device (callers pass one).
The loaded (dense) model is never modified: every method and recovery works on a copy.
"""

from __future__ import annotations

from audit.pruning.batchnorm import recalibrate_batchnorm
from audit.pruning.finetune import (
    cubic_sparsity_schedule,
    finetune_budget,
    gradual_prune_finetune,
    learning_rate_factor,
)
from audit.pruning.masks import (
    LayerSparsity,
    PruneStats,
    apply_masks,
    magnitude_masks,
    nm_masks,
    sparsity_stats,
)
from audit.pruning.methods import (
    PruningMethod,
    get_method,
    method_choices,
    prune_copy,
    register_method,
)
from audit.pruning.recovery import (
    Recovery,
    RecoveryContext,
    get_recovery,
    recovery_choices,
    register_recovery,
)
from audit.pruning.reparam import fold_pruning_reparametrisations
from audit.pruning.scope import prunable_parameters

__all__ = [
    "fold_pruning_reparametrisations",
    "LayerSparsity",
    "PruneStats",
    "PruningMethod",
    "Recovery",
    "RecoveryContext",
    "apply_masks",
    "cubic_sparsity_schedule",
    "finetune_budget",
    "get_method",
    "get_recovery",
    "gradual_prune_finetune",
    "learning_rate_factor",
    "magnitude_masks",
    "method_choices",
    "nm_masks",
    "prunable_parameters",
    "prune_copy",
    "recalibrate_batchnorm",
    "recovery_choices",
    "register_method",
    "register_recovery",
    "sparsity_stats",
]
