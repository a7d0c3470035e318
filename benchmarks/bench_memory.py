"""Peak memory of ``check --no-validate`` on a large npz bundle (SPEC §9).

Input (seeded, in a temporary folder): an uncompressed ``np.savez`` bundle of N = 200 000
32×32 RGB images (614 MB of uint8, memory-mapped by the npz reader), 3 binary labels and 1
group, no split column (so the dense pass covers every sample: evaluation plus a 20%
calibration holdout), and a tiny conv net (conv-BN-conv-BN-linear, 3 outputs).

Each measurement runs ``run_audit`` in a fresh child process, which samples its own
``/proc/self/status`` every 20 ms and reports its ``getrusage`` peak. Reported:

* ``ru_maxrss`` of the child (the kernel's peak resident set over its whole life, imports
  and file-backed pages included),
* peak anonymous memory (``RssAnon``: what the process really holds; the file-backed part
  is the npz memory map and a spilled cache file, which the kernel can drop or write back),
* a baseline child that only imports torch and audit and loads the model.

Two cache settings: the runner's default (caches up to 2 GiB stay in RAM, so this one does)
and, patched in the child only, a 64 MiB ``memmap_threshold_bytes`` that spills it to a
memory-mapped file, as a cache over 2 GiB would.

Run: ``uv run python benchmarks/bench_memory.py`` (``--n``, ``--size``, ``--keep DIR``).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUTPUTS = 3


def make_bundle(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """Write an uncompressed npz of ``n`` images (generated in chunks of 20 000)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, OUTPUTS))
    group = (rng.random(n) < 0.4).astype(np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    h = size // 2
    for a in range(0, n, 20_000):
        b = min(n, a + 20_000)
        block = rng.integers(0, 60, size=(b - a, size, size, 3), dtype=np.uint8)
        block[labels[a:b, 0] == 1, :h, :, 0] += 150
        block[labels[a:b, 1] == 1, :, :h, 1] += 150
        block[labels[a:b, 2] == 1, h:, :, 2] += 150
        block[group[a:b] == 1] += 30
        images[a:b] = block
    np.savez(
        path, images=images, labels=labels, groups=group[:, None],
        label_names=np.array(["red", "green", "blue"]), group_names=np.array(["tinted"]),
    )
    return path


def make_model(path: Path, size: int) -> Path:
    """Save the tiny net (``synth:tiny_net``, random weights: memory does not depend on them)."""
    import torch

    sys.path.insert(0, str(HERE))
    from synth import tiny_net

    from audit import save_checkpoint

    torch.manual_seed(0)
    model = tiny_net(OUTPUTS)
    return save_checkpoint(
        path, model.eval(), arch="synth:tiny_net", outputs=["red", "green", "blue"],
        task="multilabel", preprocess={"image_size": size, "mean": [0.4] * 3, "std": [0.3] * 3},
    )


# ---------------------------------------------------------------------------- child
class _Sampler:
    """Peak VmRSS / RssAnon / RssFile of this process, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    kb = int(rest.split()[0])
                    self.peak[key] = max(self.peak.get(key, 0), kb)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._read()

    def __enter__(self) -> _Sampler:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()


def child(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line."""
    import torch

    sys.path.insert(0, str(HERE))
    from audit import AuditConfig, Policy
    from audit.model_io import load_model
    from audit.pipeline import decode as decode_mod
    from audit.pipeline import run_audit

    torch.set_num_threads(2)
    with _Sampler() as s:
        t0 = time.perf_counter()
        if args.mode == "baseline":
            load_model(args.model, arch="synth:tiny_net")
        else:
            if args.mode == "spill":
                decode_mod.build_image_cache = functools.partial(
                    decode_mod.build_image_cache, memmap_threshold_bytes=64 << 20
                )
            cfg = AuditConfig(
                model=args.model, data=args.data, out=args.out, arch="synth:tiny_net",
                groups=("tinted",), validate=False, device="cpu", quiet=True,
                policy=Policy(min_group_size=5),
            )
            run_audit(cfg)
        wall = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"wall_s": wall, "peak_kb": s.peak, "ru_maxrss_kb": maxrss}))


# ---------------------------------------------------------------------------- parent
def measure(mode: str, model: Path, data: Path, out: Path) -> dict[str, object]:
    """Run one child process; return what it measured of itself."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--model", str(model), "--data", str(data),
         "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the data here")
    ap.add_argument("--child", choices=["baseline", "default", "spill"], default=None,
                    dest="mode", help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        child(args)
        return

    tmp = tempfile.TemporaryDirectory(prefix="bench-memory-")
    base = args.keep or Path(tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    data = base / f"bundle-{args.n}-{args.size}.npz"
    if not data.is_file():
        t = time.perf_counter()
        make_bundle(data, args.n, args.size)
        print(f"wrote {data.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
    model = make_model(base / "tiny.pt", args.size)

    n_eval = args.n - round(0.2 * args.n)
    cache = args.n * 3 * args.size * args.size
    per_sample = args.n * (4 * OUTPUTS + OUTPUTS + 8)  # logits + labels (int8) + group (int64)
    print(f"N = {args.n} images {args.size}x{args.size}; uint8 cache {cache / 2**20:.0f} MiB; "
          f"npz images {data.stat().st_size / 2**20:.0f} MiB (memory-mapped); "
          f"samples x outputs arrays ~{per_sample / 2**20:.1f} MiB; eval {n_eval}")
    rows = {m: measure(m, model, data, base / f"out-{m}") for m in ("baseline", "default", "spill")}
    mib = 1024.0
    print(f"\n{'run':34s} {'wall s':>7s} {'ru_maxrss':>10s} {'peak RSS':>9s} {'peak anon':>10s} "
          f"{'peak file':>10s}  (MiB)")
    names = {
        "baseline": "imports + model only",
        "default": "check --no-validate (RAM cache)",
        "spill": "check --no-validate (memmap cache)",
    }
    for mode, r in rows.items():
        p = r["peak_kb"]
        print(f"{names[mode]:34s} {r['wall_s']:7.1f} "
              f"{r['ru_maxrss_kb'] / mib:10.0f} {p['VmRSS'] / mib:9.0f} "
              f"{p['RssAnon'] / mib:10.0f} {(p['RssFile'] + p.get('RssShmem', 0)) / mib:10.0f}")
    base_anon = rows["baseline"]["peak_kb"]["RssAnon"]
    for mode in ("default", "spill"):
        extra = (rows[mode]["peak_kb"]["RssAnon"] - base_anon) / mib
        print(f"anonymous memory above the baseline, {names[mode]}: {extra:.0f} MiB "
              f"(cache {cache / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
