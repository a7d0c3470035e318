"""Issue 11's bad-input and fault cases that belong to the CLI, the policy and the writer.

Each case runs the real CLI (typer's CliRunner) and checks the exit code, the message and that
neither ``--out`` nor its parent folder changed. Cases that need a second file system mount a
tmpfs and skip cleanly where mounting is not permitted (non-root CI).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import audit.pipeline.prepare as runner_module
import audit.report.writer as writer
from audit.cli import app
from tests.conftest import check_args

runner = CliRunner()
Inputs = tuple[Path, Path, torch.nn.Module]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _run(args: list[str], code: int, pattern: str, *, root: Path) -> str:
    """Run the CLI; check the exit code, the message and that ``root`` did not change."""
    before = _tree(root)
    res = runner.invoke(app, args)
    assert res.exit_code == code, res.output
    assert re.search(pattern, res.stderr), res.stderr
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert _tree(root) == before
    return res.stderr


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that holds --out and its parent; the CLI runs there (no ./pyproject.toml)."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "keep.txt").write_text("untouched")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if the run gets as far as loading the model (checks must come first)."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(runner_module, "load_model", boom)


# ---------------------------------------------------------------- point 5: ignored values
@pytest.mark.parametrize(
    ("flag", "value", "pattern"),
    [
        ("--image-size", "0", r"--image-size is 0; it must be at least 1"),
        ("--batch-size", "0", r"--batch-size is 0; it must be at least 1"),
        ("--workers", "0", r"--workers is 0; it must be at least 1"),
        ("--seed", "-1", r"--seed is -1; it must be at least 0"),
        ("--finetune-lr", "nan", r"--finetune-lr is nan; it must be a number > 0"),
        ("--finetune-seeds", "0.5", r"--finetune-seeds '0.5' must be a comma-separated list "
         "of whole numbers"),
        ("--mean", "nan,0.5,0.5", r"--mean 'nan,0.5,0.5' must hold finite numbers"),
        ("--std", "0.2,inf,0.2", r"--std '0.2,inf,0.2' must hold finite numbers"),
        ("--min-group-size", "0", r"--min-group-size 0 must be at least 1"),
        ("--target-sparsity", "1.2", r"--target-sparsity 1.2 is out of range.*strictly between"),
        ("--target-sparsity", "nan", r"--target-sparsity nan is out of range"),
        ("--fail-on", "maybe", r"--fail-on 'maybe' is not one of validated, forecast"),
    ],
)
def test_bad_flag_values_are_usage_errors(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None, flag: str, value: str,
    pattern: str,
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    args = check_args(ckpt, data, work / "out", flag, value)
    _run(args, 2, pattern, root=work)


def test_same_eval_and_calibration_split_is_refused(tiny_audit_inputs: Inputs, work: Path) -> None:
    ckpt, data, _ = tiny_audit_inputs
    args = check_args(ckpt, data, work / "out", "--split", "val", "--calib-split", "val")
    _run(args, 2, r"evaluation split \('val'\) and the calibration split \('val'\) share 60 "
         r"samples \(they are the same split\).*different --calib-split", root=work)


def test_finetuning_on_the_evaluation_split_is_refused(
    tiny_audit_inputs: Inputs, work: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    args = check_args(
        ckpt, data, work / "out", "--recovery", "finetune", "--train-split", "test"
    )
    _run(args, 2, r"train split \('test'\) used by --recovery finetune shares 60 samples",
         root=work)


# ------------------------------------------------------------- point 5/6: policy files
POLICY_CASES = [
    pytest.param(
        b"max_delta_fnr_gap = 0.5\n[tool.prune-audit]\ntarget_sparsity = 0.5\n",
        r"top-level key\(s\) 'max_delta_fnr_gap' besides its \[tool.prune-audit\] table.*"
        r"silently ignored",
        id="top-level-key-beside-table",
    ),
    pytest.param(b"tool = 3\n", r"'tool' is 3, not a table", id="tool-is-a-number"),
    pytest.param(
        b"[tool]\nprune-audit = 5\n", r"'tool.prune-audit' is 5, not a table", id="table-is-5"
    ),
    pytest.param(
        b"[tool.black]\nline-length = 100\n",
        r"has a \[tool\] table but no \[tool.prune-audit\] table",
        id="other-tool-only",
    ),
    pytest.param(
        "target_sparsity = 0.5 # caf\u00e9\n".encode("latin-1"),
        r"is not UTF-8 text \(byte 0xe9 at offset 27\)",
        id="latin-1",
    ),
    pytest.param(b"min_group_size = 0\n", r"'min_group_size' is 0; expected an integer", id="0"),
]


@pytest.mark.parametrize(("text", "pattern"), POLICY_CASES)
def test_bad_policy_file_is_an_input_error(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None, text: bytes, pattern: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    policy = work / "policy.toml"
    policy.write_bytes(text)
    _run(check_args(ckpt, data, work / "out", "--policy", str(policy)), 3, pattern, root=work)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (b"tool = 3\n", r"pyproject.toml': 'tool' is 3, not a table"),
        (b"[tool]\nprune-audit = 5\n", r"'tool.prune-audit' is 5, not a table"),
        (b"[project]\nname = 'caf\xe9'\n", r"pyproject.toml' is not UTF-8 text"),
    ],
)
def test_bad_pyproject_in_the_working_folder_is_an_input_error(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None, text: bytes, pattern: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    (work / "pyproject.toml").write_bytes(text)
    _run(check_args(ckpt, data, work / "out"), 3, pattern, root=work)


def test_pyproject_without_a_policy_table_uses_the_built_in_policy(
    tiny_audit_inputs: Inputs, work: Path
) -> None:
    from audit.config import load_policy

    (work / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.ruff]\nline-length = 9\n")
    assert load_policy(None, cwd=work)[1] == "built-in"


# ------------------------------------------------------ point 6: report.json that is no report
@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b'{"schema_version": "caf\xe9"}', r"is not UTF-8 text \(byte 0xe9 at offset 23\)"),
        (b"[" * 100_000 + b"]" * 100_000, r"nests JSON arrays or objects too deeply"),
        (b"{}", r"is not a prune-audit report"),
    ],
)
def test_report_command_refuses_what_is_not_a_report(
    work: Path, content: bytes, pattern: str
) -> None:
    (work / "report.json").write_bytes(content)
    _run(["report", str(work / "report.json"), "--out", str(work / "out")], 3, pattern, root=work)


# ------------------------------------------------------------ point 6: the model's failures
class NeedsBigImages(torch.nn.Module):
    """A network whose 5×5 convolution without padding fails on images under 5 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class RaisingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 64:
            raise ValueError("this network needs images of at least 64 pixels")
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    ("net", "extra", "pattern"),
    [
        (
            NeedsBigImages,
            ("--image-size", "2"),
            r"model '.*model.ts.pt' failed on its input: RuntimeError: .*[Kk]ernel size.*"
            r"batches of 3×2×2 images \(image size 2 from --image-size",
        ),
        (
            RaisingNet,
            (),
            r"model '.*model.ts.pt' failed on its input: .*at least 64 pixels.*"
            r"batches of 3×16×16 images \(image size 16 from the checkpoint or data",
        ),
    ],
)
def test_a_model_that_fails_on_its_input_is_named_with_the_preprocessing(
    tiny_audit_inputs: Inputs, work: Path, net: type[torch.nn.Module], extra: tuple[str, ...],
    pattern: str,
) -> None:
    _, data, _ = tiny_audit_inputs
    ts = work / "model.ts.pt"
    torch.jit.save(torch.jit.script(net().eval()), str(ts))
    args = [a for a in check_args(ts, data, work / "out", *extra) if a != "tests.conftest:tiny_net"]
    args.remove("--arch")
    stderr = _run(args, 3, pattern, root=work)
    assert "a bug in prune-audit" not in stderr


