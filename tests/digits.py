"""Real small datasets for recovery tests and benchmarks: scikit-learn's handwritten digits.

scikit-learn ships the 1,797 8×8 digit scans (``load_digits``), so nothing is downloaded.
``make_digits_npz`` upsamples them to 32×32 RGB and writes a tensor-bundle dataset
(``bundle.npz``) with the digit as a multiclass target and a *real* image property as the
protected attribute: ``heavy_ink`` (the scan's total ink above the median), which the digit
classes do not share evenly. ``n_train`` controls the remainder of the last batch of 64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

BATCH = 64


def digits_arrays(size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images NHWC uint8, digit labels, heavy_ink group)`` for all 1,797 scans."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    big = nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    grey = (big.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    images = np.repeat(grey[..., None], 3, axis=3)
    ink = digits.images.reshape(len(digits.images), -1).sum(axis=1)
    heavy = (ink > np.median(ink)).astype(np.int64)
    return images, digits.target.astype(np.int64), heavy


def make_digits_npz(
    root: Path,
    *,
    n_train: int,
    n_val: int = 300,
    n_test: int = 500,
    seed: int = 0,
    size: int = 32,
) -> Path:
    """Write a train/val/test digits bundle with exactly ``n_train`` train images.

    The split rows are drawn from one seeded permutation, test rows first, then val, then
    train, so bundles with equal ``seed``, ``n_val`` and ``n_test`` share their test and
    val images whatever ``n_train`` is. ``size=8`` keeps the native scans.
    """
    images, labels, heavy = digits_arrays(size)
    order = np.random.default_rng(seed).permutation(len(labels))
    if n_train + n_val + n_test > len(order):
        raise ValueError(f"only {len(order)} digit scans; asked for {n_train + n_val + n_test}")
    test, val = order[:n_test], order[n_test : n_test + n_val]
    order = np.concatenate([order[n_test + n_val : n_test + n_val + n_train], val, test])
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(
        root / "bundle.npz",
        images=images[order],
        labels=labels[order][:, None],
        groups=heavy[order][:, None],
        label_names=np.array(["digit"]),
        group_names=np.array(["heavy_ink"]),
        split=split,
    )
    return root


class DigitsCNN(nn.Module):
    """Stride-2 Conv-BN-ReLU blocks, global pool, Linear.

    The default four blocks (~190k weights) end on 2×2 maps for 32×32 inputs; ``widths=(3,
    16, 32, 64)`` on the native 8×8 scans (~24k weights) ends on 1×1 maps, where BatchNorm
    in train mode normalises each channel over the batch alone.
    """

    def __init__(
        self, num_outputs: int = 10, widths: tuple[int, ...] = (3, 32, 64, 96, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, stride=2), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def digits_cnn(num_outputs: int = 10, **kwargs: object) -> nn.Module:
    """``--arch tests.digits:digits_cnn``."""
    return DigitsCNN(num_outputs)


def small_digits_cnn(num_outputs: int = 10, **kwargs: object) -> nn.Module:
    """``--arch tests.digits:small_digits_cnn``: three blocks for the native 8×8 scans."""
    return DigitsCNN(num_outputs, widths=(3, 16, 32, 64))


def train_dense(
    model: nn.Module, root: Path, *, steps: int, mean: float = 0.5, std: float = 0.25, seed: int = 0
) -> nn.Module:
    """Train on the bundle's train split with full batches of 64 (drop the remainder)."""
    torch.manual_seed(seed)
    with np.load(root / "bundle.npz") as z:
        keep = z["split"] == "train"
        x = torch.from_numpy(z["images"][keep]).permute(0, 3, 1, 2).contiguous().float() / 255.0
        y = torch.from_numpy(z["labels"][keep][:, 0])
    x = (x - mean) / std
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:BATCH]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    return model.eval()
