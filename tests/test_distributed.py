"""``torchrun`` sharding (SPEC §9): identical results to one process; only rank 0 reports.

Runs on CPU with gloo in CI (2 cores, about 30 s): one real ``torchrun --nproc-per-node 2``
launch, one two-process launch with torchrun's environment set by hand (to read each
rank's exit code and output separately, which torchrun does not report), and one
two-rank ``predict`` of a single image (an empty shard). The data set has 241 samples, so
the dense pass (121 test + val rows) and the pruned passes (61 test rows) both split
unevenly over 2 ranks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from audit.inference import Dist
from tests.conftest import TINY_ARCH, assert_same_arrays, assert_same_results, make_npz_data

# Slow (subprocesses importing torch) but part of the default run, so CI covers it.
pytestmark = pytest.mark.slow

ARCH = TINY_ARCH
REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180


@pytest.fixture(scope="module")
def odd_inputs(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(checkpoint, data dir): the session's TinyNet on 241 samples (60 val, 61 test)."""
    ckpt, _, _ = tiny_audit_inputs
    return ckpt, make_npz_data(tmp_path_factory.mktemp("odd") / "data", n=241)


def _check_args(ckpt: Path, data: Path, out: Path, sparsity: str, *extra: str) -> list[str]:
    return [
        "check", str(ckpt), str(data), "--arch", ARCH, "--group", "tinted",
        "--sparsity", sparsity, "--bootstrap", "50", "--device", "cpu", "--min-group-size", "5",
        "--quiet", "--out", str(out), *extra,
    ]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The workers import the model factory tests.conftest:tiny_net.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(key, None)
    env.pop("MASTER_PORT", None)
    env.update(extra)
    return env