def test_an_eager_model_that_raises_is_named(tiny_audit_inputs: Inputs, work: Path) -> None:
    _, data, _ = tiny_audit_inputs
    path = work / "model.pt"
    torch.save(RaisingNet(), path)
    args = check_args(path, data, work / "out", "--trust-checkpoint")
    args[args.index("--arch") : args.index("--arch") + 2] = []
    _run(args, 3, r"failed on its input: ValueError: this network needs images of at least 64 "
         r"pixels.*--image-size, --mean/--std and --arch", root=work)


# ------------------------------------------------------------ point 7: --out checked first
def test_out_that_is_a_file(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    (work / "out").write_text("a file")
    _run(check_args(ckpt, data, work / "out"), 3, r"--out '.*out' is an existing file, not a "
         r"folder", root=work)


def test_out_under_a_file(tiny_audit_inputs: Inputs, work: Path, no_model_loading: None) -> None:
    ckpt, data, _ = tiny_audit_inputs
    (work / "file").write_text("a file")
    _run(check_args(ckpt, data, work / "file" / "sub" / "out"), 3,
         r"is under '.*file', which is a file", root=work)


@pytest.mark.parametrize("name", ["report.json", "predictions.npz", "pruned-0.5.pt"])
def test_a_report_file_that_is_a_folder(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None, name: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    (work / "out" / name).mkdir(parents=True)
    (work / "out" / "old.txt").write_text("old")
    _run(check_args(ckpt, data, work / "out", "--save-pruned"), 3,
         rf"'.*out/{re.escape(name)}' is a folder, so the report file '{re.escape(name)}' "
         "cannot be written", root=work)


def test_summary_out_in_a_missing_folder(
    tiny_audit_inputs: Inputs, work: Path, no_model_loading: None
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    args = check_args(ckpt, data, work / "out", "--summary-out", str(work / "nope" / "s.md"))
    _run(args, 3, r"--summary-out '.*s.md': its folder '.*nope' does not exist", root=work)


def test_full_disk_mid_write_is_an_input_error_and_changes_nothing(
    tiny_audit_inputs: Inputs, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    out = work / "out"
    out.mkdir()
    (out / "report.json").write_text("the previous report")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.np, "savez_compressed", full)
    _run(check_args(ckpt, data, out), 3, r"Could not write the reports into '.*out': the file "
         r"system is full \(while writing predictions.npz\). Nothing there was changed", root=work)


# ------------------------------------------------- points 7/8: real second file systems
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    """Mount small tmpfs file systems (root only); unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, *options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        opts = ",".join(("size=4m", *options))
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_out_on_a_mount_point_is_written(
    tiny_audit_inputs: Inputs, work: Path, tmpfs: callable
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    out = tmpfs(work / "volume")
    (out / "old.txt").write_text("kept")
    res = runner.invoke(app, check_args(ckpt, data, out, "--save-pruned"))
    assert res.exit_code in (0, 1), res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["old.txt", "predictions.npz", "pruned-0.5.pt", "pruned-0.9.pt",
                            "report.html", "report.json", "report.md"])
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "volume"]


def test_out_on_a_read_only_file_system(
    tiny_audit_inputs: Inputs, work: Path, tmpfs: callable, no_model_loading: None
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    volume = tmpfs(work / "ro", "ro")
    _run(check_args(ckpt, data, volume / "out"), 3,
         r"Cannot write to --out '.*ro/out': Read-only file system", root=work)


def test_out_on_a_full_file_system(tiny_audit_inputs: Inputs, work: Path, tmpfs: callable) -> None:
    ckpt, data, _ = tiny_audit_inputs
    volume = tmpfs(work / "small")
    (volume / "report.md").write_text("the previous report")
    # Leave 64 kB free: the staging folder fits, the reports do not.
    st = os.statvfs(volume)
    (volume / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
    _run(check_args(ckpt, data, volume), 3, r"the file system is full \(while writing "
         r"report\.(json|md|html)\)|predictions\.npz", root=work)


def test_simulated_exdev_beside_out_does_not_matter(
    tiny_audit_inputs: Inputs, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --out as a mount point: a rename from outside --out into it fails with EXDEV.
    ckpt, data, _ = tiny_audit_inputs
    out = work / "volume"
    out.mkdir()
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        inside = [out in Path(p).absolute().parents for p in (src, dst)]
        if inside[0] != inside[1]:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        real(src, dst)

    monkeypatch.setattr(writer.os, "replace", replace)
    monkeypatch.setattr(writer.shutil, "move", lambda s, d: replace(s, d))
    res = runner.invoke(app, check_args(ckpt, data, out, "--save-pruned"))
    assert res.exit_code in (0, 1), res.output
    assert (out / "report.json").is_file() and (out / "pruned-0.5.pt").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "volume"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_predictions_are_those_written_through_the_staging(
    tiny_audit_inputs: Inputs, work: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    res = runner.invoke(app, check_args(ckpt, data, work / "out", "--no-validate"))
    assert res.exit_code in (0, 1), res.output
    with np.load(work / "out" / "predictions.npz", allow_pickle=False) as z:
        assert z["dense_probs"].shape[1] == 3
    assert not [p for p in (work / "out").iterdir() if p.name.startswith(".")]
