"""Gradual magnitude pruning with fine-tuning (recovery ``finetune``): one training loop.

Owns: the cubic sparsity schedule, the optimiser-step budget (a floor of steps, scaled up
with the train split), the learning-rate schedule (linear warm-up, then cosine decay),
re-applying masks after every step, and re-estimating BatchNorm statistics once training is
over. Distributing it takes a ``wrap`` (e.g. DistributedDataParallel) and weighted batches.

How a run goes (:func:`gradual_prune_finetune`). The budget is ``N`` optimiser steps
(:func:`finetune_budget`: ``steps``, or ``epochs`` passes, or by default a floor of 300
steps and at least two epochs). Masks are recomputed by the pruning method at steps ``0, p,
2p, ... <= P`` (``P = floor(0.5 * (N - 1))``, ``p = prune_every``, default ``max(1, P //
10)``: about ten pruning steps in the first half), each time to
:func:`cubic_sparsity_schedule` with ``T`` the last of those steps, so the last one prunes
to exactly the target and the second half fine-tunes at it. Masks are re-applied after
every optimiser step, so pruned weights stay exactly zero. If the batches run out before
``N`` steps, the model is pruned to the target at the end.

A structural method (``structured``) prunes once, before the first step, and the whole
budget fine-tunes the smaller model: each structural step replaces the parameters (a new
module from Torch-Pruning's dependency graph), so the optimiser state and a
DistributedDataParallel wrapper would have to be rebuilt at every one; that is not done.

The optimiser is SGD with Nesterov momentum 0.9, no weight decay, and the learning rate
``lr * learning_rate_factor(step, N)``. SGD rather than Adam(W) because Adam's per-weight
normalisation moves every weight by about ``lr`` per step whatever its gradient, scrambling
the magnitudes that pruning ranks; no weight decay because it would shrink weights towards
the threshold between pruning steps. The model trains in train mode; afterwards BatchNorm
running statistics are re-estimated on the train split (a training run leaves them as a
momentum average over weights that kept changing).

Must not: choose a device (the caller passes it), build batches, or print.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from audit.pruning.batchnorm import recalibrate_batchnorm, set_training
from audit.pruning.masks import PruneStats, apply_masks, sparsity_stats
from audit.pruning.methods import PruningMethod, get_method
from audit.pruning.scope import check_fraction, copy_module, prunable_parameters

__all__ = [
    "DEFAULT_FINETUNE_LR",
    "MIN_FINETUNE_STEPS",
    "cubic_sparsity_schedule",
    "finetune_budget",
    "gradual_prune_finetune",
    "learning_rate_factor",
]

# From the measurements reported in issue 15 (32×32 digit scans, torchvision ResNet18,
# ~700 train images): 2 epochs at lr 1e-3 lost 0.26–0.49 accuracy at 0.9 sparsity, while
# 15 epochs (~160 steps) at lr 0.01 lost 0.00–0.01. The floor of 300 steps at lr 0.01 with
# warm-up and cosine decay is set above that budget; it is not yet re-measured here.
DEFAULT_FINETUNE_LR = 0.01
MIN_FINETUNE_STEPS = 300
DEFAULT_FINETUNE_EPOCHS = 2
WARMUP_FRACTION = 0.05
# Masks reach the target after this fraction of the steps; the rest fine-tunes at it.
PRUNE_FRACTION = 0.5


def cubic_sparsity_schedule(step: int, total_steps: int, *, initial: float, final: float) -> float:
    """Sparsity at ``step`` of gradual pruning (Zhu & Gupta's cubic schedule).

    ``s(t) = s_f - (s_f - s_i) * (1 - t / T) ** 3`` with ``t`` clipped to ``[0, T]``: fast
    pruning early, while the network can still recover, and slow near the target. ``T = 0``
    gives ``s_f``.

    Parameters
    ----------
    step : int
        ``t``, the current step (>= 0).
    total_steps : int
        ``T``, the step at which the target is reached (>= 0).
    initial : float
        ``s_i``, sparsity at step 0, in ``[0, 1)``.
    final : float
        ``s_f``, target sparsity, in ``[initial, 1)``.

    Returns
    -------
    float
        The sparsity to prune to at ``step``.

    Raises
    ------
    ValueError
        If a step is negative, a sparsity is outside ``[0, 1)`` or ``initial > final``.
    """
    if step < 0 or total_steps < 0:
        raise ValueError(
            f"step and total_steps must be >= 0; got step={step!r}, total_steps={total_steps!r}"
        )
    initial = check_fraction(initial, "initial sparsity")
    final = check_fraction(final, "final sparsity")
    if initial > final:
        raise ValueError(
            f"initial sparsity {initial!r} is above final sparsity {final!r}; gradual pruning "
            "only removes weights"
        )
    if total_steps == 0 or step >= total_steps:
        return final
    value = final - (final - initial) * (1.0 - step / total_steps) ** 3
    return min(max(value, initial), final)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNGs for the block and restore the caller's RNG state afterwards."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also reseed (and so change)
            # the caller's accelerator RNG, which this block does not fork.
            torch.random.default_generator.manual_seed(seed)
            yield
        return
    index = device.index
    if index is None:
        index = torch.accelerator.current_device_index()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.manual_seed(seed)
        yield


def _count_steps(batches: Callable[[int], Iterable[Any]]) -> tuple[Iterable[Any], int]:
    first = batches(0)
    if isinstance(first, Sized):
        return first, len(first)
    # One extra pass over epoch 0 only to count it; a sized iterable avoids this.
    n = sum(1 for _ in first)
    return batches(0), n


def finetune_budget(
    steps_per_epoch: int, *, steps: int | None = None, epochs: int | None = None
) -> int:
    """Optimiser steps of one fine-tuning run.

    ``steps`` if given, else ``epochs * steps_per_epoch`` if given, else
    ``max(MIN_FINETUNE_STEPS, DEFAULT_FINETUNE_EPOCHS * steps_per_epoch)``: a small train
    split is revisited until the floor is reached, a large one gets two epochs.
    """
    if steps is not None:
        return steps
    if epochs is not None:
        return epochs * steps_per_epoch
    return max(MIN_FINETUNE_STEPS, DEFAULT_FINETUNE_EPOCHS * steps_per_epoch)


def learning_rate_factor(step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    Linear warm-up over the first ``w = max(1, round(0.05 * total))`` steps,
    ``(step + 1) / w``, then cosine decay ``0.5 * (1 + cos(pi * (step - w) / (total - w)))``
    towards 0 at the last step.
    """
    warm = max(1, round(WARMUP_FRACTION * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _check_options(
    sparsity: float,
    initial_sparsity: float,
    steps: int | None,
    epochs: int | None,
    lr: float,
    prune_every: int | None,
) -> tuple[float, float]:
    sparsity = check_fraction(sparsity, "sparsity")
    initial_sparsity = check_fraction(initial_sparsity, "initial_sparsity")
    if initial_sparsity > sparsity:
        raise ValueError(
            f"initial_sparsity {initial_sparsity!r} is above the target sparsity {sparsity!r}"
        )
    for name, value in (("steps", steps), ("epochs", epochs), ("prune_every", prune_every)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be None or an integer >= 1; got {value!r}")
    if steps is not None and epochs is not None:
        raise ValueError(f"give steps or epochs, not both; got steps={steps}, epochs={epochs}")
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    return sparsity, initial_sparsity


def gradual_prune_finetune(
    model: nn.Module,
    sparsity: float,
    *,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = DEFAULT_FINETUNE_LR,
    seed: int = 0,
    method: str | PruningMethod = "global",
    exclude: Sequence[str] = (),
    initial_sparsity: float = 0.0,
    prune_every: int | None = None,
    recalibrate: Callable[[], Iterable[Any]] | None = None,
    example_input: torch.Tensor | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[nn.Module, PruneStats]:
    """Prune a copy of ``model`` gradually to ``sparsity`` while fine-tuning it.

    The schedule, the optimiser and the final BatchNorm re-estimation are described in the
    module docstring.

    Parameters
    ----------
    model : torch.nn.Module
        The dense model; never modified.
    sparsity : float
        Target sparsity ``s_f`` in ``[0, 1)``.
    batches : callable
        ``batches(epoch)`` returns an iterable of ``(x, y)`` on ``device``; sized is best
        (else epoch 0 is iterated once more to count its steps, and every epoch is assumed
        as long). Under data parallelism ``(x, y, w)``: this rank's rows of a global batch
        and ``w`` = world size × rows here / rows of the batch, which scales the mean loss
        so that gradients averaged over the ranks are the global batch's.
    loss_fn : callable
        ``loss_fn(model(x), y)`` returns a scalar tensor (a mean over the rows).
    steps, epochs : int, optional
        The budget in optimiser steps, or in passes over ``batches`` (not both).
    lr : float, default=0.01
        Peak SGD learning rate.
    seed : int, default=0
        Seeds torch's RNGs inside the call (the caller's RNG state is restored).
    method, exclude : PruningMethod or its registered name, and ``fnmatch`` patterns
        How to prune (default ``"global"``), and weights to leave dense.
    initial_sparsity, prune_every : float and int, optional
        ``s_i`` (default 0), and optimiser steps between pruning steps.
    recalibrate : callable, optional
        ``recalibrate()`` returns batches for the final BatchNorm re-estimation.
    example_input : torch.Tensor, optional
        An input batch on ``device``, needed by structural methods.
    wrap : callable, optional
        ``wrap(copy)`` returns the module that trains (e.g. the copy in
        ``DistributedDataParallel``); masks and the returned model use the copy itself.
    device : torch.device or str, default="cpu"
        Where the copy is trained and stays.
    progress : callable, optional
        ``progress(step, total_steps)`` after every optimiser step.

    Returns
    -------
    tuple of (torch.nn.Module, PruneStats)
        The fine-tuned pruned copy in eval mode, and its requested and achieved sparsity.

    Raises
    ------
    ValueError
        If a sparsity, the budget, ``lr`` or ``prune_every`` is out of range, or as the
        method's masks.
    """
    sparsity, initial_sparsity = _check_options(
        sparsity, initial_sparsity, steps, epochs, lr, prune_every
    )
    pruner = get_method(method)
    prunable_parameters(model, exclude=exclude)
    device = torch.device(device)
    with _seeded(seed, device):
        net, structural_stats = _starting_copy(model, pruner, sparsity, exclude, example_input)
        net = net.to(device)
        first_epoch, steps_per_epoch = _count_steps(batches)
        run = _Run(
            net=net,
            trained=wrap(net) if wrap is not None else net,
            pruner=pruner,
            plan=_Plan.make(steps_per_epoch, steps, epochs, prune_every, pruner.structural),
            lr=float(lr),
            loss_fn=loss_fn,
            exclude=tuple(exclude),
            sparsity=(initial_sparsity, sparsity),
        )
        run.train(first_epoch, batches, progress)
        if recalibrate is not None and run.step > 0:
            recalibrate_batchnorm(net, recalibrate(), device=device)
    if structural_stats is not None:
        return net, structural_stats
    assert run.masks is not None
    return net, sparsity_stats(net, run.masks, requested=sparsity, method=pruner.label)


def _starting_copy(
    model: nn.Module,
    pruner: PruningMethod,
    sparsity: float,
    exclude: Sequence[str],
    example_input: torch.Tensor | None,
) -> tuple[nn.Module, PruneStats | None]:
    """The copy that trains: the dense model's, or a structural method's smaller model."""
    if pruner.structural:
        return pruner.prune(model, sparsity, exclude=exclude, example_input=example_input)
    return copy_module(model), None


@dataclass(frozen=True)
class _Plan:
    """When a run prunes: at steps ``0, every, 2 * every, ... <= last_prune`` of ``total``."""

    total: int
    last_prune: int
    every: int
    gradual: bool

    @classmethod
    def make(
        cls,
        steps_per_epoch: int,
        steps: int | None,
        epochs: int | None,
        prune_every: int | None,
        structural: bool,
    ) -> _Plan:
        """The plan of a run over ``steps_per_epoch``-step epochs (none if they are empty)."""
        total = (
            finetune_budget(steps_per_epoch, steps=steps, epochs=epochs) if steps_per_epoch else 0
        )
        prune_end = int(PRUNE_FRACTION * (total - 1)) if total else 0
        every = prune_every if prune_every is not None else max(1, prune_end // 10)
        return cls(total, (prune_end // every) * every, every, not structural)

    def prunes_at(self, step: int) -> bool:
        """Whether masks are recomputed before optimiser step ``step``."""
        return self.gradual and step <= self.last_prune and step % self.every == 0


@dataclass
class _Run:
    """One fine-tuning run: the copy, what trains it, the optimiser and the current masks."""

    net: nn.Module
    trained: nn.Module
    pruner: PruningMethod
    plan: _Plan
    lr: float
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    exclude: tuple[str, ...]
    sparsity: tuple[float, float]  # (initial, final)
    masks: dict[str, torch.Tensor] | None = None
    pruned_to: float | None = None
    step: int = 0

    def __post_init__(self) -> None:
        self.optimiser = torch.optim.SGD(
            [p for p in self.net.parameters() if p.requires_grad],
            lr=self.lr,
            momentum=0.9,
            nesterov=True,
        )

    def prune(self, target: float) -> None:
        """Recompute the masks at ``target`` sparsity and zero the pruned weights."""
        self.masks = self.pruner.masks(self.net, target, exclude=self.exclude)
        apply_masks(self.net, self.masks)
        self.pruned_to = target

    def train(
        self,
        first_epoch: Iterable[tuple[torch.Tensor, ...]],
        batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """Train until the budget is spent or an epoch yields nothing; end in eval mode.

        A run whose batches ran out before the last pruning step is pruned to the target.
        """
        set_training(self.net, True)
        epoch = 0
        while self.step < self.plan.total:
            seen = 0
            for batch in first_epoch if epoch == 0 else batches(epoch):
                seen += 1
                self.train_step(batch)
                if progress is not None:
                    progress(self.step, self.plan.total)
                if self.step >= self.plan.total:
                    break
            epoch += 1
            if seen == 0:
                break
        final = self.sparsity[1]
        if self.plan.gradual and (self.pruned_to != final or self.masks is None):
            self.prune(final)
        set_training(self.net, False)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> None:
        """One optimiser step on ``batch``, pruning first when the plan says so."""
        x, y, *weight = batch
        if self.plan.prunes_at(self.step):
            initial, final = self.sparsity
            self.prune(
                cubic_sparsity_schedule(
                    self.step, self.plan.last_prune, initial=initial, final=final
                )
            )
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr * learning_rate_factor(self.step, self.plan.total)
        self.optimiser.zero_grad(set_to_none=True)
        out = self.trained(x)
        if not weight:
            loss = self.loss_fn(out, y)
        elif y.shape[0]:
            loss = self.loss_fn(out, y) * weight[0]
        else:
            # No rows of this batch here: a zero loss, so this rank still joins the
            # gradient all-reduce of the step (the mean of no rows would be NaN).
            loss = out.sum() * 0.0
        loss.backward()
        self.optimiser.step()
        if self.masks is not None:
            apply_masks(self.net, self.masks)
        self.step += 1
