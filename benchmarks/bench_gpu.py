"""GPU throughput of the tool's dense pass against a bare bf16 channels_last loop (CUDA only).

Both sides run ResNet18 (40 outputs, CelebA-shaped) over the same cached uint8 tensor of
``--n`` 64×64 images held in CPU memory, as the tool's cache is:

* ``tool``: ``inference.prepare_model`` + ``tune_runtime`` (batch size from free memory,
  channels_last) + ``inference.predict`` at bf16, i.e. the dense pass of ``check``;
* ``bare``: the loop a user would write: model in channels_last on the GPU, per batch of the
  same size ``images[a:b].cuda()``, convert, normalise, ``model(x)`` under
  ``torch.inference_mode`` and bf16 autocast, logits copied back at the end.

Printed: images/s of each (best of ``--reps`` passes after a warm-up pass), their ratio, the
batch size the tool chose, and the peak GPU memory of each. Run through
``benchmarks/gpu_check.sh`` (or ``uv run python benchmarks/bench_gpu.py``); without CUDA it
prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch
import torchvision

from audit import inference

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _timed(fn: object, reps: int, device: torch.device) -> tuple[float, float]:
    """Best seconds of ``reps`` calls after one warm-up call, and the peak memory (bytes)."""
    fn()  # warm-up: cuDNN autotuning, allocator growth, the tool's BN folding probe
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, float(torch.cuda.max_memory_allocated(device))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="cached images (default 200000)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); nothing measured.")
        return 0
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    dense = torchvision.models.resnet18(num_classes=40).eval()

    runtime = inference.Runtime(
        device=device,
        precision="bf16",
        batch_size=inference.default_batch_size(device),
        mean=MEAN,
        std=STD,
    )
    model = inference.prepare_model(dense, runtime)
    runtime = inference.tune_runtime(runtime, model, images, auto_batch_size=True)
    bs = runtime.batch_size
    tool_s, tool_mem = _timed(lambda: inference.predict(model, images, runtime), args.reps, device)

    bare_model = torchvision.models.resnet18(num_classes=40).eval()
    bare_model.load_state_dict(dense.state_dict())
    bare_model = bare_model.to(device, memory_format=torch.channels_last)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

    def bare() -> torch.Tensor:
        outs = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for a in range(0, args.n, bs):
                x = images[a : a + bs].to(device)
                x = x.to(dtype=torch.float32, memory_format=torch.channels_last)
                outs.append(bare_model((x - mean) / std).float())
        return torch.cat(outs).cpu()

    bare_s, bare_mem = _timed(bare, args.reps, device)
    fixed = dataclasses.replace(runtime, batch_size=512)
    fixed_s, _ = _timed(lambda: inference.predict(model, images, fixed), 1, device)
    name = torch.cuda.get_device_name(device)
    print(f"bench_gpu: {name}, torch {torch.__version__}, {args.n} images {args.size}x{args.size}")
    print(
        f"  tool dense pass (bf16, batch {bs} chosen from free memory): "
        f"{args.n / tool_s:,.0f} images/s, peak GPU memory {tool_mem / 2**30:.2f} GiB"
    )
    print(f"  tool dense pass at batch 512: {args.n / fixed_s:,.0f} images/s")
    print(
        f"  bare bf16 channels_last loop (batch {bs}): {args.n / bare_s:,.0f} images/s, "
        f"peak GPU memory {bare_mem / 2**30:.2f} GiB"
    )
    print(f"  tool / bare time ratio: {tool_s / bare_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
