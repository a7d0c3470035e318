"""Build the forecast corpus (resumable): ``uv run python benchmarks/forecast/build.py``.

Builds every case of ``corpus.CASES`` that has no finished cache entry yet, one after the
other in this process (one torch thread), and stops starting new cases once
``--budget-min`` minutes have passed, so the build can be run in chunks: run the command
again until it prints ``0 left``. Then ``fit.py`` fits the forecast on the design part and
``score.py`` scores it (benchmarks/README.md, "Forecast benchmark").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # contended cores: no spin-waiting
sys.path.insert(0, str(Path(__file__).parent))

import corpus  # noqa: E402


def _claim_path(spec: corpus.CaseSpec) -> Path:
    return corpus.cache_root() / f".claim-{spec.name}"


def _claim(spec: corpus.CaseSpec) -> bool:
    """Claim a case for this process (several build processes may share the list)."""
    root = corpus.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = _claim_path(spec)
    if any(root.glob(f".{spec.name}-*")) and not path.exists():
        return False  # being built by a process that predates claims
    if path.exists():
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # its process is gone
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budget-min",
        type=float,
        default=float("inf"),
        help="start no new case after this many minutes (default: build all)",
    )
    ap.add_argument("--only", default="", help="build only cases whose name contains this")
    ap.add_argument("--exclude", default=None, help="skip cases whose name contains this")
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="take cases from the end of the list (for a second build process)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    todo = [
        c
        for c in corpus.CASES
        if args.only in c.name and (args.exclude is None or args.exclude not in c.name)
    ]
    if args.reverse:
        todo = todo[::-1]
    for spec in todo:
        if (corpus.entry_dir(spec) / "done.json").is_file():
            continue
        if (time.perf_counter() - t0) / 60 > args.budget_min:
            break
        if not _claim(spec):
            continue  # another build process has it
        t = time.perf_counter()
        try:
            corpus.build_case(spec)
        finally:
            _claim_path(spec).unlink(missing_ok=True)
        print(f"{spec.name}: {time.perf_counter() - t:.0f} s", flush=True)
    left = sum(not (corpus.entry_dir(c) / "done.json").is_file() for c in todo)
    print(f"{len(todo) - left} built, {left} left, {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
