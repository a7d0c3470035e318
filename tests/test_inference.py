"""audit.inference on CPU: batching, memory layout, BatchNorm folding, calibration batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit import inference
from tests.conftest import TinyNet


def _runtime(batch_size: int = 16, **kw: object) -> inference.Runtime:
    return inference.Runtime(
        device=torch.device("cpu"), precision="fp32", batch_size=batch_size,
        mean=(0.5,) * 3, std=(0.25,) * 3, **kw,  # type: ignore[arg-type]
    )


def _images(n: int = 37, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _trained_bn_net(seed: int = 0) -> torch.nn.Module:
    """TinyNet with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(seed)
    model = TinyNet(3)
    with torch.no_grad():
        for bn in (model.bn, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _reference(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    x = (images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        return model(x).numpy()


def test_predict_matches_the_plain_model_for_any_batch_size() -> None:
    model, images = _trained_bn_net(), _images()
    expected = _reference(model, images)
    for bs in (1, 5, 16, 64):
        runtime = _runtime(bs)
        net = inference.prepare_model(model, runtime)
        runtime = inference.tune_runtime(runtime, net, images, auto_batch_size=False)
        got = inference.predict(net, images, runtime)
        assert got.dtype == np.float32 and got.shape == (37, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_predict_reports_progress_per_sample() -> None:
    done: list[int] = []
    inference.predict(_trained_bn_net(), _images(), _runtime(16), progress=done.append)
    assert done == [16, 16, 5]


def test_tune_runtime_uses_channels_last_for_convnets_on_cpu() -> None:
    model, images = _trained_bn_net(), _images()
    runtime = inference.tune_runtime(_runtime(), model, images)
    assert runtime.channels_last and runtime.memory_format == torch.channels_last
    assert runtime.batch_size == 16  # CPU batch size is never changed
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = next(inference._device_batches(images, slice(0, 4), runtime, 4))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)


class _ViewNet(torch.nn.Module):
    """A convnet written for NCHW: ``.view`` on a conv output fails for channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 12 * 12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], -1))


def test_models_that_refuse_channels_last_run_nchw() -> None:
    torch.manual_seed(0)
    model, images = _ViewNet().eval(), _images()
    expected = _reference(model, images)
    runtime = inference.tune_runtime(_runtime(), model, images)
    assert runtime.channels_last is False
    assert model.conv.weight.is_contiguous()
    np.testing.assert_allclose(inference.predict(model, images, runtime), expected, atol=1e-5)


def test_batchnorm_is_folded_on_a_trace_that_leaves_the_model_alone() -> None:
    model, images = _trained_bn_net(), _images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = inference._fold_batchnorm(model, images[:2], _runtime())
    assert isinstance(folded, torch.fx.GraphModule)
    kinds = {type(m) for m in folded.modules()}
    assert torch.nn.BatchNorm2d not in kinds
    np.testing.assert_allclose(
        _reference(folded, images), _reference(model, images), rtol=1e-4, atol=1e-5
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.bn, torch.nn.BatchNorm2d)


class _SharedConv(torch.nn.Module):
    """One conv applied twice, followed by BN only the first time: folding it would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(torch.relu(self.bn(self.conv(x))))
        return self.fc(y.mean(dim=(2, 3)))


class _DataDependent(torch.nn.Module):
    """Control flow on tensor values: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y if bool(y.sum() > 0) else -y


@pytest.mark.parametrize("cls", [_SharedConv, _DataDependent])
def test_models_that_cannot_be_folded_run_unchanged(cls: type[torch.nn.Module]) -> None:
    torch.manual_seed(0)
    model, images = cls().eval(), _images()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    assert inference._fold_batchnorm(model, images[:2], _runtime()) is model
    np.testing.assert_allclose(
        inference.predict(model, images, _runtime()), _reference(model, images), atol=1e-5
    )


def test_scripted_models_are_not_traced() -> None:
    model, images = _trained_bn_net(), _images()
    scripted = torch.jit.script(model)
    assert inference._fold_batchnorm(scripted, images[:2], _runtime()) is scripted
    np.testing.assert_allclose(
        inference.predict(scripted, images, _runtime()), _reference(model, images), atol=1e-5
    )


def _calibration_rows(
    images: torch.Tensor, runtime: inference.Runtime, **kw: object
) -> list[np.ndarray]:
    """Recover which image rows each calibration batch holds (by matching pixels)."""
    norm = runtime.normaliser()
    flat = norm(images).reshape(images.shape[0], -1)
    rows = []
    for x in inference.input_batches(images, runtime, **kw):  # type: ignore[arg-type]
        d = torch.cdist(x.reshape(x.shape[0], -1), flat)
        rows.append(d.argmin(dim=1).numpy())
    return rows


def test_calibration_batches_are_a_seeded_shuffle_of_near_equal_batches() -> None:
    images = _images(n=300, size=4)
    runtime = _runtime(calib_batch_size=128)
    rows = _calibration_rows(images, runtime, seed=3)
    assert [len(r) for r in rows] == [100, 100, 100]  # not 128, 128, 44
    flat = np.concatenate(rows)
    assert sorted(flat.tolist()) == list(range(300))
    assert not np.array_equal(flat, np.arange(300))
    again = np.concatenate(_calibration_rows(images, runtime, seed=3))
    other = np.concatenate(_calibration_rows(images, runtime, seed=4))
    assert np.array_equal(flat, again) and not np.array_equal(flat, other)


def test_calibration_samples_are_capped() -> None:
    images = _images(n=300, size=4)
    rows = _calibration_rows(images, _runtime(calib_batch_size=64), seed=0, max_samples=130)
    assert [len(r) for r in rows] == [44, 43, 43]
    assert len(set(np.concatenate(rows).tolist())) == 130
    assert inference.CALIB_MAX_SAMPLES >= 1024


def test_training_batches_pair_images_with_their_targets() -> None:
    images = _images(n=70, size=4)
    targets = np.arange(70, dtype=np.float32)[:, None]
    runtime = _runtime(calib_batch_size=128)
    norm = runtime.normaliser()
    seen = []
    for x, y in inference.training_batches(images, targets, runtime, epoch=1, seed=0):
        assert x.shape[0] == y.shape[0] <= 64
        rows = y[:, 0].long()
        torch.testing.assert_close(x, norm(images[rows]))
        seen += rows.tolist()
    assert sorted(seen) == list(range(70))


def test_empty_input_gives_an_empty_array() -> None:
    got = inference.predict(_trained_bn_net(), _images(n=0), _runtime())
    assert got.shape[0] == 0
