"""Seeded synthetic inputs shared by the benchmarks (not part of the package).

``make_png_manifest`` writes a manifest-layout dataset of small PNGs; ``make_resnet18``
saves a torchvision ResNet18 with 3 outputs as a prune-audit checkpoint whose BatchNorm
statistics and classifier are fitted to that data, so its probabilities are spread out
like a trained model's (the cost of criteria, bootstrap and gallery depends on that).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TARGETS = ("red", "green", "blue")
GROUP = "tinted"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def synth_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(images NHWC uint8, labels (n, 3), group (n,))``.

    Smooth noise (so PNGs compress like photos, not like white noise) plus one coloured
    half-image per positive target; the protected group is a brightness shift.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 3))
    group = (rng.random(n) < 0.4).astype(np.int64)
    coarse = rng.integers(0, 90, size=(n, size // 8, size // 8, 3), dtype=np.uint8)
    images = coarse.repeat(8, axis=1).repeat(8, axis=2)
    images = images + rng.integers(0, 12, size=images.shape, dtype=np.uint8)
    h = size // 2
    images[labels[:, 0] == 1, :h, :, 0] += 120
    images[labels[:, 1] == 1, :, :h, 1] += 120
    images[labels[:, 2] == 1, h:, :, 2] += 120
    images[group == 1] += 25
    return images, labels, group


def make_png_manifest(root: Path, *, n: int = 3000, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/labels.csv`` and ``root/img/*.png``: 80% test, 20% val rows.

    Columns: ``image, split, red, green, blue, tinted``. No train split, so a ``check``
    decodes and runs every image (evaluation + calibration) and nothing else.
    """
    images, labels, group = synth_images(n, size, seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    split = np.where(np.random.default_rng(seed + 1).random(n) < 0.2, "val", "test")
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", *TARGETS, GROUP])
        for i in range(n):
            name = f"img/{i:06d}.png"
            Image.fromarray(images[i]).save(root / name, compress_level=6)
            w.writerow([name, split[i], *labels[i].tolist(), int(group[i])])
    return root


def make_resnet18(path: Path, data: Path, *, size: int = 64, seed: int = 0) -> Path:
    """Save a ResNet18 (3 outputs) checkpoint with BN statistics and head fitted to ``data``."""
    import torchvision

    from audit import save_checkpoint

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=len(TARGETS))
    images, labels, _ = synth_images(512, size, seed + 7)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        model.train()
        for chunk in x.split(128):  # BN statistics of this data (cumulative average)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = None
            model(chunk)
        model.eval()
        feats = torch.flatten(model.avgpool(_trunk(model, x)), 1)
    # Logistic regression of the head on frozen features: confident but imperfect outputs.
    head = torch.nn.Linear(feats.shape[1], len(TARGETS))
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    y = torch.from_numpy(labels).float()
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(feats), y)
        loss.backward()
        opt.step()
    model.fc.load_state_dict(head.state_dict())
    return save_checkpoint(
        path, model.eval(), arch="torchvision:resnet18", outputs=list(TARGETS),
        task="multilabel", preprocess={"image_size": size, "mean": list(MEAN), "std": list(STD)},
    )


def _trunk(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


class TinyNet(torch.nn.Module):
    """Conv-BN-ReLU → strided Conv-BN-ReLU → pool → Linear: a model that costs ~nothing."""

    def __init__(self, num_outputs: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_net(num_outputs: int = 3, **kwargs: object) -> torch.nn.Module:
    """Factory for ``--arch synth:tiny_net`` (the ``benchmarks/`` folder on ``sys.path``)."""
    return TinyNet(num_outputs)
