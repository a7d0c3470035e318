"""Where the tool's forward passes gain over a hand-written loop (ResNet18, 64×64, CPU).

The end-to-end ratios of ``bench_pipeline.py`` move with load from other processes. This
benchmark isolates the forward passes and interleaves the variants, one pass of each per
repetition, so slow spells hit every variant alike; it reports the median and the best
time per image of each, relative to the hand-written loop:

* ``bare``: normalise in NCHW, ``model(x)`` under ``torch.inference_mode`` (as
  ``bench_pipeline.bare_loop`` does after decoding);
* ``predict``: ``audit.inference.predict`` as the runner calls it (channels_last chosen by
  ``tune_runtime``, BatchNorm folded into the convolutions);
* ``predict, NCHW``: the same with ``channels_last=False`` (folding only);
* ``predict, no folding``: channels_last only;
* ``BN recalibration``: ``prune.recalibrate_batchnorm`` over ``inference.input_batches``
  in NCHW and in channels_last (train-mode BatchNorm, so nothing can be folded).

Run: ``uv run python benchmarks/bench_forward.py`` (``--images 1024 --reps 9``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable

# OpenMP threads spin while they wait for each other; when other processes share the cores
# a spinning thread takes the time its partner needs, and one forward pass can take 3-4x
# longer from one minute to the next. Sleeping waits keep both sides' timings stable (the
# same setting applies to the tool and the hand-written loop). libgomp reads this when torch
# loads it, so it is set before the import; --omp-active keeps the default.
if "--omp-active" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torchvision

from audit import inference, pruning

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--omp-active", action="store_true",
                    help="keep OpenMP's default spinning waits (only on an otherwise idle machine)")
    args = ap.parse_args()

    torch.manual_seed(0)
    dense = torchvision.models.resnet18(num_classes=3).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    images = torch.randint(0, 256, (args.images, 3, 64, 64), dtype=torch.uint8)
    bs = inference.default_batch_size(torch.device("cpu"))
    base = inference.Runtime(
        device=torch.device("cpu"), precision="fp32", batch_size=bs, mean=MEAN, std=STD
    )

    bare_model = copy.deepcopy(dense)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def bare() -> None:
        with torch.inference_mode():
            for a in range(0, args.images, bs):
                x = (images[a : a + bs].float().div(255) - mean) / std
                bare_model(x)

    tool_model = inference.prepare_model(copy.deepcopy(dense), base)
    tuned = inference.tune_runtime(base, tool_model, images, auto_batch_size=False)
    assert tuned.channels_last, "expected channels_last for a CNN"
    nchw = dataclasses.replace(tuned, channels_last=False)
    nchw_model = inference.prepare_model(copy.deepcopy(dense), nchw)

    def predict() -> None:
        inference.predict(tool_model, images, tuned)

    def predict_nchw() -> None:
        inference.predict(nchw_model, images, nchw)

    def predict_unfolded() -> None:
        rows = slice(0, args.images)
        inference._forward_rows(tool_model, images, rows, tuned, bs, lambda n: None)

    def recal(runtime: inference.Runtime, model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            batches = inference.input_batches(images, runtime, max_samples=None)
            pruning.recalibrate_batchnorm(model, batches)

        return run

    variants: dict[str, Callable[[], None]] = {
        "bare": bare,
        "predict": predict,
        "predict, NCHW (folding only)": predict_nchw,
        "predict, no folding (NHWC only)": predict_unfolded,
        "BN recalibration, NCHW": recal(nchw, copy.deepcopy(nchw_model)),
        "BN recalibration, channels_last": recal(tuned, copy.deepcopy(tool_model)),
    }
    for fn in variants.values():  # warm-up: oneDNN primitives for each layout
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / args.images * 1e3)

    ref_med = statistics.median(times["bare"])
    ref_best = min(times["bare"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images "
          f"64x64, batch {bs}, {args.reps} interleaved repetitions")
    print(f"{'':34s} {'ms/img med':>10s} {'best':>7s} {'vs bare (med)':>14s} {'(best)':>7s}")
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        print(f"{name:34s} {med:10.3f} {best:7.3f} {med / ref_med:14.3f} {best / ref_best:7.3f}")


if __name__ == "__main__":
    main()
