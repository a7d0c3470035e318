"""Round trips of the model forms ``--pruned`` (and MODEL) accept beyond the basic four."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from audit import CheckpointError
from audit.model_io import load_model
from audit.pruning import prune_copy
from tests.conftest import TINY_ARCH, TinyNet

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
ATOL = 1e-6


def _pruned_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = prune_copy(TinyNet(3).eval(), 0.8)
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=ATOL)


def test_safetensors_state_dict_round_trips(tmp_path: Path) -> None:
    model = _pruned_tiny()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_model(path, arch=TINY_ARCH)
    assert loaded.format == "state_dict" and _same_outputs(loaded.model, model)
    with pytest.raises(CheckpointError, match=r"raw state_dict"):
        load_model(path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"as a safetensors file"):
        load_model(broken, arch=TINY_ARCH)


def test_timm_training_checkpoint_with_namespace_args_loads_weights_only(tmp_path: Path) -> None:
    model = _pruned_tiny()
    path = tmp_path / "checkpoint-10.pth.tar"
    args = argparse.Namespace(model="tiny", lr=0.1, epochs=10, sched="cosine")
    torch.save(
        {
            "epoch": 10,
            "arch": "tiny",
            "state_dict": model.state_dict(),
            "args": args,
            "version": 2,
            "metric": 0.9,
        },
        path,
    )
    loaded = load_model(path, arch=TINY_ARCH)  # no --trust-checkpoint needed
    assert _same_outputs(loaded.model, model)


def test_timm_architecture_builds_offline_and_is_allowed_in_checkpoints(tmp_path: Path) -> None:
    from audit import save_checkpoint
    from audit.model_io import build_arch

    model = build_arch("timm:resnet18", 5, allow_import=False)
    assert model.get_classifier().out_features == 5
    path = tmp_path / "timm.pt"
    save_checkpoint(
        path, model.eval(), arch="timm:resnet18", outputs=list("abcde"), task="multilabel"
    )
    loaded = load_model(path)  # a recorded timm: name needs no --arch, like torchvision:
    assert loaded.arch == "timm:resnet18" and loaded.num_outputs == 5
    with pytest.raises(
        CheckpointError, match=r"timm has no model named 'resnet_18' \(did you mean resnet18"
    ):
        build_arch("timm:resnet_18", 5, allow_import=False)
    with pytest.raises(CheckpointError, match=r"may not set 'pretrained'"):
        build_arch("timm:resnet18", 5, arch_kwargs={"pretrained": True}, allow_import=False)


def test_structurally_pruned_model_as_export_and_trusted_pickle(tmp_path: Path) -> None:
    dense = TinyNet(3).eval()
    x = torch.randn(2, 3, 16, 16)
    small, stats = prune_copy(dense, 0.5, method="structured", example_input=x)
    assert stats.structure["n_parameters"] < stats.structure["n_parameters_dense"]
    exported = tmp_path / "small.pt2"
    program = torch.export.export(small, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, str(exported))
    assert _same_outputs(load_model(exported).model, small)
    scripted = tmp_path / "small-script.pt"
    torch.jit.save(torch.jit.script(small), str(scripted))
    assert _same_outputs(load_model(scripted).model, small)
    pickled = tmp_path / "small-pickle.pt"
    torch.save(small, pickled)
    with pytest.raises(CheckpointError, match=r"--trust-checkpoint"):
        load_model(pickled)
    assert _same_outputs(load_model(pickled, trust_checkpoint=True).model, small)
