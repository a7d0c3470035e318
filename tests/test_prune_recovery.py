"""Recovery defaults: balanced training batches, step budget, LR schedule, failure warning."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audit import AuditConfig, Policy, inference, run_audit
from audit.pruning import finetune_budget, learning_rate_factor
from tests.conftest import TINY_ARCH


def _runtime() -> inference.Runtime:
    return inference.Runtime(
        device=torch.device("cpu"),
        precision="fp32",
        batch_size=64,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        calib_batch_size=64,
    )


@pytest.mark.parametrize("n", [450, 449, 448, 130, 66, 65, 64, 3])
def test_training_batches_have_no_short_remainder(n: int) -> None:
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    targets = np.arange(n)
    batches = list(inference.training_batches(images, targets, _runtime(), epoch=0, seed=0))
    sizes = [len(y) for _, y in batches]
    assert len(sizes) == math.ceil(n / 64)
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= 64
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(n))
    if n >= 64:
        assert min(sizes) >= 32  # never the old 1–2-sample last batch


@pytest.mark.parametrize("counts", [(67, 63), (130, 0), (1, 129)])
def test_sharded_training_batches_are_the_one_process_batches(counts: tuple[int, int]) -> None:
    # Under torchrun each rank gets its rows of every one-process batch, with the weight
    # that turns averaged per-rank mean losses into the batch's mean loss.
    n = sum(counts)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 1, 1).clone()
    targets = np.arange(n)
    whole = list(inference.training_batches(images, targets, _runtime(), epoch=1, seed=5))
    parts = []
    for rank in range(2):
        lo = sum(counts[:rank])
        shard = inference.Shard(images[lo : lo + counts[rank]], counts, rank)
        runtime = dataclasses.replace(_runtime(), dist=inference.Dist(rank=rank, world=2))
        local = targets[lo : lo + counts[rank]]
        parts.append(list(inference.training_batches(shard, local, runtime, epoch=1, seed=5)))
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    for (x, y), (x0, y0, w0), (x1, y1, w1) in zip(whole, *parts, strict=True):
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())
        # Each rank's rows come in the batch's own order, with their own images.
        for xr, yr in ((x0, y0), (x1, y1)):
            assert yr.tolist() == [v for v in y.tolist() if v in set(yr.tolist())]
            torch.testing.assert_close(xr, x[[y.tolist().index(v) for v in yr.tolist()]])
        assert w0 == 2 * len(y0) / len(y) and w1 == 2 * len(y1) / len(y)
        assert w0 + w1 == pytest.approx(2.0)


def test_training_batches_refuse_a_single_sample() -> None:
    with pytest.raises(ValueError, match=r"at least 2 training samples.*has 1"):
        list(
            inference.training_batches(
                torch.zeros(1, 3, 4, 4, dtype=torch.uint8), np.zeros(1), _runtime(), epoch=0, seed=0
            )
        )


def test_finetune_budget_is_a_floor_of_steps_scaled_to_the_split() -> None:
    assert finetune_budget(11) == 300  # ~700 images in batches of 64: revisit to the floor
    assert finetune_budget(2500) == 5000  # a large split gets two epochs
    assert finetune_budget(11, steps=40) == 40 and finetune_budget(11, epochs=3) == 33


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    total = 200
    factors = [learning_rate_factor(s, total) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] < 0.001
    assert learning_rate_factor(0, 1) == 1.0


def test_a_fine_tuned_level_worse_than_one_shot_bn_is_warned_about(
    tiny_audit_inputs, tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    cfg = AuditConfig(
        model=ckpt,
        data=data,
        out=tmp_path / "out",
        arch=TINY_ARCH,
        groups=("tinted",),
        sparsities=(0.5,),
        recovery="finetune",
        finetune_steps=10,
        finetune_lr=50.0,
        bootstrap=20,
        device="cpu",
        policy=Policy(min_group_size=5, target_sparsity=0.5),
    )
    result = run_audit(cfg)
    (level,) = result.report["validation"]["levels"]
    acc = level["accuracy"]
    assert acc["pruned"] < acc["one_shot_bn"]
    assert any("below one-shot pruning + BatchNorm" in w for w in result.report["warnings"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### Levels" in md and "one-shot + BN" in md
