from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tests.layout_samples as layout_samples_mod

torch.set_num_threads(min(2, os.cpu_count() or 1))


class TinyNet(torch.nn.Module):
    """Conv-BN-ReLU → pool → Linear: prunable layers and BN, runs in milliseconds."""

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
    return TinyNet(num_outputs)


TINY_ARCH = "tests.conftest:tiny_net"

# The 40 attribute names of CelebA's list_attr_celeba.txt header line, in file order.
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()


def check_args(ckpt: Path, data: Path, out: Path, *extra: str, group: str = "tinted") -> list[str]:
    """Arguments of a fast CPU ``prune-audit check`` of the tiny model (one sparsity)."""
    return [
        "check",
        str(ckpt),
        str(data),
        "--arch",
        TINY_ARCH,
        "--group",
        group,
        "--out",
        str(out),
        "--sparsity",
        "0.5",
        "--bootstrap",
        "20",
        "--device",
        "cpu",
        "--quiet",
        "--min-group-size",
        "5",
        *extra,
    ]


def make_npz_data(root: Path, *, n: int = 240, size: int = 16, seed: int = 0) -> Path:
    """Three visible binary attributes and one protected attribute; train/val/test splits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 3))
    group = (rng.random(n) < 0.4).astype(np.int64)
    images = rng.integers(0, 40, size=(n, size, size, 3)).astype(np.uint8)
    images[labels[:, 0] == 1, : size // 2, :, 0] += 150  # red top half
    images[labels[:, 1] == 1, :, : size // 2, 1] += 150  # green left half
    images[labels[:, 2] == 1, size // 2 :, :, 2] += 150  # blue bottom half
    images[group == 1] += 30
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    root.mkdir(parents=True, exist_ok=True)
    np.savez(
        root / "bundle.npz",
        images=images,
        labels=labels,
        groups=group[:, None],
        label_names=np.array(["red", "green", "blue"]),
        group_names=np.array(["tinted"]),
        split=split,
    )
    return root


def train_tiny(root: Path, *, steps: int = 60, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with np.load(root / "bundle.npz") as z:
        x = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.from_numpy(z["labels"]).float()
    x = (x - 0.5) / 0.25
    model = TinyNet(3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_audit_inputs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, torch.nn.Module]:
    """(checkpoint path, data dir, model): a trained TinyNet saved as a prune-audit checkpoint."""
    from audit import save_checkpoint

    root = make_npz_data(tmp_path_factory.mktemp("npz"))
    model = train_tiny(root)
    ckpt = root.parent / "model.pt"
    save_checkpoint(
        ckpt,
        model,
        arch=TINY_ARCH,
        outputs=["red", "green", "blue"],
        task="multilabel",
        preprocess={"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
    )
    return ckpt, root, model


@pytest.fixture(scope="session")
def demo_report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reports of ``prune-audit demo``, run once per test session through the CLI.

    The demo's data and model come from the user cache (``audit.demo.default_cache_dir()``,
    which ``PRUNE_AUDIT_CACHE`` overrides; ``prepare_demo()`` in other tests shares it), so
    only the first run on a machine trains the model (~30 s on 2 busy cores); the audit itself
    takes a few seconds.
    """
    from typer.testing import CliRunner

    from audit.cli import app

    out = tmp_path_factory.mktemp("demo") / "report"
    # The pruned levels recalibrate BatchNorm in float32, whose sums depend on the intra-op
    # thread count: 1 thread instead of 2 moved pruned probabilities by ~1e-6 and one sample
    # across a histogram bin edge. tests/fixtures/demo_report_golden.json was made with 2,
    # and any earlier test that changes torch's thread count would change this run (the
    # forecast corpus builder did, at 1, before it restored it), so pin it here.
    previous = torch.get_num_threads()
    torch.set_num_threads(DEMO_THREADS)
    try:
        res = CliRunner().invoke(app, ["demo", "--out", str(out), "--quiet"])
    finally:
        torch.set_num_threads(previous)
    assert res.exit_code == 0, res.output
    return out


#: Intra-op threads of the session's demo run (see ``demo_report_dir``).
DEMO_THREADS = 2


# Floats computed along different code paths (batch sizes, shards, CPU kernels: AVX-512 and
# AVX2 sum in different orders) differ in the last bits: float32 probabilities by ~1e-7, the
# float64 metrics built from them (ECE, CIs) by ~1e-10. They are compared to this tolerance;
# everything else (counts, outcomes, names, shapes) must match exactly.
FLOAT_ATOL = 1e-6


def assert_same_results(
    a: object, b: object, *, where: str = "report", atol: float = FLOAT_ATOL
) -> None:
    """Assert two report trees are equal: decisions exactly, floats within ``atol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same_results(a[key], b[key], where=f"{where}[{key!r}]", atol=atol)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_results(x, y, where=f"{where}[{i}]", atol=atol)
    elif _is_number(a) and _is_number(b) and float in (type(a), type(b)):
        assert a == pytest.approx(b, rel=0, abs=atol, nan_ok=True), f"{where}: {a} != {b}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def assert_same_arrays(
    a: np.ndarray, b: np.ndarray, *, where: str = "array", atol: float = FLOAT_ATOL
) -> None:
    """Float arrays within ``atol``; integer, boolean and string arrays exactly."""
    meta_a, meta_b = (a.shape, a.dtype), (b.shape, b.dtype)
    assert meta_a == meta_b, f"{where}: shape/dtype {meta_a} != {meta_b}"
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the modules that read every report.json the suite wrote last."""
    readers = ("tests/test_report_intervals.py", "tests/test_results_suite.py")
    last = [i for i in items if i.nodeid.startswith(readers)]
    if last:
        items[:] = [i for i in items if i not in last] + last


# ---------------------------------------------------------------------------- layouts
@pytest.fixture(scope="session")
def layout_samples(tiny_audit_inputs: tuple[Path, Path, object]) -> list[layout_samples_mod.Sample]:
    """The tiny audit's images and labels as samples (PNG-encoded), canonical order."""
    return layout_samples_mod.samples_from_npz(tiny_audit_inputs[1] / "bundle.npz")


@pytest.fixture(scope="session")
def manifest_probabilities(
    tiny_audit_inputs: tuple[Path, Path, object],
    layout_samples: list[layout_samples_mod.Sample],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense and pruned probabilities of the tiny audit run on the samples as a manifest."""
    root = tmp_path_factory.mktemp("manifest-layout")
    dense, pruned, layout = layout_samples_mod.audit_probabilities(
        tiny_audit_inputs[0],
        layout_samples_mod.write_manifest(root / "data", layout_samples),
        root / "out",
    )
    assert layout == "manifest"
    return dense, pruned
