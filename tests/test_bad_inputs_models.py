"""Bad model files through the real CLI (issue 11, fix 10 and the widened campaign).

Each case exits 3 with a message naming the file and the fix, runs no code from the file,
and leaves ``--out`` and its parent folder untouched.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from tests.conftest import check_args
from tests.test_bad_inputs import Boom

runner = CliRunner()


def _refused(args: list[str], pattern: str) -> str:
    out = Path(args[args.index("--out") + 1])
    before = sorted(p.name for p in out.parent.iterdir())
    res = runner.invoke(app, args)
    assert res.exit_code == 3, res.output
    msg = " ".join(res.stderr.split())
    assert re.search(pattern, msg), msg
    assert "Traceback" not in res.output
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == before
    return msg


@pytest.mark.parametrize("protocol", [4, 5])
def test_code_running_pickle_of_a_newer_protocol_says_it_needs_code(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path, protocol: int
) -> None:
    """The weights-only reader stops at protocol 4/5 opcodes; that is not 'corrupt'."""
    _, data, model = tiny_audit_inputs
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"state_dict": model.state_dict(), "x": Boom(marker)}, f, protocol=protocol)
    msg = _refused(
        check_args(path, data, tmp_path / "out"),
        r"'.*evil\.pt' is not a plain weights file.*references .*pathlib.*Path\.touch.*"
        r"execute arbitrary code.*save model\.state_dict\(\).*--trust-checkpoint",
    )
    assert "truncated" not in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"Model file '.*m\.pt' is empty \(0 bytes\).*Re-save the model"),
        (b"PK\x03\x04" + b"\x00" * 40, r"Cannot read '.*m\.pt' as a PyTorch checkpoint.*re-save"),
        (
            {"format": 5, "arch": "torchvision:resnet18", "state_dict": {}},
            r"invalid 'format' entry \(the string 'prune-audit/1', got int",
        ),
        ({"w": [1, 2]}, r"holds a dict without model weights.*Save model\.state_dict\(\)"),
    ],
    ids=["empty-file", "zip-not-torch", "format-wrong-type", "state-dict-non-tensor"],
)
def test_bad_model_file(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module],
    tmp_path: Path,
    content: object,
    pattern: str,
) -> None:
    _, data, _ = tiny_audit_inputs
    path = tmp_path / "m.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    _refused(check_args(path, data, tmp_path / "out"), pattern)


def test_state_dict_shapes_do_not_fit_arch(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    _, data, model = tiny_audit_inputs
    sd = model.state_dict()
    sd["conv.weight"] = torch.zeros(4, 3, 3, 3)
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    _refused(
        check_args(path, data, tmp_path / "out"),
        r"weights in '.*sd\.pt' do not fit architecture 'tests\.conftest:tiny_net'.*conv\.weight"
        r".*Check that --arch",
    )


# ---------------------------------------------------------------------------- output names
def test_target_order_contradicting_output_names(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs  # outputs red, green, blue
    swapped = ["-t", "green", "-t", "red", "-t", "blue"]
    _refused(
        check_args(ckpt, data, tmp_path / "out", *swapped),
        r"--target green, red, blue contradicts the output names recorded in .*model\.pt.*"
        r"\(red, green, blue, in output order\).*--ignore-output-names",
    )
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "ok", *swapped,
                                        "--ignore-output-names", "--no-validate"))  # fmt: skip
    assert res.exit_code in (0, 1), res.output


def test_output_names_missing_from_the_data(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    from audit import save_checkpoint

    _, data, model = tiny_audit_inputs
    path = save_checkpoint(
        tmp_path / "named.pt", model, arch="tests.conftest:tiny_net", outputs=["red", "B", "Zed"],
        task="multilabel", preprocess={"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip
    _refused(
        check_args(path, data, tmp_path / "out"),
        r"names its outputs red, B, Zed, but the npz dataset .* has no column\(s\) 'B', 'Zed'.*"
        r"Rename the label columns.*--ignore-output-names",
    )
