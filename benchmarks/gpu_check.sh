#!/usr/bin/env bash
# GPU check: the `gpu` tests, then the GPU throughput benchmark (benchmarks/bench_gpu.py:
# the tool's dense pass vs a bare bf16 channels_last loop on 200k cached 64x64 images, the
# batch size chosen, peak GPU memory). About 2-5 minutes on one recent GPU; the benchmark
# is capped at 6 minutes so the whole script stays under 8.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   GPU_CHECK_N=50000 bash benchmarks/gpu_check.sh   # fewer images
#
# Without CUDA it prints one "no CUDA" line and exits 0 (nothing to check there).
set -euo pipefail
cd "$(dirname "$0")/.."

run() { if command -v uv >/dev/null 2>&1; then uv run "$@"; else "$@"; fi; }

if ! run python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); skipping the gpu tests and the GPU benchmark."
    exit 0
fi

start=$(date +%s)
echo "gpu_check: pytest -m gpu"
run python -m pytest -m gpu -q -p no:cacheprovider tests/
echo "gpu_check: throughput benchmark"
run timeout 360 python benchmarks/bench_gpu.py --n "${GPU_CHECK_N:-200000}" --size 64
echo "gpu_check: done in $(( $(date +%s) - start )) s"
