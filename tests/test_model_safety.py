"""Checkpoint metadata is data, never code (issue 11, must fix 1; SPEC §3.1).

An ``arch`` string or ``arch_kwargs`` recorded in a checkpoint may only select a factory of
the explicit architecture registry (:mod:`audit.models.architectures`) and pass it plain,
signature-checked values. Every attempt below to reach another callable through the recorded
metadata must exit 3 before anything runs: the marker file the payload would write never
appears, the message names the key and the fix, and ``--out`` is left untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit import save_checkpoint
from audit.cli import app
from audit.errors import CheckpointError
from audit.model_io import load_model
from audit.models.architectures import (
    architecture_names,
    build_architecture,
    check_plain_kwargs,
)
from tests.conftest import TinyNet

runner = CliRunner()


def _hub_repo(root: Path, marker: Path) -> Path:
    """A local torch.hub repository whose hubconf.py writes ``marker`` when imported."""
    repo = root / "hubrepo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "import torch\n"
        "def m(num_outputs=3, **kw):\n"
        "    return torch.nn.Linear(3, num_outputs)\n"
    )
    return repo


def _cases(repo: Path, marker: Path) -> dict[str, tuple[str, dict]]:
    hub = {"repo_or_dir": str(repo), "model": "m", "source": "local", "trust_repo": True}
    shell = f"touch {marker}"
    return {
        "hub-via-audit-prefix": ("audit.model_io:torch.hub.load", hub),
        "hub-direct": ("torch.hub:load", hub),
        "hub-getattr-chain": ("audit.runner:torch.hub.load", hub),
        "os-system-chain": ("audit.model_io:torch.hub.os.system", {"command": shell}),
        "os-system": ("os:system", {"command": shell}),
        "builtins-eval": ("builtins:eval", {"source": f"open({str(marker)!r}, 'w')"}),
        "builtins-exec-chain": ("audit.model_io:importlib.sys.modules.get", {"key": "os"}),
        "importlib": ("importlib:import_module", {"name": "antigravity"}),
        "importlib-chain": ("audit.model_io:importlib.import_module", {"name": "antigravity"}),
        "subprocess": ("subprocess:run", {"args": ["touch", str(marker)]}),
        "subprocess-chain": (
            "audit.model_io:torch.utils.cpp_extension.subprocess.run",
            {"args": ["touch", str(marker)]},
        ),
        "torch-load-chain": (
            "audit.model_io:torch.load", {"f": str(marker), "weights_only": False}
        ),
        "dunder": ("audit.model_io:__builtins__", {}),
    }


CASES = list(_cases(Path("r"), Path("m")))


def _write(path: Path, arch: str, arch_kwargs: dict) -> Path:
    # save_checkpoint stores any arch string: the loader is what must refuse it.
    return save_checkpoint(
        path, TinyNet(3), arch=arch, arch_kwargs=arch_kwargs, outputs=["red", "green", "blue"],
        task="multilabel", preprocess={"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip


def _args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """A check WITHOUT --arch: the architecture comes from the file alone."""
    return [
        "check", str(ckpt), str(data), "--group", "tinted", "--out", str(out), "--sparsity",
        "0.5", "--bootstrap", "20", "--device", "cpu", "--quiet", "--min-group-size", "5",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("trust", [False, True], ids=["plain", "trust-checkpoint"])
@pytest.mark.parametrize("case", CASES)
def test_recorded_arch_cannot_reach_other_callables(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path, case: str, trust: bool
) -> None:
    _, data, _ = tiny_audit_inputs
    marker = tmp_path / "pwned"
    arch, kwargs = _cases(_hub_repo(tmp_path, marker), marker)[case]
    ckpt = _write(tmp_path / "evil.pt", arch, kwargs)
    parent = tmp_path / "reports"
    parent.mkdir()
    out = parent / "out"
    res = runner.invoke(app, _args(ckpt, data, out, *(["--trust-checkpoint"] if trust else [])))
    assert not marker.exists(), f"{arch} ran code from the checkpoint"
    assert res.exit_code == 3, res.output
    assert "Traceback" not in res.output
    msg = " ".join(res.stderr.split())
    assert re.search(
        rf"'arch' entry .*{re.escape(arch)}.* not a registered architecture.*"
        r"torchvision:NAME.*--arch",
        msg,
    ), msg
    assert not out.exists()
    assert list(parent.iterdir()) == []


def test_hub_case_is_refused_by_load_model(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arch, kwargs = _cases(_hub_repo(tmp_path, marker), marker)["hub-via-audit-prefix"]
    ckpt = _write(tmp_path / "evil.pt", arch, kwargs)
    for trust in (False, True):
        with pytest.raises(CheckpointError, match=r"'arch' entry.*not a registered architecture"):
            load_model(ckpt, trust_checkpoint=trust)
    assert not marker.exists()


# ---------------------------------------------------------------------------- arch_kwargs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm_layer": "torch.nn:Identity"}, r"'norm_layer'.*takes a callable"),
        ({"block": "x"}, r"'block'.*takes a callable"),
        ({"pretrained": True}, r"'pretrained'.*not a parameter of torchvision:resnet18"),
        ({"weights": "DEFAULT"}, r"may not set 'weights'"),
        ({"num_classes": 5}, r"may not set 'num_classes'"),
        ({"zero_init_residual": torch.tensor(1.0)}, r"'zero_init_residual'.*Tensor.*plain data"),
        ({"groups": torch.float32}, r"'groups'.*dtype.*plain data"),
        ({"__class__": 1}, r"'__class__'.*not a parameter"),
    ],
)
def test_recorded_arch_kwargs_are_plain_and_signature_checked(
    tmp_path: Path, kwargs: dict, match: str
) -> None:
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    ckpt = save_checkpoint(
        tmp_path / "r.pt", model, arch="torchvision:resnet18", arch_kwargs=kwargs,
        outputs=["a", "b", "c"], task="multilabel",
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"arch_kwargs.*" + match):
        load_model(ckpt)


def test_valid_recorded_arch_kwargs_still_work(tmp_path: Path) -> None:
    import torchvision

    model = torchvision.models.resnet18(num_classes=3, zero_init_residual=True).eval()
    kwargs = {"zero_init_residual": True, "replace_stride_with_dilation": [False, False, False]}
    ckpt = save_checkpoint(
        tmp_path / "r.pt", model, arch="torchvision:resnet18", arch_kwargs=kwargs,
        outputs=["a", "b", "c"], task="multilabel",
    )  # fmt: skip
    lm = load_model(ckpt)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(x), model(x))
    assert lm.arch_kwargs == kwargs


def test_demo_factory_kwargs_checked_against_its_signature(tmp_path: Path) -> None:
    from audit.demo import small_cnn

    ok = small_cnn(2, widths=[8, 8, 8, 8])
    ckpt = save_checkpoint(
        tmp_path / "d.pt", ok, arch="audit.demo:small_cnn", arch_kwargs={"widths": [8, 8, 8, 8]},
        outputs=["a", "b"], task="multilabel",
    )  # fmt: skip
    assert load_model(ckpt).model.head.out_features == 2
    bad = save_checkpoint(
        tmp_path / "b.pt", ok, arch="audit.demo:small_cnn", arch_kwargs={"depth": 3},
        outputs=["a", "b"], task="multilabel",
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"'depth' is not a parameter of audit.demo:small"):
        load_model(bad)


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"a": [1, 2.5, "x", None, True, {"b": [0]}]}, True),
        ({"a": (1, 2)}, True),
        ({"a": print}, False),
        ({"a": torch.zeros(1)}, False),
        ({"a": {1: 2}}, False),
        ({"a": b"bytes"}, False),
        ({"a": float("nan")}, True),
        ({"a": _nested(40)}, False),
    ],
)
def test_check_plain_kwargs(value: dict, ok: bool) -> None:
    if ok:
        check_plain_kwargs(value, where="arch_kwargs")
    else:
        with pytest.raises(CheckpointError, match="arch_kwargs"):
            check_plain_kwargs(value, where="arch_kwargs")


def test_registry_lists_torchvision_classifiers_and_demo() -> None:
    names = architecture_names()
    assert "torchvision:resnet18" in names
    assert "audit.demo:small_cnn" in names
    # Detection/segmentation builders return dicts of losses/boxes, not logits.
    assert "torchvision:fasterrcnn_resnet50_fpn" not in names
    assert build_architecture("torchvision:resnet18", 4).fc.out_features == 4


def test_user_given_arch_may_import_a_factory(tmp_path: Path) -> None:
    """--arch on the command line is the user's own choice of code (SPEC §2)."""
    model = build_architecture("tests.conftest:tiny_net", 5, allow_import=True)
    assert model.fc.out_features == 5
    with pytest.raises(CheckpointError, match="not a registered architecture"):
        build_architecture("tests.conftest:tiny_net", 5)
