from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from audit.errors import CheckpointError
from audit.model_io import (
    ExportedProgramModule,
    build_arch,
    infer_num_outputs,
    load_model,
    save_checkpoint,
)

FACTORY = "tests.test_model_io:small_cnn"
CALLS = {"small_cnn": 0}


class SmallCNN(torch.nn.Module):
    """Two conv+BN blocks and a linear head: every layer kind the loader must restore."""

    def __init__(self, num_outputs: int = 3, width: int = 4) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(2 * width)
        self.fc = torch.nn.Linear(2 * width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def small_cnn(num_outputs: int, width: int = 4) -> torch.nn.Module:
    CALLS["small_cnn"] += 1
    return SmallCNN(num_outputs, width)


def no_num_outputs(width: int = 4) -> torch.nn.Module:
    return SmallCNN(3, width)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics so a forgotten buffer changes the outputs."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return _randomise(SmallCNN(3))


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomise(torchvision.models.get_model("resnet18", weights=None, num_classes=3))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


def _assert_same(loaded: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor) -> None:
    assert not loaded.training
    torch.testing.assert_close(_probs(loaded, x), _probs(model, x), atol=1e-6, rtol=0)


class _Marker:
    """Unpickling this runs ``_touch(path)``: stands in for a malicious checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (self.path,))


def _touch(path: str) -> torch.nn.Module:
    Path(path).write_text("code from the checkpoint ran")
    return SmallCNN(3)


# ---------------------------------------------------------------------------- round trips
def test_prune_audit_checkpoint_round_trip(tmp_path: Path, resnet: torch.nn.Module, x) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", resnet, arch="torchvision:resnet18", outputs=["a", "b", "c"],
        task="multiclass", preprocess={"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip
    lm = load_model(path)
    _assert_same(lm.model, resnet, x)
    assert (lm.format, lm.arch, lm.outputs, lm.num_outputs, lm.task) == (
        "prune-audit", "torchvision:resnet18", ["a", "b", "c"], 3, "multiclass",
    )  # fmt: skip
    assert lm.preprocess == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert lm.n_parameters == sum(p.numel() for p in resnet.parameters())


def test_raw_state_dict_round_trip(tmp_path: Path, resnet: torch.nn.Module, x) -> None:
    torch.save(resnet.state_dict(), tmp_path / "sd.pt")
    lm = load_model(tmp_path / "sd.pt", arch="torchvision:resnet18")
    _assert_same(lm.model, resnet, x)
    assert (lm.format, lm.arch, lm.num_outputs, lm.outputs) == (
        "state_dict", "torchvision:resnet18", 3, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        ("state_dict", "module."),  # DataParallel / DDP
        ("model", "_orig_mod."),  # torch.compile
        ("model_ema", "module._orig_mod."),  # both, under an EMA key
        ("net", ""),
    ],
)
def test_wrapped_state_dict_strips_prefixes(tmp_path: Path, cnn, x, wrap: str, prefix: str) -> None:
    sd = {prefix + k: v for k, v in cnn.state_dict().items()}
    torch.save({wrap: sd, "epoch": 7, "best_acc": 0.9}, tmp_path / "w.pt")
    lm = load_model(tmp_path / "w.pt", arch=FACTORY)
    _assert_same(lm.model, cnn, x)
    assert lm.format == "state_dict"


def test_torchscript_round_trip(tmp_path: Path, cnn, x) -> None:
    with pytest.warns(FutureWarning):  # torch marks TorchScript deprecated; loading stays quiet
        torch.jit.save(torch.jit.script(cnn), tmp_path / "m.ts")
    lm = load_model(tmp_path / "m.ts")
    _assert_same(lm.model, cnn, x)
    assert (lm.format, lm.num_outputs) == ("torchscript", 3)


def test_export_round_trip_any_batch_size(tmp_path: Path, cnn, x) -> None:
    # Exported without a dynamic batch dimension: the program only takes batches of 2.
    torch.export.save(torch.export.export(cnn, (x[:2],)), tmp_path / "m.pt2")
    lm = load_model(tmp_path / "m.pt2")
    assert isinstance(lm.model, ExportedProgramModule)
    assert (lm.format, lm.num_outputs, lm.preprocess) == ("export", 3, {"image_size": 32})
    _assert_same(lm.model, cnn, x)  # 5 = 2 + 2 + (1 padded to 2)
    _assert_same(lm.model.eval(), cnn, x[:1])
    _assert_same(copy.deepcopy(lm.model), cnn, x)  # pruning works on copies
    # The exported graph fixed eval-mode BatchNorm: the flag can change, the outputs cannot.
    probs = _probs(lm.model.train(), x)
    assert lm.model.training
    torch.testing.assert_close(probs, _probs(cnn, x), atol=1e-6, rtol=0)


def test_export_dynamic_batch(tmp_path: Path, cnn, x) -> None:
    batch = torch.export.Dim("batch")
    ep = torch.export.export(cnn, (x[:2],), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, tmp_path / "d.pt2")
    lm = load_model(tmp_path / "d.pt2")
    # No batch limits: the GraphModule itself, so fx tools see its graph and parameter names.
    assert isinstance(lm.model, torch.fx.GraphModule)
    assert "conv1.weight" in dict(lm.model.named_parameters())
    _assert_same(lm.model.eval(), cnn, x)
    _assert_same(copy.deepcopy(lm.model).eval(), cnn, x[:1])


def test_export_in_training_mode_is_refused(tmp_path: Path, x) -> None:
    model = SmallCNN(3).train()
    torch.export.save(torch.export.export(model, (x[:2],)), tmp_path / "t.pt2")
    with pytest.raises(CheckpointError, match=r"t\.pt2.*exported in training mode.*model\.eval"):
        load_model(tmp_path / "t.pt2")


def test_trusted_pickle_round_trip(tmp_path: Path, cnn, x) -> None:
    torch.save(cnn, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match=r"full\.pt.*SmallCNN.*--trust-checkpoint"):
        load_model(tmp_path / "full.pt")
    lm = load_model(tmp_path / "full.pt", trust_checkpoint=True)
    _assert_same(lm.model, cnn, x)
    assert (lm.format, lm.arch, lm.num_outputs) == ("pickle", None, 3)


def test_trusted_training_checkpoint_with_objects(tmp_path: Path, cnn, x) -> None:
    import argparse

    # timm-style args: argparse.Namespace is allow-listed for weights-only loading (issue 15).
    torch.save({"model": cnn.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "c.pt")
    _assert_same(load_model(tmp_path / "c.pt", arch=FACTORY).model, cnn, x)
    lm = load_model(tmp_path / "c.pt", arch=FACTORY, trust_checkpoint=True)
    _assert_same(lm.model, cnn, x)


# ---------------------------------------------------------------------------- code execution
def test_pickle_that_runs_code_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save(_Marker(marker), tmp_path / "evil.pt")
    allowlist = list(torch.serialization.get_safe_globals())
    with pytest.raises(
        CheckpointError,
        match=r"evil\.pt.*_touch.*execute arbitrary code.*state_dict\(\) and pass --arch"
        r".*audit\.save_checkpoint.*torch\.jit\.save.*torch\.export.*--trust-checkpoint",
    ):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
    lm = load_model(tmp_path / "evil.pt", trust_checkpoint=True)
    assert marker.exists()
    assert lm.format == "pickle"
    # Loading never widens weights_only's allowlist of globals.
    assert list(torch.serialization.get_safe_globals()) == allowlist


def test_arch_named_in_checkpoint_is_not_imported_unconfirmed(tmp_path: Path, cnn, x) -> None:
    path = save_checkpoint(tmp_path / "m.pt", cnn, arch=FACTORY, outputs=["a", "b", "c"],
                           task="multilabel", arch_kwargs={"width": 4})  # fmt: skip
    before = CALLS["small_cnn"]
    # --trust-checkpoint vouches for pickles, not for calling what the file names.
    for trust in (False, True):
        with pytest.raises(
            CheckpointError,
            match=rf"'arch' entry .*'{FACTORY}'.* not a registered architecture.*--arch {FACTORY}",
        ):
            load_model(path, trust_checkpoint=trust)
    assert CALLS["small_cnn"] == before  # the factory was never called
    _assert_same(load_model(path, arch=FACTORY).model, cnn, x)
    assert CALLS["small_cnn"] == before + 1


def test_export_archive_with_pickled_payload_is_refused(tmp_path: Path, cnn, x) -> None:
    torch.export.save(torch.export.export(cnn, (x[:2],)), tmp_path / "ok.pt2")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(tmp_path / "ok.pt2") as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(name, data)
        dst.writestr("ok/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(
        CheckpointError, match=r"bad\.pt2.*could execute code.*aotinductor.*stored as a pickle"
    ):
        load_model(bad)


def test_export_archive_with_code_in_symbolic_shape_is_refused(tmp_path: Path, cnn, x) -> None:
    """torch.export.load sympifies (evals) shape strings: the scan must catch code in them."""
    ep = torch.export.export(cnn, (x[:2],), dynamic_shapes={"x": {0: torch.export.Dim("b")}})
    torch.export.save(ep, tmp_path / "ok.pt2")
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt2"
    injected = 0
    with zipfile.ZipFile(tmp_path / "ok.pt2") as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("models/model.json"):
                text = data.decode()
                payload = f"positive=__import__('pathlib').Path({str(marker)!r}).touch() is None"
                injected = text.count("positive=True")
                data = text.replace("positive=True", payload).encode()
            dst.writestr(name, data)
    assert injected
    with pytest.raises(CheckpointError, match=r"evil\.pt2.*symbolic shape.*__import__"):
        load_model(evil)
    assert not marker.exists()


# ---------------------------------------------------------------------------- bad input
def test_raw_state_dict_needs_arch(tmp_path: Path, resnet) -> None:
    torch.save(resnet.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(
        CheckpointError,
        match=r"sd\.pt.*raw state_dict.*'conv1\.weight'.*--arch torchvision:resnet18",
    ):
        load_model(tmp_path / "sd.pt")


def test_state_dict_that_does_not_fit_the_arch(tmp_path: Path, cnn) -> None:
    torch.save(cnn.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(
        CheckpointError,
        match=r"sd\.pt.*do not fit architecture 'torchvision:resnet18'.*missing.*unexpected",
    ):
        load_model(tmp_path / "sd.pt", arch="torchvision:resnet18")
    sd = cnn.state_dict()
    sd["conv1.weight"] = torch.zeros(4, 3, 5, 5)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"other shapes.*conv1\.weight \(4, 3, 5, 5\)"):
        load_model(tmp_path / "shape.pt", arch=FACTORY)


def test_dict_without_weights(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match=r"o\.pt.*without model weights.*'epoch'"):
        load_model(tmp_path / "o.pt", arch=FACTORY)
    torch.save([torch.zeros(2)], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match=r"l\.pt.*holds a list, not a model"):
        load_model(tmp_path / "l.pt")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, r"does not exist"),
        (b"", r"Model file .*empty\.pt.* is empty \(0 bytes\).*Re-save"),
        (b"definitely not a checkpoint", r"Cannot read .* as a PyTorch checkpoint.*operand"),
        ("truncate", r"Cannot read .*truncated, corrupt"),
    ],
    ids=["missing", "empty", "garbage", "truncated"],
)
def test_unreadable_files(tmp_path: Path, cnn, content: bytes | str | None, match: str) -> None:
    path = tmp_path / "empty.pt"
    if content == "truncate":
        torch.save(cnn.state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_model(path, arch=FACTORY)


def test_truncated_torchscript_and_export(tmp_path: Path, cnn, x) -> None:
    torch.export.save(torch.export.export(cnn, (x[:2],)), tmp_path / "m.pt2")
    data = (tmp_path / "m.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt2.*not a zip archive"):
        load_model(tmp_path / "cut.pt2")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model(tmp_path)


def test_bad_recorded_preprocess_and_format(tmp_path: Path, cnn) -> None:
    save_checkpoint(tmp_path / "p.pt", cnn, arch=FACTORY, outputs=["a", "b", "c"],
                    task="multilabel", preprocess={"image_size": -3})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"preprocess\['image_size'\] in .*p\.pt.* is -3"):
        load_model(tmp_path / "p.pt", arch=FACTORY)
    torch.save({"format": "prune-audit/9", "state_dict": {}}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match=r"format 'prune-audit/9'.*reads 'prune-audit/1'"):
        load_model(tmp_path / "v.pt")


# ---------------------------------------------------------------------------- architectures
def test_build_arch_torchvision_never_downloads() -> None:
    model = build_arch("torchvision:resnet18", 4, allow_import=False)
    assert model.fc.out_features == 4
    with pytest.raises(CheckpointError, match="may not set 'weights'"):
        build_arch("torchvision:resnet18", 4, arch_kwargs={"weights": "DEFAULT"}, allow_import=True)
    with pytest.raises(CheckpointError, match=r"no model named 'resnet19'.*did you mean resnet1"):
        build_arch("torchvision:resnet19", 4, allow_import=True)


@pytest.mark.parametrize(
    ("arch", "match"),
    [
        ("resnet18", "not of the form"),
        ("tests.test_model_io:_touch", "not a valid 'package.module:factory'"),
        ("no_such_pkg_xyz.models:build", "Cannot import module 'no_such_pkg_xyz.models'"),
        ("tests.test_model_io:nothing", "has no factory 'nothing'"),
        ("tests.test_model_io:FACTORY", "names a str, not a factory"),
        ("tests.test_model_io:no_num_outputs", "must accept a num_outputs keyword"),
    ],
)
def test_build_arch_errors(arch: str, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        build_arch(arch, 3, allow_import=True)


def test_infer_num_outputs_rules() -> None:
    e = torch.empty
    vgg = {"features.0.weight": e(8, 3, 3, 3), "classifier.0.weight": e(64, 32),
           "classifier.6.weight": e(7, 64), "classifier.6.bias": e(7)}  # fmt: skip
    assert infer_num_outputs(vgg) == (7, "classifier.6.weight")
    vit = {"heads.head.weight": e(5, 16), "encoder.ln.weight": e(16)}
    assert infer_num_outputs(vit) == (5, "heads.head.weight")
    # A named classifier wins over a later 2-D weight (e.g. an auxiliary projection).
    assert infer_num_outputs({"fc.weight": e(4, 8), "proj.weight": e(9, 8)}) == (4, "fc.weight")
    assert infer_num_outputs({"a.weight": e(4, 8), "b.weight": e(6, 4)}) == (6, "b.weight")
    squeeze = {"features.0.weight": e(8, 3, 3, 3), "classifier.1.weight": e(10, 8, 1, 1)}
    assert infer_num_outputs(squeeze) == (10, "classifier.1.weight")
    assert infer_num_outputs({"conv.weight": e(8, 3, 3, 3)}) is None
