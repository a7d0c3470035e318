"""Run models over the cached uint8 images: devices, autocast and torch.distributed.

Owns: device and precision resolution, batched forward passes (dense, calibration, every
pruned model), batch-size selection, the batches fed to BN recalibration and fine-tuning, and
sharding/gathering under ``torchrun``. This is the only module that touches CUDA or
``torch.distributed``; everything it returns is a CPU numpy array. It computes no metric.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from audit.errors import UsageError

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto|cpu|cuda[:N]`` into a device, refusing CUDA where there is none.

    Under torchrun with CUDA, ``auto`` picks the GPU given by ``LOCAL_RANK``.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {spec} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use --device cpu or --device auto."
            )
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise UsageError(
                f"--device {spec!r} is not a valid device; use cuda or cuda:N."
            ) from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {spec} names GPU {dev.index} but only {torch.cuda.device_count()} "
                "are visible."
            )
        return dev
    raise UsageError(f"--device {spec!r} is not one of auto, cpu, cuda, cuda:N.")


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Default precision: fp32 on CPU, bf16 on CUDA (SPEC §2)."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision {precision!r} is not one of fp32, bf16, fp16.")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError(
            "--precision fp16 is not supported on CPU (autocast on CPU runs bf16); "
            "use fp32 or bf16."
        )
    return precision


def default_batch_size(device: torch.device) -> int:
    """A starting batch size; CUDA passes halve it on out-of-memory."""
    return 512 if device.type == "cuda" else 128


# ---------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Dist:
    """Where this process sits in a ``torchrun`` launch (world of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that computes metrics and writes reports."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """Contiguous shard of ``range(n)`` for this rank; sizes differ by at most one."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    gloo on CPU, NCCL on CUDA. Idempotent.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: object, dist_ctx: Dist) -> object:
    """Send a picklable object from rank 0 to every rank (identity without torchrun)."""
    if dist_ctx.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_rows(
    local: torch.Tensor, n_total: int, dist_ctx: Dist, device: torch.device
) -> np.ndarray:
    """All-gather contiguous row shards into the full (n_total, K) array, in order."""
    import torch.distributed as dist

    width = local.shape[1]
    biggest = -(-n_total // dist_ctx.world)
    # Shards differ in length when the world does not divide n; pad to a common length so
    # one all_gather suffices, then cut every shard back to its true length.
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    padded = torch.zeros((biggest, width), dtype=local.dtype, device=comm_device)
    padded[: local.shape[0]] = local.to(comm_device)
    parts = [torch.empty_like(padded) for _ in range(dist_ctx.world)]
    dist.all_gather(parts, padded)
    rows = []
    for r, part in enumerate(parts):
        s = Dist(rank=r, world=dist_ctx.world).shard(n_total)
        rows.append(part[: s.stop - s.start].cpu())
    return torch.cat(rows).numpy()


# ---------------------------------------------------------------------------- forward passes
@dataclass(frozen=True)
class Runtime:
    """How forward passes run: device, precision, batch size, normalisation, distribution."""

    device: torch.device
    precision: str
    batch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dist: Dist = Dist()

    def normaliser(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 NCHW on the device → normalised float32 (channels_last on CUDA)."""
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        channels_last = self.device.type == "cuda"

        def norm(x: torch.Tensor) -> torch.Tensor:
            x = (x.float() - mean) / std
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x

        return norm

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Autocast for the chosen precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AMP[self.precision])


def prepare_model(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """Move a model to the runtime's device in eval mode (channels_last on CUDA)."""
    model = model.to(runtime.device).eval()
    if runtime.device.type == "cuda":
        with contextlib.suppress(Exception):  # TorchScript/exported graphs may refuse
            model = model.to(memory_format=torch.channels_last)
    return model


def _device_batches(
    images: torch.Tensor, index: np.ndarray | slice, runtime: Runtime, batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (rows, normalised batch on device) over ``images[index]``, pinned for CUDA."""
    norm = runtime.normaliser()
    cuda = runtime.device.type == "cuda"
    rows = np.arange(images.shape[0])[index] if isinstance(index, slice) else index
    contiguous = isinstance(index, slice)
    for start in range(0, len(rows), batch_size):
        if contiguous:
            a = int(rows[start]) if len(rows) else 0
            chunk = images[a : a + min(batch_size, len(rows) - start)]
        else:
            chunk = images[torch.from_numpy(rows[start : start + batch_size])]
        if cuda:
            chunk = chunk.pin_memory().to(runtime.device, non_blocking=True)
        yield chunk.shape[0], norm(chunk)


def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    runtime: Runtime,
    *,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits of ``model`` on every cached image, as a float32 (n, K) CPU array.

    Under torchrun each rank runs its contiguous shard and the shards are all-gathered, so
    every rank returns the same array as a single process would.

    Parameters
    ----------
    model : torch.nn.Module
        A model already on ``runtime.device`` (see :func:`prepare_model`).
    images : torch.Tensor
        uint8 (n, 3, S, S) cache on CPU.
    runtime : Runtime
        Device, precision, batch size, normalisation.
    progress : callable, optional
        Called with the number of samples finished after every batch (this rank's).
    """
    n = images.shape[0]
    shard = runtime.dist.shard(n)
    batch_size = runtime.batch_size
    while True:
        try:
            local = _forward_rows(model, images, shard, runtime, batch_size, progress)
            break
        except torch.OutOfMemoryError:
            if runtime.device.type != "cuda" or batch_size <= 1:
                raise
            torch.cuda.empty_cache()
            batch_size //= 2  # retry the pass with smaller batches; results are unchanged
    if runtime.dist.world > 1:
        return _gather_rows(local, n, runtime.dist, runtime.device)
    return local.numpy()


def _forward_rows(
    model: torch.nn.Module,
    images: torch.Tensor,
    shard: slice,
    runtime: Runtime,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> torch.Tensor:
    outs: list[torch.Tensor] = []
    with torch.inference_mode(), runtime.autocast():
        for rows, x in _device_batches(images, shard, runtime, batch_size):
            y = model(x)
            if isinstance(y, tuple | list):  # e.g. exported graphs returning a 1-tuple
                y = y[0]
            if y.ndim == 1:
                y = y.unsqueeze(1)
            outs.append(y.float().reshape(rows, -1).to("cpu", non_blocking=True))
            if progress is not None:
                progress(rows)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    if not outs:
        return torch.zeros((0, 0))
    return torch.cat(outs)


def input_batches(
    images: torch.Tensor,
    runtime: Runtime,
    *,
    max_batches: int | None = None,
) -> Iterator[torch.Tensor]:
    """Normalised image batches on the device (for BN recalibration), in order."""
    for i, (_, x) in enumerate(_device_batches(images, slice(None), runtime, runtime.batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield x


def training_batches(
    images: torch.Tensor,
    targets: np.ndarray,
    runtime: Runtime,
    *,
    epoch: int,
    seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (x, y) batches on the device for fine-tuning, seeded per epoch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(images.shape[0])
    y_all = torch.from_numpy(np.ascontiguousarray(targets))
    bs = min(runtime.batch_size, 64)
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        _, x = next(_device_batches(images, idx, runtime, len(idx)))
        yield x, y_all[torch.from_numpy(idx)].to(runtime.device)
