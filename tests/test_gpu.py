"""CUDA inference (SPEC §9): same results as CPU within autocast tolerance, channels_last,
pinned non-blocking batches, batch size from free memory and out-of-memory back-off.

Marked ``gpu`` and skipped where CUDA is not available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audit import inference
from tests.conftest import TINY_ARCH, TinyNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

ARCH = TINY_ARCH
# Probabilities: fp32 convolutions may run in TF32 (10-bit mantissa), bf16 keeps 8 bits.
TOLERANCE = {"fp32": 2e-3, "bf16": 3e-2, "fp16": 1e-2}


def _runtime(device: str, precision: str = "fp32", batch_size: int = 16) -> inference.Runtime:
    return inference.Runtime(
        device=torch.device(device), precision=precision, batch_size=batch_size,
        mean=(0.5,) * 3, std=(0.25,) * 3,
    )


def _case(n: int = 50, size: int = 16) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet(3).eval()
    images = torch.randint(0, 255, (n, 3, size, size), dtype=torch.uint8)
    return model, images


def _probs(model: torch.nn.Module, images: torch.Tensor, runtime: inference.Runtime) -> np.ndarray:
    model = inference.prepare_model(model, runtime)
    runtime = inference.tune_runtime(runtime, model, images, auto_batch_size=False)
    return 1 / (1 + np.exp(-inference.predict(model, images, runtime)))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_predict_matches_cpu(precision: str) -> None:
    model, images = _case()
    cpu = _probs(model, images, _runtime("cpu"))
    model, images = _case()
    gpu = _probs(model, images, _runtime("cuda", precision))
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    np.testing.assert_allclose(gpu, cpu, atol=TOLERANCE[precision])


def test_cuda_runs_channels_last_from_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    model, images = _case()
    runtime = _runtime("cuda")
    model = inference.prepare_model(model, runtime)
    runtime = inference.tune_runtime(runtime, model, images, auto_batch_size=False)
    assert runtime.channels_last
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)

    pinned, non_blocking = [], []
    real_to = torch.Tensor.to

    def spy(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if self.device.type == "cpu" and self.dtype == torch.uint8:
            pinned.append(self.is_pinned())
            non_blocking.append(bool(kwargs.get("non_blocking")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    batches = list(inference._device_batches(images, slice(0, 50), runtime, 16))
    batches += list(inference._device_batches(images, np.arange(50)[::-1].copy(), runtime, 16))
    assert len(pinned) == 8 and all(pinned) and all(non_blocking)
    for x in batches:
        assert x.is_cuda and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_auto_batch_size_follows_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    model, images = _case(n=64, size=32)
    runtime = _runtime("cuda", "bf16")
    model = inference.prepare_model(model, runtime)
    big = inference.tune_runtime(runtime, model, images).batch_size
    assert 1 <= big <= inference.MAX_CUDA_BATCH and big & (big - 1) == 0

    # 1 MiB free (and no slack in PyTorch's cache): a handful of 32x32 samples at most.
    total = torch.cuda.mem_get_info()[1]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", torch.cuda.memory_allocated)
    small = inference.tune_runtime(runtime, model, images).batch_size
    assert 1 <= small < big and small & (small - 1) == 0
    # --batch-size given: kept.
    assert inference.tune_runtime(runtime, model, images, auto_batch_size=False).batch_size == 16


def _plain_net() -> torch.nn.Module:
    """No BatchNorm, so predict runs the module itself (nothing to fold, no fx trace)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()


class _OOMAbove(torch.nn.Module):
    """Wraps a model and raises CUDA out-of-memory for batches larger than ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_keeps_results() -> None:
    model, images = _plain_net(), _case(n=50)[1]
    runtime = _runtime("cuda", batch_size=32)
    model = inference.prepare_model(model, runtime)
    expected = inference.predict(model, images, runtime)

    wrapped = _OOMAbove(model, limit=8).eval()
    done: list[int] = []
    got = inference.predict(wrapped, images, runtime, progress=done.append)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert 32 in wrapped.sizes and 16 in wrapped.sizes and max(wrapped.sizes[-7:]) <= 8
    assert sum(done) == 50  # the restarted pass does not count samples twice
    # The next pass starts at the size that fitted.
    wrapped.sizes.clear()
    inference.predict(wrapped, images, runtime)
    assert max(wrapped.sizes) <= 8


def test_out_of_memory_at_batch_one_is_raised() -> None:
    model, images = _plain_net(), _case(n=4)[1]
    wrapped = _OOMAbove(inference.prepare_model(model, _runtime("cuda")), limit=0).eval()
    with pytest.raises(torch.OutOfMemoryError):
        inference.predict(wrapped, images, _runtime("cuda", batch_size=2))


def test_run_audit_on_cuda_matches_cpu(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    from audit import AuditConfig, Policy, run_audit

    ckpt, data, _ = tiny_audit_inputs

    def run(device: str) -> np.ndarray:
        out = tmp_path / device
        run_audit(AuditConfig(
            model=ckpt, data=data, out=out, arch=ARCH, groups=("tinted",), sparsities=(0.5,),
            bootstrap=20, device=device, precision="fp32", policy=Policy(min_group_size=5),
            formats=("json",),
        ))
        with np.load(out / "predictions.npz") as z:
            return np.concatenate([z["dense_probs"][None], z["pruned_probs"]])

    np.testing.assert_allclose(run("cuda"), run("cpu"), atol=TOLERANCE["fp32"])