def _one_process(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the CLI in this process (the single-process reference); return its exit code."""
    monkeypatch.chdir(cwd)  # no ./pyproject.toml policy
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: How far a torchrun launch's floats may be from one process's; decisions must be identical.
#: Measured at 90% sparsity with BN recalibration: up to 7e-6 with AVX-512 kernels and 1.52e-5
#: under ATEN_CPU_CAPABILITY=avx2 (the same on the code before issue 14's sharding), so the
#: 1e-5 issue 14 aimed for holds only on some CPUs; 5e-5 is float32 rounding through a
#: 90%-pruned network on any of them.
DIST_ATOL = 5e-5


def _report(out: Path) -> dict[str, Any]:
    rep = json.loads((out / "report.json").read_text())
    rep.pop("created")
    rep["inputs"].pop("world_size")
    return rep


def _assert_same_outputs(ref: Path, other: Path) -> None:
    assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in ref.iterdir())
    with np.load(ref / "predictions.npz") as a, np.load(other / "predictions.npz") as b:
        assert a.files == b.files
        # Shards are other batches (and torchrun sets one thread per rank): the float sums
        # run in another order, and BN recalibration all-reduces float64 batch statistics
        # where one process uses its float32 kernel; at 90% sparsity this moves some
        # probabilities by up to ~1.5e-5. So floats agree within DIST_ATOL, the rest exactly.
        for key in a.files:
            assert_same_arrays(b[key], a[key], where=key, atol=DIST_ATOL)
        # Decisions exactly, under both threshold modes.
        for mode, per_target in _report(ref)["inputs"]["thresholds"].items():
            t = np.asarray(list(per_target.values()))
            for key in ("dense_probs", "pruned_probs"):
                np.testing.assert_array_equal(b[key] > t, a[key] > t, err_msg=f"{key} {mode}")
    assert_same_results(_report(other), _report(ref), atol=DIST_ATOL)


def _decoded(stats: Path, world: int) -> list[dict[str, Any]]:
    """Each rank's record of what it decoded ($PRUNE_AUDIT_STATS_DIR)."""
    return [json.loads((stats / f"rank-{r}.json").read_text()) for r in range(world)]


def test_shards_cover_rows_in_order() -> None:
    for world in (1, 2, 3, 4):
        for n in range(12):
            shards = [Dist(rank=r, world=world).shard(n) for r in range(world)]
            rows = [i for s in shards for i in range(n)[s]]
            assert rows == list(range(n))
            sizes = [s.stop - s.start for s in shards]
            assert max(sizes) - min(sizes) <= 1


def test_torchrun_matches_one_process(
    odd_inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, data = odd_inputs
    # Two levels; the gate judges 0.5, which this model passes, so every rank exits 0.
    extra = ("--target-sparsity", "0.5")
    args = _check_args(ckpt, data, tmp_path / "one", "0.3,0.5", *extra)
    assert _one_process(args, tmp_path, monkeypatch) == 0

    proc = _torchrun(_check_args(ckpt, data, tmp_path / "two", "0.3,0.5", *extra), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only rank 0 prints the summary: each written file is listed once.
    assert proc.stdout.count("report.json") == 1, proc.stdout
    assert proc.stdout.count("predictions.npz") == 1, proc.stdout
    _assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / "report.json").read_text())["inputs"]["world_size"] == 2
    # 61 test + 60 val rows: rank 0 holds 31 + 30, rank 1 30 + 30, and decodes nothing else.
    rank0, rank1 = _decoded(tmp_path / "stats", 2)
    assert [d["purpose"] for d in rank1["decodes"]] == ["eval+calib"]
    assert rank1["decoded_rows"] == 60 and rank1["cache_bytes"] == 60 * 3 * 16 * 16
    # Rank 0 decodes its 61 rows, then only the thumbnails of rank 1's rows it reports.
    assert rank0["decodes"][0] == rank0["decodes"][0] | {"purpose": "eval+calib", "rows": 61}
    assert [d["purpose"] for d in rank0["decodes"][1:]] in ([], ["thumbnails"])


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m audit ARGS`` with decode records in
    ``cwd/stats``."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "audit", *args,
    ]
    env = _env(PRUNE_AUDIT_STATS_DIR=str(cwd / "stats"))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_only_rank0_writes_and_its_exit_code_is_the_gates(
    odd_inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, data = odd_inputs
    # At 0.9 (the default target sparsity) this model fails the gate: exit code 1.
    code = _one_process(_check_args(ckpt, data, tmp_path / "one", "0.5,0.9"), tmp_path, monkeypatch)
    assert code == 1

    # What torchrun sets for each worker (it sets OMP_NUM_THREADS=1 too).
    procs = _launch(
        lambda r: [
            sys.executable, "-m", "audit",
            *_check_args(ckpt, data, tmp_path / f"rank{r}", "0.5,0.9"),
        ],
        cwd=tmp_path,
    )
    (out0, err0), (out1, err1) = _wait(procs)
    assert procs[0].returncode == code, out0 + err0
    assert procs[1].returncode == 0, out1 + err1
    assert out1 == "" and not (tmp_path / "rank1").exists()
    assert "FAILED" in out0
    _assert_same_outputs(tmp_path / "one", tmp_path / "rank0")


def _launch(
    argv: Callable[[int], list[str]], *, cwd: Path, world: int = 2
) -> list[subprocess.Popen]:
    """Start ``world`` processes with the environment torchrun gives its workers."""
    port = str(_free_port())
    return [
        subprocess.Popen(
            argv(r),
            cwd=cwd,
            env=_env(
                RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                OMP_NUM_THREADS="1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]


def _wait(procs: list[subprocess.Popen]) -> list[tuple[str, str]]:
    try:
        return [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


# The model and image of the empty-shard test, built identically in every process.
_BUILD = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
).eval()
images = torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)
"""

# One rank of a 2-rank predict over ONE image, so rank 1's shard is empty; rank 1 starts
# from different weights, which broadcast_state must replace by rank 0's.
_GATHER_RANK = _BUILD + """
import sys
import numpy as np
from audit import inference

torch.set_num_threads(1)
dist_ctx = inference.init_distributed(torch.device("cpu"))
if dist_ctx.rank:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
runtime = inference.Runtime(
    device=torch.device("cpu"), precision="fp32", batch_size=1, mean=(0.5,) * 3,
    std=(0.25,) * 3, dist=dist_ctx,
)
inference.broadcast_state(model, runtime)
logits = inference.predict(model, images, runtime)
inference.shutdown_distributed()
np.save(sys.argv[1] + f"/{dist_ctx.rank}.npy", logits)
"""


def test_predict_gathers_an_empty_shard(tmp_path: Path) -> None:
    from audit import inference

    argv = [sys.executable, "-c", _GATHER_RANK, str(tmp_path)]
    outputs = _wait(_launch(lambda r: argv, cwd=tmp_path))
    for r, (out, err) in enumerate(outputs):
        assert (tmp_path / f"{r}.npy").is_file(), out + err
    built: dict[str, Any] = {}
    exec(_BUILD, built)  # noqa: S102 - the same code the ranks ran
    runtime = inference.Runtime(
        device=torch.device("cpu"), precision="fp32", batch_size=1, mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    expected = inference.predict(built["model"], built["images"], runtime)
    assert expected.shape == (1, 3)
    rank0, rank1 = (np.load(tmp_path / f"{r}.npy") for r in range(2))
    # Both ranks hold rank 0's gathered logits, bit for bit; this process computed the same
    # image with another thread count, so it agrees within FLOAT_ATOL.
    np.testing.assert_array_equal(rank1, rank0)
    assert_same_arrays(rank0, expected, where="logits")


# One rank of a 2-rank BN recalibration on a Shard: rows split as argv[3] says (e.g. "20,17"
# or "37,0", rank 1 holding none), eager BatchNorm (synced statistics) or TorchScript
# (batches gathered whole). Saves the recalibrated running statistics.
_RECAL_RANK = """
import sys
import numpy as np
import torch
from audit import inference, pruning
from tests.test_distributed import recal_inputs

torch.set_num_threads(1)
out, kind, split = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3].split(",")]
model, images = recal_inputs(kind)
dist_ctx = inference.init_distributed(torch.device("cpu"))
lo = sum(split[: dist_ctx.rank])
shard = inference.Shard(images[lo : lo + split[dist_ctx.rank]], tuple(split), dist_ctx.rank)
runtime = inference.Runtime(
    device=torch.device("cpu"), precision="fp32", batch_size=8, mean=(0.5,) * 3,
    std=(0.25,) * 3, dist=dist_ctx, calib_batch_size=8,
)
# Eager BatchNorm layers all-reduce their statistics; TorchScript gets whole batches.
assert inference.batchnorm_syncable(model) == (kind == "eager")
inference.sync_batchnorm(model, runtime)
assert ("forward" in vars(model[1])) == (kind == "eager")
batches = inference.input_batches(shard, runtime, seed=3, whole=kind == "script")
used = pruning.recalibrate_batchnorm(model, batches)
inference.shutdown_distributed()
stats = {k: v.numpy() for k, v in model.state_dict().items() if "running" in k}
np.savez(out + f"/{kind}-{dist_ctx.rank}.npz", used=used, **stats)
"""


def recal_inputs(kind: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (eager or scripted) and 37 images of the recalibration test, seeded."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 6),
        torch.nn.BatchNorm1d(6),
    ).eval()
    images = torch.randint(0, 255, (37, 3, 8, 8), dtype=torch.uint8)
    if kind == "script":
        model = torch.jit.script(model)
    return model, images


@pytest.mark.parametrize(
    ("kind", "split"), [("eager", "20,17"), ("eager", "37,0"), ("script", "19,18")]
)
def test_sharded_bn_recalibration_matches_one_process(
    kind: str, split: str, tmp_path: Path
) -> None:
    from audit import inference, pruning

    argv = [sys.executable, "-c", _RECAL_RANK, str(tmp_path), kind, split]
    outputs = _wait(_launch(lambda r: argv, cwd=tmp_path))
    model, images = recal_inputs(kind)
    runtime = inference.Runtime(
        device=torch.device("cpu"), precision="fp32", batch_size=8, mean=(0.5,) * 3,
        std=(0.25,) * 3, calib_batch_size=8,
    )
    used = pruning.recalibrate_batchnorm(model, inference.input_batches(images, runtime, seed=3))
    assert used == 5  # 37 rows in 5 batches of 7-8
    want = {k: v.numpy() for k, v in model.state_dict().items() if "running" in k}
    assert len(want) == 6
    for r, (out, err) in enumerate(outputs):
        path = tmp_path / f"{kind}-{r}.npz"
        assert path.is_file(), out + err
        with np.load(path) as got:
            assert int(got["used"]) == used
            for k, v in want.items():
                # Synced sums in float64 vs one process's float32 kernel: rounding only.
                np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    # Rank 0's rows alone give other statistics: the all-reduce is what makes them equal.
    alone, _ = recal_inputs(kind)
    pruning.recalibrate_batchnorm(alone, inference.input_batches(images[:19], runtime, seed=3))
    assert not np.allclose(alone.state_dict()["1.running_var"].numpy(), want["1.running_var"])


def test_torchrun_on_parquet_matches_one_process(
    odd_inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same 241 rows as Hub-style Parquet shards: equal results, rank 1 decodes its shard."""
    from tests.layout_samples import samples_from_npz, write_parquet

    ckpt, npz_dir = odd_inputs
    data = write_parquet(tmp_path / "parquet", samples_from_npz(next(npz_dir.glob("*.npz"))))
    extra = ("--target-sparsity", "0.5", "--recovery", "bn")
    assert _one_process(_check_args(ckpt, data, tmp_path / "one", "0.5", *extra), tmp_path,
                        monkeypatch) == 0
    proc = _torchrun(_check_args(ckpt, data, tmp_path / "two", "0.5", *extra), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert _report(tmp_path / "two")["inputs"]["data"]["layout"] == "parquet"
    # 61 test + 60 validation rows: rank 1 decodes its 30 + 30 from the Parquet files.
    _, rank1 = _decoded(tmp_path / "stats", 2)
    assert [(d["purpose"], d["rows"]) for d in rank1["decodes"]] == [("eval+calib", 60)]


def test_torchrun_finetune_trains_on_train_shards(
    odd_inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDP fine-tuning on Parquet: rank 1 decodes only its half of the train split; equal.

    Each rank trains on its rows of every global batch (DistributedDataParallel averages
    the gradients of world-scaled shares of the batch's mean loss), BatchNorm statistics
    all-reduced in float64 with gradients through them (one process: its float32 kernel),
    so every step differs from one process's by float rounding only, and training carries
    it on: the pruned probabilities were measured 3e-8 apart after 12 steps, well within
    DIST_ATOL; decisions identical.
    """
    from tests.layout_samples import samples_from_npz, write_parquet

    ckpt, npz_dir = odd_inputs
    data = write_parquet(tmp_path / "parquet", samples_from_npz(next(npz_dir.glob("*.npz"))))
    extra = ("--target-sparsity", "0.5", "--recovery", "finetune", "--finetune-steps", "12")
    args = _check_args(ckpt, data, tmp_path / "one", "0.5", *extra)
    assert _one_process(args, tmp_path, monkeypatch) == 0
    proc = _torchrun(_check_args(ckpt, data, tmp_path / "two", "0.5", *extra), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert _report(tmp_path / "two")["inputs"]["data"]["layout"] == "parquet"
    # 120 train rows: rank 1 decodes its 60 (and its 30 + 30 test + val rows), no more.
    _, rank1 = _decoded(tmp_path / "stats", 2)
    assert [(d["purpose"], d["rows"]) for d in rank1["decodes"]] == [
        ("eval+calib", 60), ("train", 60)
    ]
