"""How the cost of an audit grows with N, and what torchrun saves per rank (CPU).

Inputs (seeded, written once under ``--root`` and reused): CelebA-shaped sets of N 64×64
RGB images with the 40 CelebA attributes (binary, CelebA-like prevalences), ``Male`` and
``Young`` as the protected attributes and the other 38 as targets, split 80% ``test`` /
20% ``val`` so every image is decoded and evaluated (no train split: ``bn`` recovery needs
none). Two layouts of the same rows:

* ``npz``: one uncompressed bundle (``images`` NHWC uint8, memory-mapped by the reader);
* ``parquet``: Hugging Face style shards (``image`` struct ``{bytes, path}`` of JPEGs, one
  int column per attribute, a ``split`` column), 10 000 rows per file, which the tool
  decodes with Pillow (needs the Parquet layout and pyarrow).

The model is a small BatchNorm CNN (``synth:tiny_net``, 38 outputs, random weights: the
cost does not depend on them), so the figures fit a 2-core machine. Every measurement is
a fresh child process (``python -m audit check ...``, one intra-op thread, as torchrun
gives each worker), timed by wall clock, its peak RSS from ``wait4``'s ``ru_maxrss``; each
rank's decode time and cache bytes come from ``$PRUNE_AUDIT_STATS_DIR``. Parts:

* ``check``: ``check --no-validate`` (one dense pass);
* ``audit``: ``check`` at 3 sparsities (0.5, 0.8, 0.9) with ``--recovery bn`` and
  ``--bootstrap 1000``;
* ``bootstrap``: the paired bootstrap alone (``validate.PairedBootstrap``, B = 1000, dense
  + 3 levels' deltas) on the same population shape (0.8·N × 38 targets, 2 groups);
* ``torchrun``: ``check --no-validate`` under ``torchrun --nproc-per-node 2`` against one
  process: rows decoded, decode seconds, cache bytes and peak RSS per rank.

Every part appends JSON lines to ``--results``; ``--report`` prints the Markdown tables,
with the growth exponent of each cost (least-squares slope of log cost on log N).

Run (from the repository root; ``--quick`` uses N = 2000, 5000, 20000)::

    uv run python benchmarks/bench_scale.py --parts check,audit,bootstrap --formats npz
    uv run python benchmarks/bench_scale.py --parts torchrun --n 200000
    uv run python benchmarks/bench_scale.py --report
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
GROUPS = ("Male", "Young")
TARGETS = tuple(a for a in ATTRS if a not in GROUPS)
SIZE = 64
CHUNK = 10_000
SPARSITIES = "0.5,0.8,0.9"


# ---------------------------------------------------------------------------- data
def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n, 40)`` with CelebA-like prevalences and the split of every row."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.03, 0.6, size=len(ATTRS))
    rates[ATTRS.index("Male")], rates[ATTRS.index("Young")] = 0.42, 0.77
    labels = (rng.random((n, len(ATTRS))) < rates).astype(np.int64)
    split = np.where(rng.random(n) < 0.2, "val", "test")
    return labels, split


def _images(labels: np.ndarray, start: int, seed: int = 0) -> np.ndarray:
    """NHWC uint8 images of rows ``start ..``: smooth noise plus a few label-driven patches."""
    rng = np.random.default_rng([seed, start])
    n = len(labels)
    coarse = rng.integers(0, 120, size=(n, SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
    img = coarse.repeat(8, axis=1).repeat(8, axis=2)
    img += rng.integers(0, 16, size=img.shape, dtype=np.uint8)
    for j in range(8):  # eight attributes each brighten one band of rows
        band = slice(j * SIZE // 8, (j + 1) * SIZE // 8)
        img[labels[:, j] == 1, band, :, j % 3] += 100
    img[labels[:, ATTRS.index("Male")] == 1, :, : SIZE // 4] += 20
    return img


def make_npz(path: Path, n: int) -> Path:
    """Uncompressed bundle, images generated in chunks into a memory map (bounded RAM)."""
    labels, split = _rows(n)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        images = np.lib.format.open_memmap(
            Path(tmp) / "images.npy", mode="w+", dtype=np.uint8, shape=(n, SIZE, SIZE, 3)
        )
        for a in range(0, n, CHUNK):
            images[a : a + CHUNK] = _images(labels[a : a + CHUNK], a)
        t = [ATTRS.index(x) for x in TARGETS]
        g = [ATTRS.index(x) for x in GROUPS]
        np.savez(
            path,
            images=images,
            labels=labels[:, t],
            groups=labels[:, g],
            label_names=np.array(TARGETS),
            group_names=np.array(GROUPS),
            split=split,
        )
        del images
    return path


def make_parquet(folder: Path, n: int) -> Path:
    """Hub-style shards ``data/part-XXXXX.parquet`` of JPEG image structs and label columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    labels, split = _rows(n)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(range(0, n, CHUNK)):
        block = _images(labels[a : a + CHUNK], a)
        blobs = []
        for img in block:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        columns: dict[str, Any] = {
            "image": pa.array(
                [{"bytes": b, "path": f"{a + i:06d}.jpg"} for i, b in enumerate(blobs)],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            **{name: pa.array(labels[a : a + CHUNK, j]) for j, name in enumerate(ATTRS)},
            "split": pa.array(split[a : a + CHUNK]),
        }
        pq.write_table(
            pa.table(columns), folder / "data" / f"part-{k:05d}.parquet", row_group_size=1000
        )
    return folder


def make_model(path: Path) -> Path:
    import torch

    sys.path.insert(0, str(HERE))
    from synth import TinyNet

    from audit import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(
        path,
        TinyNet(len(TARGETS)).eval(),
        arch="synth:tiny_net",
        outputs=list(TARGETS),
        task="multilabel",
        preprocess={"image_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3},
    )


def dataset(root: Path, fmt: str, n: int) -> Path:
    path = root / f"{fmt}-{n}" / ("data.npz" if fmt == "npz" else "")
    done = path.parent / ".done" if fmt == "npz" else path / ".done"
    if not done.exists():
        start = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        make_npz(path, n) if fmt == "npz" else make_parquet(path, n)
        done.write_text("")
        print(f"  wrote {fmt} N={n} in {time.perf_counter() - start:.0f} s", flush=True)
    return path if fmt == "npz" else path


# ---------------------------------------------------------------------------- measuring
def _env(stats: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for key in (
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        env.pop(key, None)
    if stats is not None:
        env["PRUNE_AUDIT_STATS_DIR"] = str(stats)
    return env


def _pressure() -> float | None:
    """CPU pressure (Linux PSI, some avg10 %), a measure of contention by other processes."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _child(cmd: list[str], stats: Path | None, cwd: Path) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, peak RSS of the largest process (KiB→bytes), exit code."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(stats), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of RUSAGE_CHILDREN: the largest peak among this script's waited-for
    # descendants (so each measurement runs in a fresh process tree). CPU seconds (user +
    # system of the whole process tree) are the contention-robust cost: on a shared machine
    # wall time also counts the time other jobs held the cores.
    rss = after.ru_maxrss * 1024
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{out}\n{err[-4000:]}")
    ranks = sorted(stats.glob("rank-*.json")) if stats is not None else []
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "exit": proc.returncode,
        "max_rss_children_bytes": rss,
        "ranks": [json.loads(p.read_text()) for p in ranks],
    }


def _check_cmd(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "audit",
        "check",
        str(model),
        str(data),
        "--arch",
        "synth:tiny_net",
        "--group",
        "Male",
        "--group",
        "Young",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def run_part(part: str, fmt: str, n: int, root: Path, model: Path) -> dict[str, Any]:
    data = dataset(root, fmt, n)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        stats = work / "stats"
        p0 = _pressure()
        if part == "check":
            res = _child(_check_cmd(model, data, work / "out", "--no-validate"), stats, work)
        elif part == "audit":
            res = _child(
                _check_cmd(
                    model,
                    data,
                    work / "out",
                    "--sparsity",
                    SPARSITIES,
                    "--target-sparsity",
                    "0.9",
                    "--recovery",
                    "bn",
                    "--bootstrap",
                    "1000",
                ),
                stats,
                work,
            )
        elif part == "bootstrap":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--bootstrap-child", str(n)]
            res = _child(cmd, None, work)
            res["bootstrap_s"] = json.loads((work / "bootstrap.json").read_text())["seconds"]
        elif part == "torchrun":
            one = _child(_check_cmd(model, data, work / "one", "--no-validate"), stats, work)
            stats2 = work / "stats2"
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                *_check_cmd(model, data, work / "two", "--no-validate")[1:],
            ]
            two = _child(cmd, stats2, work)
            res = {"one": one, "two": two}
        else:
            raise SystemExit(f"unknown part {part!r}")
    return {
        "part": part,
        "format": fmt,
        "n": n,
        "cpu_pressure_before": p0,
        "cpu_pressure_after": _pressure(),
        **res,
    }


def bootstrap_child(n: int) -> None:
    """Time PairedBootstrap on 0.8·N × 38 targets, 2 groups (as ``audit`` would), B = 1000."""
    from audit import criteria, validate

    rng = np.random.default_rng(0)
    labels, split = _rows(n)
    rows = split == "test"
    t = [ATTRS.index(x) for x in TARGETS]
    g = [ATTRS.index(x) for x in GROUPS]
    y, groups = labels[rows][:, t].astype(np.int8), labels[rows][:, g]
    pop = criteria.build_population(
        TARGETS,
        "multilabel",
        y,
        groups,
        GROUPS,
        train_labels=labels[~rows][:, t].astype(np.int8),
        train_groups=labels[~rows][:, g],
        min_group_size=30,
        band=(0.1, 0.9),
    )
    dense = np.clip(y + rng.normal(0, 0.35, y.shape), 0.001, 0.999)
    thresholds = {"default": np.full(len(TARGETS), 0.5), "calibrated": np.full(len(TARGETS), 0.5)}
    start = time.perf_counter()
    boot = validate.PairedBootstrap(pop, dense, thresholds, n_resamples=1000, seed=0)
    for k in range(3):
        boot.deltas(np.clip(dense + rng.normal(0, 0.1 * (k + 1), y.shape), 0.001, 0.999))
    Path("bootstrap.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))


# ---------------------------------------------------------------------------- report
def slope(ns: list[int], values: list[float]) -> float:
    """Growth exponent: least-squares slope of log(value) on log(N)."""
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def report(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in rows:  # the last measurement of each (part, format, N) counts
        latest[(r["part"], r["format"], r["n"])] = r
    gib = 2**30
    for fmt in ("npz", "parquet"):
        print(f"\n**{fmt}**\n")
        print(
            "| N | check --no-validate: wall s / CPU s | peak RSS GiB "
            "| 3-level bn audit: wall s / CPU s | peak RSS GiB "
            "| bootstrap B=1000: s | CPU pressure % |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        series: dict[str, tuple[list[int], list[float]]] = {}
        for n in sorted({k[2] for k in latest if k[1] == fmt or k[0] == "bootstrap"}):
            c, a = latest.get(("check", fmt, n)), latest.get(("audit", fmt, n))
            b = latest.get(("bootstrap", "npz", n))
            if not (c or a):
                continue
            cells, press = [], []
            for key, r in (("check", c), ("audit", a)):
                if r is None:
                    cells += ["–", "–"]
                    continue
                cpu = r.get("cpu_s")
                shown_cpu = f"{cpu:.1f}" if cpu is not None else "–"
                cells += [
                    f"{r['wall_s']:.1f} / {shown_cpu}",
                    f"{r['ranks'][0]['peak_rss_bytes'] / gib:.2f}",
                ]
                series.setdefault(f"{key} wall", ([], []))
                series[f"{key} wall"][0].append(n)
                series[f"{key} wall"][1].append(r["wall_s"])
                if cpu is not None:
                    series.setdefault(f"{key} CPU", ([], []))
                    series[f"{key} CPU"][0].append(n)
                    series[f"{key} CPU"][1].append(cpu)
                series.setdefault(f"{key} RSS", ([], []))
                series[f"{key} RSS"][0].append(n)
                series[f"{key} RSS"][1].append(r["ranks"][0]["peak_rss_bytes"])
                press += [r["cpu_pressure_before"], r["cpu_pressure_after"]]
            if b is not None:
                cells.append(f"{b['bootstrap_s']:.1f}")
                series.setdefault("bootstrap time", ([], []))
                series["bootstrap time"][0].append(n)
                series["bootstrap time"][1].append(b["bootstrap_s"])
            else:
                cells.append("–")
            shown = [p for p in press if p is not None]
            cells.append(f"{min(shown):.0f}–{max(shown):.0f}" if shown else "–")
            print(f"| {n:,} | " + " | ".join(cells) + " |")
        exps = {k: slope(*v) for k, v in series.items() if len(v[0]) >= 2}
        if exps:
            print(
                "\nGrowth exponents (slope of log cost on log N): "
                + ", ".join(f"{k} {v:.2f}" for k, v in exps.items())
            )
    tr = [r for k, r in latest.items() if k[0] == "torchrun"]
    if tr:
        print("\n**torchrun, 2 ranks vs one process (`check --no-validate`)**\n")
        print(
            "| format | N | run | rank | rows decoded | decode s | cache MiB | peak RSS GiB "
            "| wall s |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in sorted(tr, key=lambda r: (r["format"], r["n"])):
            for label, run in (("1 process", r["one"]), ("torchrun ×2", r["two"])):
                for rk in run["ranks"]:
                    print(
                        f"| {r['format']} | {r['n']:,} | {label} | {rk['rank']} | "
                        f"{rk['decoded_rows']:,} | {rk['decode_seconds']:.1f} | "
                        f"{rk['cache_bytes'] / 2**20:,.0f} | {rk['peak_rss_bytes'] / gib:.2f} | "
                        f"{run['wall_s']:.1f} |"
                    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="20000,50000,200000")
    ap.add_argument("--quick", action="store_true", help="N = 2000, 5000, 20000")
    ap.add_argument("--formats", default="npz,parquet")
    ap.add_argument("--parts", default="check,audit,bootstrap,torchrun")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale")
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="JSON lines to append to (default ROOT/results.jsonl)",
    )
    ap.add_argument("--report", action="store_true", help="print the tables and exit")
    ap.add_argument("--bootstrap-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bootstrap_child:
        bootstrap_child(args.bootstrap_child)
        return
    results = args.results or args.root / "results.jsonl"
    if args.report:
        report(results)
        return
    ns = [2000, 5000, 20000] if args.quick else [int(x) for x in args.n.split(",")]
    args.root.mkdir(parents=True, exist_ok=True)
    model = args.root / "model.pt"
    if not model.exists():
        make_model(model)
    for part in args.parts.split(","):
        for fmt in ["npz"] if part == "bootstrap" else args.formats.split(","):
            for n in ns:
                print(f"{part} {fmt} N={n} ...", flush=True)
                r = run_part(part, fmt, n, args.root, model)
                with results.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                wall = r.get("wall_s", r.get("two", {}).get("wall_s"))
                print(f"  {wall:.1f} s (CPU pressure {r['cpu_pressure_before']}%)", flush=True)


if __name__ == "__main__":
    main()
