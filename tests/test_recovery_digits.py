"""Default ``--recovery finetune`` on a real small data set recovers at 0.9 (issue 15, point 4).

scikit-learn's handwritten digits (the native 8×8 scans, 10 classes, one multiclass target),
a small CNN whose last BatchNorm sees 1×1 maps (there BatchNorm in train mode normalises
each channel over the batch alone, the case where a 1–2-sample batch breaks it), trained
once on 997 scans, then audited at 0.9 sparsity with the default fine-tuning on train splits
of ``7 * b + r`` images (``b`` the default fine-tuning batch size, ``r`` = 1, 2 and 0). The
test and validation images are the same in every audit.

Run against the recovery before issue 15 (batches of 64 keeping the remainder, two epochs at
lr 1e-3, pruning until the last step, no BatchNorm re-estimation), this file fails: the
1-remainder split stops with "Expected more than 1 value per channel when training", the
2- and 0-remainder splits lose far more than 0.02.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from audit import AuditConfig, inference, run_audit, save_checkpoint
from tests.digits import make_digits_npz, small_digits_cnn, train_dense

pytestmark = pytest.mark.slow

ARCH = "tests.digits:small_digits_cnn"
#: Fine-tuning batch size with default settings (``training_batches`` caps the
#: calibration batch size, 128 unless ``--batch-size`` is given, at 64).
BATCH = min(inference.CALIB_BATCH_SIZE, 64)
SPARSITY = 0.9
#: Issue 15's acceptance: default fine-tuning loses at most this much accuracy at 0.9.
MAX_LOSS = 0.02


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Other helpers and benchmarks share the 2 cores; restored for the rest of the suite.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained (seeded) on 997 digit scans, saved as a prune-audit checkpoint."""
    root = tmp_path_factory.mktemp("digits")
    dense_data = make_digits_npz(root / "dense", n_train=997, size=8)
    torch.manual_seed(0)
    model = train_dense(small_digits_cnn(), dense_data, steps=400)
    return save_checkpoint(
        root / "model.pt",
        model,
        arch=ARCH,
        outputs=[str(d) for d in range(10)],
        task="multiclass",
        preprocess={"image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3},
    )


def _accuracies(ckpt: Path, n_train: int, out: Path, recovery: str) -> tuple[float, float]:
    """Dense and pruned top-1 accuracy on the 500 test scans, from ``predictions.npz``."""
    data = make_digits_npz(out.parent / f"data-{n_train}", n_train=n_train, size=8)
    cfg = AuditConfig(
        model=ckpt,
        data=data,
        out=out,
        arch=ARCH,
        groups=("heavy_ink",),
        sparsities=(SPARSITY,),
        recovery=recovery,
        bootstrap=50,
        device="cpu",
        formats=("json",),
    )
    result = run_audit(cfg)
    with np.load(out / "predictions.npz") as z:
        assert z["sparsities"].tolist() == [SPARSITY]
        truth = z["labels"].argmax(axis=1)
        dense = float((z["dense_probs"].argmax(axis=1) == truth).mean())
        pruned = float((z["pruned_probs"][0].argmax(axis=1) == truth).mean())
    (level,) = result.report["validation"]["levels"]
    assert level["accuracy"]["dense"] == pytest.approx(dense)
    assert level["accuracy"]["pruned"] == pytest.approx(pruned)
    return dense, pruned


@pytest.mark.parametrize("remainder", [1, 2, 0])
def test_default_finetune_loses_at_most_0_02_at_0_9(
    digits_checkpoint: Path, tmp_path: Path, remainder: int
) -> None:
    n_train = 7 * BATCH + remainder
    dense, pruned = _accuracies(digits_checkpoint, n_train, tmp_path / "out", "finetune")
    assert dense >= 0.95  # a model worth pruning (0.98 when measured)
    # Measured: 0.98 -> 0.980 / 0.976 / 0.978 for remainders 1 / 2 / 0.
    assert dense - pruned <= MAX_LOSS, f"{n_train} train images: accuracy {dense} -> {pruned}"


def test_the_same_pruning_without_recovery_loses_more(
    digits_checkpoint: Path, tmp_path: Path
) -> None:
    # What the fine-tuning test guards against: at 0.9 this model is far from its dense
    # accuracy when nothing recovers it (measured: 0.98 -> 0.82).
    dense, pruned = _accuracies(digits_checkpoint, 7 * BATCH, tmp_path / "out", "none")
    assert dense - pruned > 5 * MAX_LOSS
