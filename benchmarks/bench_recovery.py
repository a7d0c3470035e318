"""Does the default recovery recover? ResNet18 on real digit scans at 0.9 (issue 15, point 4).

Inputs (seeded, offline): scikit-learn's 1,797 handwritten digit scans (``load_digits``)
upsampled to ``--size``×``--size`` RGB (``tests/digits.py``), split into 500 test, 300 val
and up to 997 train images drawn from one permutation, so every audit sees the same test and
val images. A torchvision ResNet18 (random init, 10 classes) is trained on the 997 train
scans (SGD, one-cycle LR, ``--dense-steps`` random batches of 64) and saved with
``audit.save_checkpoint``.

Then the real tool (``run_audit``, one level at ``--sparsity``, global magnitude pruning)
audits it with ``--recovery none`` and ``bn`` (neither uses the train split) and with the
default ``--recovery finetune`` on train splits of ``--train-sizes`` images: 449, 450 and
448 leave a remainder of 1, 2 and 0 images in batches of 64 (the default fine-tuning batch
size), the case issue 15 traced the failures to. For each it prints dense and pruned top-1
accuracy on the 500 test scans, the change, and the wall time of the audit.

One thread (``torch.set_num_threads(1)``), CPU. A run at 32×32 takes ~10 min on 2 shared
cores, most of it the three fine-tuning runs (300 optimiser steps of ResNet18 each);
``--keep DIR`` keeps the data and the trained checkpoint there and reuses them, so the
train sizes can be run one invocation at a time.

Run: ``uv run python benchmarks/bench_recovery.py`` (``--size 32 --train-sizes 449,450,448
--dense-steps 400 [--recoveries none,bn,finetune] [--keep DIR] [--json FILE]``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# See bench_pipeline.py: sleeping OpenMP waits keep timings stable on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audit import AuditConfig, run_audit, save_checkpoint  # noqa: E402
from tests.digits import make_digits_npz, train_dense  # noqa: E402

ARCH = "torchvision:resnet18"
N_VAL, N_TEST, N_TRAIN_MAX = 300, 500, 997


def dense_checkpoint(root: Path, *, size: int, steps: int, seed: int) -> tuple[Path, float]:
    """Train (or reuse) the dense ResNet18; returns its path and the training seconds."""
    ckpt = root / f"resnet18-{size}px-{steps}steps-seed{seed}.pt"
    if ckpt.is_file():
        return ckpt, 0.0
    data = make_digits_npz(root / f"data-{size}-dense", n_train=N_TRAIN_MAX, size=size, seed=seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = train_dense(torchvision.models.resnet18(num_classes=10), data, steps=steps, seed=seed)
    seconds = time.perf_counter() - start
    save_checkpoint(
        ckpt,
        model,
        arch=ARCH,
        outputs=[str(d) for d in range(10)],
        task="multiclass",
        preprocess={"image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3},
    )
    return ckpt, seconds


def audit_once(
    root: Path, ckpt: Path, *, size: int, n_train: int, recovery: str, sparsity: float, seed: int
) -> dict[str, float]:
    """One ``run_audit`` at one sparsity: test accuracies (from predictions.npz) and time."""
    data = make_digits_npz(root / f"data-{size}-{n_train}", n_train=n_train, size=size, seed=seed)
    out = root / f"out-{size}-{n_train}-{recovery}"
    cfg = AuditConfig(
        model=ckpt,
        data=data,
        out=out,
        groups=("heavy_ink",),
        sparsities=(sparsity,),
        recovery=recovery,
        bootstrap=100,
        device="cpu",
        formats=("json",),
    )
    start = time.perf_counter()
    result = run_audit(cfg)
    seconds = time.perf_counter() - start
    with np.load(out / "predictions.npz") as z:
        truth = z["labels"].argmax(axis=1)
        dense = float((z["dense_probs"].argmax(axis=1) == truth).mean())
        pruned = float((z["pruned_probs"][0].argmax(axis=1) == truth).mean())
    (level,) = result.report["validation"]["levels"]
    return {
        "n_train": n_train,
        "remainder": n_train % 64,
        "recovery": recovery,
        "dense": dense,
        "pruned": pruned,
        "change": pruned - dense,
        "one_shot_bn": level["accuracy"].get("one_shot_bn"),
        "achieved_sparsity": level["achieved_sparsity"],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per audit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-sizes", default="449,450,448")
    parser.add_argument("--dense-steps", type=int, default=400)
    parser.add_argument("--recoveries", default="none,bn,finetune")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep data and checkpoint here (reused)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [int(n) for n in args.train_sizes.split(",")]
    recoveries = args.recoveries.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        ckpt, train_s = dense_checkpoint(
            root, size=args.size, steps=args.dense_steps, seed=args.seed
        )
        print(f"dense ResNet18, {args.size}x{args.size}, {args.dense_steps} steps: ", end="")
        print(f"trained in {train_s:.0f} s" if train_s else f"reused {ckpt}", flush=True)
        rows = []
        print("| recovery | train images (rem. of 64) | dense | pruned | change | one-shot + BN "
              "| audit wall time |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for recovery in recoveries:
            # none and bn never read the train split: one audit each.
            for n_train in sizes if recovery == "finetune" else sizes[:1]:
                row = audit_once(
                    root, ckpt, size=args.size, n_train=n_train, recovery=recovery,
                    sparsity=args.sparsity, seed=args.seed,
                )
                rows.append(row)
                bn = row["one_shot_bn"]
                train = f"{n_train} ({n_train % 64})" if recovery == "finetune" else "—"
                print(
                    f"| {recovery} | {train} | {row['dense']:.3f} | {row['pruned']:.3f} | "
                    f"{row['change']:+.3f} | {'—' if bn is None else f'{bn:.3f}'} | "
                    f"{row['seconds']:.0f} s |",
                    flush=True,
                )
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"keep": str(args.keep),
                                 "json": str(args.json)}, "train_seconds": train_s,
                                 "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
