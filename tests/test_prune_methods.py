"""Pruning methods as registered strategies: N:M, structured, the registries, and every
method with every recovery end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from audit import AuditConfig, Policy, UsageError, run_audit
from audit.cli import app
from audit.pruning import (
    PruningMethod,
    get_method,
    get_recovery,
    method_choices,
    nm_masks,
    prunable_parameters,
    prune_copy,
    recovery_choices,
)
from audit.pruning.structured import count_macs
from tests.conftest import TINY_ARCH, check_args

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


# ------------------------------------------------------------------------------ N:M


def reference_nm_mask(weight: torch.Tensor, n: int, m: int) -> np.ndarray:
    """Loop-based reference: for each output row and kernel position, walk the input
    channels in blocks of m and keep the n of largest |w| (earlier index wins a tie)."""
    w = weight.detach().numpy()
    keep = np.zeros(w.shape, dtype=bool)
    if w.shape[1] % m:
        keep[...] = True
        return keep
    for o in range(w.shape[0]):
        for pos in itertools.product(*(range(k) for k in w.shape[2:])):
            for start in range(0, w.shape[1], m):
                values = [abs(float(w[(o, start + j, *pos)])) for j in range(m)]
                ranked = sorted(range(m), key=lambda j: (-values[j], j))
                for j in ranked[:n]:
                    keep[(o, start + j, *pos)] = True
    return keep


def groups_of(mask: torch.Tensor, m: int) -> torch.Tensor:
    return mask.movedim(1, -1).reshape(-1, m)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_masks_match_a_reference_on_linear_layers(n: int, m: int) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[0, :4] = 0.5  # ties inside one group: the earlier weights are kept
    masks = nm_masks(model, n, m)
    for name, param in prunable_parameters(model):
        assert np.array_equal(masks[name].numpy(), reference_nm_mask(param, n, m)), name
        zeros = (~groups_of(masks[name], m)).sum(dim=1)
        assert bool((zeros >= m - n).all())


def test_nm_masks_match_a_reference_on_resnet18(resnet) -> None:
    masks = nm_masks(resnet, 2, 4)
    params = dict(prunable_parameters(resnet))
    # The loop reference is slow: check one layer of each kind fully, all layers by group.
    for name in (
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "fc.weight",
        "conv1.weight",
    ):
        assert np.array_equal(masks[name].numpy(), reference_nm_mask(params[name], 2, 4)), name
    for name, mask in masks.items():
        if name == "conv1.weight":  # 3 input channels: no whole group of 4, left dense
            assert bool(mask.all())
            continue
        kept = groups_of(mask, 4).sum(dim=1)
        assert bool((kept == 2).all()), name


def test_nm_method_has_a_fixed_sparsity_and_prunes_a_copy(resnet) -> None:
    method = get_method("2:4")
    assert method.label == "2:4" and method.fixed_sparsity == 0.5
    before = resnet.fc.weight.clone()
    pruned, stats = prune_copy(resnet, 0.5, method="2:4")
    assert torch.equal(resnet.fc.weight, before)
    assert stats.method == "2:4"
    fc = next(layer for layer in stats.layers if layer.name == "fc.weight")
    assert fc.sparsity == 0.5
    assert 0.49 < stats.achieved < 0.5  # conv1 stays dense


@pytest.mark.parametrize("spec", ["4:4", "0:4", "5:4", "2:", "a:b"])
def test_bad_nm_specs_are_unknown_methods(spec: str) -> None:
    with pytest.raises(ValueError, match=rf"--method '{spec}' is not one of global, layerwise"):
        get_method(spec)


def test_nm_excludes_patterns(resnet) -> None:
    masks = nm_masks(resnet, 2, 4, exclude=("fc.*",))
    assert "fc.weight" not in masks


# ----------------------------------------------------------------------- structured


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_structured_pruning_is_smaller_runs_and_hits_the_request(resnet, target: float) -> None:
    x = torch.randn(2, 3, 32, 32)
    pruned, stats = prune_copy(resnet, target, method="structured", example_input=x)
    dense_prunable = sum(p.numel() for _, p in prunable_parameters(resnet))
    pruned_prunable = sum(p.numel() for _, p in prunable_parameters(pruned))
    reduction = 1 - pruned_prunable / dense_prunable
    assert abs(reduction - target) <= 0.02
    assert stats.achieved == pytest.approx(reduction)
    info = stats.to_dict()["structure"]
    assert info["n_parameters"] < info["n_parameters_dense"]
    assert abs(info["parameter_reduction"] - target) <= 0.02
    assert 0 < info["mac_reduction"] < 1 and info["macs"] == count_macs(pruned, x)
    assert pruned(x).shape == (2, 10)  # every output kept
    # BatchNorm lost exactly the channels its convolution lost.
    for conv, bn in ((pruned.conv1, pruned.bn1), (pruned.layer2[0].conv2, pruned.layer2[0].bn2)):
        assert bn.num_features == conv.out_channels == bn.running_mean.numel()
    assert resnet.conv1.out_channels == 64  # the original is untouched


def test_structured_pruning_keeps_excluded_layers_outputs(resnet) -> None:
    x = torch.randn(1, 3, 32, 32)
    pruned, _ = prune_copy(
        resnet, 0.5, method="structured", exclude=("layer1.0.conv1.weight",), example_input=x
    )
    assert pruned.layer1[0].conv1.out_channels == 64
    assert pruned.layer2[0].conv1.out_channels < 128


def test_structured_pruning_needs_an_example_input_and_an_eager_model() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="needs an example input batch"):
        prune_copy(model, 0.5, method="structured")
    with pytest.raises(TypeError, match="structured pruning edits the module graph"):
        prune_copy(
            torch.jit.script(model), 0.5, method="structured", example_input=torch.ones(2, 4)
        )


# ------------------------------------------------------------------------ registries


def test_registries_list_the_built_ins() -> None:
    assert method_choices() == ("global", "layerwise", "N:M", "structured")
    assert recovery_choices() == ("none", "bn", "finetune")
    assert get_recovery("finetune").needs_train_split


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "bogus"}, r"--method 'bogus' is not one of global, layerwise, N:M, structured"),
        ({"recovery": "bogus"}, r"--recovery 'bogus' is not one of none, bn, finetune\."),
    ],
)
def test_api_rejects_unknown_names_exactly_like_the_cli(kwargs, message, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        AuditConfig(model=Path("m.pt"), data=Path("d"), **kwargs)
    flag, value = next(iter(kwargs.items()))
    result = CliRunner().invoke(
        app, check_args(tmp_path / "m.pt", tmp_path, tmp_path / "out", f"--{flag}", value)
    )
    assert result.exit_code == 2
    assert " ".join(result.output.split()).count(message.replace("\\", "")[:30]) == 1


def test_nm_rejects_other_sparsities() -> None:
    with pytest.raises(UsageError, match=r"--method 2:4 always prunes to sparsity 0\.5"):
        AuditConfig(model=Path("m"), data=Path("d"), method="2:4", sparsities=(0.9,))
    cfg = AuditConfig(model=Path("m"), data=Path("d"), method="2:4")
    assert cfg.audit_sparsities == (0.5,)


def test_a_method_registered_from_outside_is_usable_everywhere(monkeypatch) -> None:
    from audit.pruning import methods

    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))

    @methods.register_method
    class FirstHalf(PruningMethod):
        name = "first-half"
        help = "zero the first half of every weight"

        def masks(self, model, sparsity, *, exclude=()):
            out = {}
            for name, p in prunable_parameters(model, exclude=exclude):
                keep = torch.ones(p.numel(), dtype=torch.bool)
                keep[: p.numel() // 2] = False
                out[name] = keep.view_as(p)
            return out

    assert "first-half" in method_choices()
    AuditConfig(model=Path("m"), data=Path("d"), method="first-half")
    pruned, stats = prune_copy(nn.Linear(4, 2), 0.5, method="first-half")
    assert stats.method == "first-half" and stats.achieved == 0.5
    with pytest.raises(ValueError, match="already registered"):

        @methods.register_method
        class Clash(FirstHalf):
            pass


# --------------------------------------------------- every method with every recovery


@pytest.mark.parametrize(
    ("method", "recovery"),
    [
        (m, r)
        for m in ("global", "layerwise", "2:4", "structured")
        for r in ("none", "bn", "finetune")
    ],
)
def test_every_method_works_with_every_recovery_exclude_and_save_pruned(
    tiny_audit_inputs, tmp_path: Path, method: str, recovery: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    sparsity = 0.5
    cfg = AuditConfig(
        model=ckpt,
        data=data,
        out=tmp_path / "out",
        arch=TINY_ARCH,
        groups=("tinted",),
        sparsities=(sparsity,) if method != "2:4" else None,
        method=method,
        recovery=recovery,
        exclude=("conv.weight",),
        finetune_steps=12,
        bootstrap=20,
        device="cpu",
        save_pruned=True,
        policy=Policy(min_group_size=5, target_sparsity=0.5),
    )
    result = run_audit(cfg)
    (level,) = result.report["validation"]["levels"]
    assert result.report["validation"]["method"] == get_method(method).label
    assert level["source"] == "method" and level["sparsity"] == 0.5
    # Excluded: not counted by mask methods, listed as untouched by structured pruning.
    assert all(row["sparsity"] == 0 for row in level["per_layer"] if row["name"] == "conv.weight")
    assert any(row["sparsity"] > 0 for row in level["per_layer"])
    acc = level["accuracy"]
    assert acc["change"] == pytest.approx(acc["pruned"] - acc["dense"])
    assert (acc["one_shot_bn"] is not None) == (recovery == "finetune")
    saved = [p for p in result.files if p.name.startswith("pruned-")]
    assert len(saved) == 1
    if method == "structured":
        assert saved[0].suffix == ".pt2" and level["structure"]["parameter_reduction"] > 0.3
    json.dumps(result.report)
