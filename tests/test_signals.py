"""Killing ``prune-audit check`` at chosen points (issue 11, point 9), in real subprocesses.

A test hook (``PRUNE_AUDIT_TEST_PAUSE_AT``, see ``audit.report.writer.pause_point``) stops the
run at a named point and creates a flag file; the test then sends the signal. SIGTERM must
clean up at once (exit 143); SIGKILL cannot be handled, so what it leaves (only inside
``--out``, in a staging folder named after the dead pid) must be removed by the next
successful run, while a staging folder of a run that is still alive is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import check_args

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _start(args: list[str], cwd: Path, pause_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("GITHUB_STEP_SUMMARY", None)
    if pause_at is not None:
        env["PRUNE_AUDIT_TEST_PAUSE_AT"] = pause_at
        env["PRUNE_AUDIT_TEST_PAUSE_FILE"] = str(cwd / f"paused-{pause_at}")
    return subprocess.Popen(
        [sys.executable, "-m", "audit", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_paused(proc: subprocess.Popen, cwd: Path, point: str) -> None:
    flag = cwd / f"paused-{point}"
    deadline = time.monotonic() + TIMEOUT
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} before reaching {point}: {out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"did not reach {point} in {TIMEOUT}s")
        time.sleep(0.1)
    flag.unlink()


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out + err


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("untouched")
    return work


def _args(inputs: tuple[Path, Path, torch.nn.Module], out: Path) -> list[str]:
    ckpt, data, _ = inputs
    return check_args(ckpt, data, out, "--save-pruned", "--bootstrap", "0")


@pytest.mark.parametrize("point", ["pruned-saved", "staged", "placing"])
def test_sigterm_cleans_up_at_once(tiny_audit_inputs, cwd: Path, point: str) -> None:
    out = cwd / "reports"
    if point == "placing":  # replacing an earlier report: the old files come back
        out.mkdir()
        (out / "report.json").write_text("the previous report")
        (out / "report.md").write_text("the previous summary")
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    proc = _start(_args(tiny_audit_inputs, out), cwd, pause_at=point)
    _wait_paused(proc, cwd, point)
    assert any(p.name.startswith(".prune-audit-staging.") for p in out.iterdir())
    proc.send_signal(signal.SIGTERM)
    code, output = _finish(proc)
    assert code == 128 + signal.SIGTERM, output
    assert "interrupted (SIGTERM); nothing was written" in output
    assert "Traceback" not in output
    if before is None:
        assert not out.exists()
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in cwd.iterdir()) == (["keep.txt"] + (["reports"] if before else []))


def test_sigkill_leftovers_go_with_the_next_successful_run(tiny_audit_inputs, cwd: Path) -> None:
    out = cwd / "reports"
    args = _args(tiny_audit_inputs, out)
    # Killed while validating (a pruned checkpoint staged) and while moving files into place.
    for point in ("pruned-saved", "placing"):
        proc = _start(args, cwd, pause_at=point)
        _wait_paused(proc, cwd, point)
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
    leftovers = _hidden(out)
    assert len(leftovers) == 2 and all(n.startswith(".prune-audit-staging.") for n in leftovers)
    assert any((out / n / "pruned-0.5.pt").is_file() for n in leftovers)
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.txt", "reports"]  # nothing beside

    # A run that is alive (paused) keeps its staging folder through another run's cleanup.
    alive = _start(args, cwd, pause_at="staged")
    _wait_paused(alive, cwd, "staged")
    live = set(_hidden(out)) - set(leftovers)
    assert len(live) == 1

    code, output = _finish(_start(args, cwd))
    assert code in (0, 1), output
    assert _hidden(out) == sorted(live)
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "report.json", "report.md", "report.html", "predictions.npz", "pruned-0.5.pt",
        "pruned-0.9.pt",
    }

    alive.send_signal(signal.SIGTERM)
    code, output = _finish(alive)
    assert code == 128 + signal.SIGTERM, output
    assert _hidden(out) == []
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.txt", "reports"]


def test_ctrl_c_exits_130_and_leaves_nothing(tiny_audit_inputs, cwd: Path) -> None:
    out = cwd / "reports"
    proc = _start(_args(tiny_audit_inputs, out), cwd, pause_at="pruned-saved")
    _wait_paused(proc, cwd, "pruned-saved")
    proc.send_signal(signal.SIGINT)
    code, output = _finish(proc)
    assert code == 130, output
    assert "interrupted (SIGINT)" in output and "Aborted" not in output
    assert not out.exists() and sorted(p.name for p in cwd.iterdir()) == ["keep.txt"]
