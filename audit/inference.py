"""Run models over the cached uint8 images: devices, autocast and torch.distributed.

Owns: device and precision resolution, batched forward passes (dense, calibration, every
pruned model), batch-size and memory-format selection, the batches fed to BN recalibration
and fine-tuning, and sharding/gathering under ``torchrun``. This is the only module that
touches CUDA or ``torch.distributed``; everything it returns is a CPU numpy array. It
computes no metric.

Speed (SPEC §9), and why each step is safe:

* images stay uint8 until they are on the device (4× less to copy) and are normalised
  there in one converting copy plus two in-place ops;
* CUDA: each batch is copied once into pinned memory (``index_select``/``copy_`` straight
  into a pinned buffer from the caching host allocator) and moved with
  ``non_blocking=True``; logits stay on the device until the pass ends (no sync per batch);
  the batch size is derived from ``torch.cuda.mem_get_info`` and a measured per-sample
  footprint, halved on out-of-memory;
* CNNs run in ``channels_last`` on CPU as well as CUDA (oneDNN's NHWC convolutions were
  13–21% faster than NCHW for ResNet18 on the 2-core benchmark machine), unless the model
  refuses such inputs (e.g. ``.view`` on a conv output), which a 2-image probe detects;
* for forward passes (not for BN recalibration or fine-tuning) a Conv/Linear followed by an
  eval-mode BatchNorm is folded into one layer, on an ``torch.fx`` trace of the model that
  shares every other module with it; the folded graph is checked against the model on two
  images and dropped if it differs or cannot be traced.

Under ``torchrun`` every rank holds (and decodes) only a contiguous shard of the rows, a
:class:`Shard`; a pass runs each rank on its own rows and all-gathers the outputs in rank
order, so every rank returns the array a single process would. BN recalibration keeps each
batch of the single-process order, every rank forwarding the part of it that it holds, with
every BatchNorm layer's batch statistics all-reduced (:func:`sync_batchnorm`); fine-tuning
does the same with the train split's batches and DistributedDataParallel
(:func:`training_batches`, :func:`distributed_training`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from audit.errors import UsageError

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: BN recalibration batch size when ``--batch-size`` is not given. Fixed, and independent of
#: the device and of free memory, because BatchNorm statistics depend on how the
#: calibration samples are batched (each batch's mean and variance get equal weight).
CALIB_BATCH_SIZE = 128

#: At most this many calibration samples (a seeded random subset) feed BN recalibration.
#: Running mean/variance are averages over samples; their sampling error is already below
#: 2% of the per-channel std at a few thousand samples, while every extra sample costs a
#: forward pass at every audited sparsity.
CALIB_MAX_SAMPLES = 4096

#: Largest fine-tuning batch size (``--batch-size`` or ``CALIB_BATCH_SIZE`` caps it further).
TRAIN_BATCH_SIZE = 64

#: Largest automatic CUDA batch size (throughput is flat well before this).
MAX_CUDA_BATCH = 1024

#: Fraction of the free device memory the automatic CUDA batch size may plan to use.
CUDA_MEMORY_FRACTION = 0.6

_FOLDABLE = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
    nn.Linear: nn.BatchNorm1d,
}


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
            "--precision fp16 is not supported on CPU (autocast on CPU runs bf16); use fp32 "
            "or bf16."
        )
    return precision


def default_batch_size(device: torch.device) -> int:
    """A starting batch size; :func:`tune_runtime` sizes CUDA batches from free memory."""
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


@dataclass(frozen=True, eq=False)
class Shard:
    """The rows of a data set that this rank holds, when its rows are split over the ranks.

    Rank ``r`` holds the global rows ``offset .. offset + counts[r] - 1``, in order, so the
    concatenation of every rank's rows in rank order is the whole set (what one process
    would hold). Passes over a shard run each rank on its own rows only.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(counts[rank], 3, S, S)`` on CPU: this rank's rows.
    counts : tuple of int
        Rows held by every rank, in rank order.
    rank : int
        This rank.
    """

    images: torch.Tensor
    counts: tuple[int, ...]
    rank: int = 0

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.counts[self.rank]:
            raise ValueError(
                f"rank {self.rank} holds {self.images.shape[0]} rows but counts say "
                f"{self.counts[self.rank]}"
            )

    @property
    def n(self) -> int:
        """Rows over all ranks."""
        return int(sum(self.counts))

    @property
    def offset(self) -> int:
        """Global index of this rank's first row."""
        return int(sum(self.counts[: self.rank]))


def make_shard(images: torch.Tensor, dist_ctx: Dist) -> Shard:
    """Wrap this rank's rows as a :class:`Shard`, learning every rank's row count.

    A collective under torchrun: every rank must call it, in the same order.
    """
    counts = all_gather_object(int(images.shape[0]), dist_ctx)
    return Shard(images=images, counts=tuple(int(c) for c in counts), rank=dist_ctx.rank)


def all_gather_object(obj: object, dist_ctx: Dist) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without torchrun."""
    if dist_ctx.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[object] = [None] * dist_ctx.world
    dist.all_gather_object(out, obj)
    return out


def _agree(flag: bool, dist_ctx: Dist) -> bool:
    """True only when ``flag`` is True on every rank (identity without torchrun)."""
    if dist_ctx.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    gloo on CPU, NCCL on CUDA. Idempotent.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            # Binding the rank to its GPU up front lets NCCL connect eagerly (no guessing
            # of the device at the first collective).
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _SYNC_GROUP.clear()  # destroyed with the default group


def broadcast_object(obj: object, dist_ctx: Dist) -> object:
    """Send a picklable object from rank 0 to every rank (identity without torchrun)."""
    if dist_ctx.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_state(model: nn.Module, runtime: Runtime) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place (no-op without torchrun).

    Every rank prunes, recalibrates or fine-tunes its own copy on the same samples, but
    kernels on different devices need not agree to the last bit; after this every shard is
    evaluated by rank 0's model, as in a single process.
    """
    if runtime.dist.world == 1:
        return
    import torch.distributed as dist

    comm = _comm_device(runtime.device)
    seen: set[int] = set()
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            if t.numel() == 0 or id(t) in seen:
                continue
            seen.add(id(t))
            if t.device == comm and t.is_contiguous():
                dist.broadcast(t, src=0)
            else:
                tmp = t.detach().to(comm).contiguous()
                dist.broadcast(tmp, src=0)
                t.copy_(tmp)


def _comm_device(device: torch.device) -> torch.device:
    """NCCL needs CUDA tensors; gloo takes CPU ones."""
    return device if device.type == "cuda" else torch.device("cpu")


def _gather_rows(local: torch.Tensor, counts: Sequence[int], device: torch.device) -> np.ndarray:
    """All-gather per-rank row blocks (rank r has ``counts[r]`` rows) into one array, in order."""
    import torch.distributed as dist

    comm = _comm_device(device)
    # A rank whose shard is empty never saw an output, so agree on K first.
    width = torch.tensor([local.shape[1] if local.ndim == 2 else 0], dtype=torch.int64, device=comm)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    k = int(width.item())
    biggest = max(counts)
    # Shards differ in length when the world does not divide n (or images were skipped);
    # pad to a common length so one all_gather suffices, then cut each back to its length.
    padded = torch.zeros((biggest, k), dtype=torch.float32, device=comm)
    if local.shape[0]:
        padded[: local.shape[0]] = local.to(comm)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    rows = [part[:c] for part, c in zip(parts, counts, strict=True)]
    return torch.cat(rows).cpu().numpy()


def _local_rows(
    images: torch.Tensor | Shard, dist_ctx: Dist
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Return this rank's rows and every rank's row count.

    A :class:`Shard`'s own, or a contiguous cut of a full tensor that every rank holds.
    """
    if isinstance(images, Shard):
        return images.images, images.counts
    n = images.shape[0]
    if dist_ctx.world == 1:
        return images, (n,)
    cuts = [Dist(rank=r, world=dist_ctx.world).shard(n) for r in range(dist_ctx.world)]
    return images[cuts[dist_ctx.rank]], tuple(c.stop - c.start for c in cuts)


# ---------------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class Runtime:
    """How forward passes run: device, precision, batch sizes, layout, normalisation, ranks.

    Attributes
    ----------
    batch_size : int
        Inference batch size (results do not depend on it).
    calib_batch_size : int
        BN recalibration (and, capped at 64, fine-tuning) batch size; BN statistics depend
        on it, so it never changes with the device or free memory.
    channels_last : bool or None
        NHWC inputs and weights; None until :func:`tune_runtime` decides (then CUDA only).
    """

    device: torch.device
    precision: str
    batch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dist: Dist = Dist()
    calib_batch_size: int = CALIB_BATCH_SIZE
    channels_last: bool | None = None
    # Shared by dataclasses.replace() copies: the batch size that fitted after an OOM, so
    # later passes do not run out of memory again.
    _limits: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of image batches and conv weights."""
        use = self.channels_last if self.channels_last is not None else self.device.type == "cuda"
        return torch.channels_last if use else torch.contiguous_format

    def normaliser(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 NCHW on the device → normalised float32 in :attr:`memory_format`."""
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        fmt = self.memory_format

        def norm(x: torch.Tensor) -> torch.Tensor:
            # One converting copy in the target layout, then in place: no temporaries.
            y = x.to(dtype=torch.float32, memory_format=fmt, copy=True)
            return y.sub_(mean).div_(std)

        return norm

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Autocast for the chosen precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AMP[self.precision])


def prepare_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """Move a model to the runtime's device in eval mode and layout (in place).

    Parameters
    ----------
    model : torch.nn.Module
        Any loaded model (eager, TorchScript, exported).
    runtime : Runtime
        Where and how it will run.

    Returns
    -------
    torch.nn.Module
        The same module object.
    """
    model = model.to(runtime.device).eval()
    _set_layout(model, runtime.memory_format)
    return model


def _set_layout(model: nn.Module, fmt: torch.memory_format) -> None:
    if not any(p.ndim == 4 for p in model.parameters()):
        return
    with contextlib.suppress(Exception):  # TorchScript/exported graphs may refuse
        model.to(memory_format=fmt)


def tune_runtime(
    runtime: Runtime,
    model: nn.Module,
    images: torch.Tensor | Shard,
    *,
    auto_batch_size: bool = True,
) -> Runtime:
    """Decide the memory layout (and, on CUDA, the batch size) from a probe forward pass.

    ``channels_last`` is used for models with 4-D weights (convolutions) unless the model
    fails on such inputs; the model is converted in place to the chosen layout. On CUDA with
    ``auto_batch_size`` the inference batch size becomes the largest power of two whose
    activations, measured on a probe batch, fit in ``CUDA_MEMORY_FRACTION`` of the free
    memory (at most ``MAX_CUDA_BATCH``); out-of-memory still halves it (:func:`predict`).

    Parameters
    ----------
    runtime : Runtime
        The runtime to refine; ``channels_last=False`` or ``True`` is kept as given.
    model : torch.nn.Module
        The dense model, already prepared (:func:`prepare_model`).
    images : torch.Tensor or Shard
        uint8 ``(n, 3, S, S)`` cache (or this rank's part of it); its first rows are the
        probe.
    auto_batch_size : bool, default True
        False when the user chose ``--batch-size``.

    Returns
    -------
    Runtime
        A copy with ``channels_last`` (and maybe ``batch_size``) resolved.
    """
    if isinstance(images, Shard):
        images = images.images
    cl = runtime.channels_last
    if cl is None:
        cl = (
            images.shape[0] > 0
            and any(p.ndim == 4 for p in model.parameters())
            and _runs_channels_last(model, images[:2], runtime)
        )
    # Under torchrun each rank probes its own rows (and an empty shard probes none), so
    # every rank takes rank 0's decision.
    cl = bool(broadcast_object(cl, runtime.dist))
    runtime = dataclasses.replace(runtime, channels_last=cl)
    _set_layout(model, runtime.memory_format)
    if auto_batch_size and runtime.device.type == "cuda" and images.shape[0]:
        runtime = dataclasses.replace(runtime, batch_size=_cuda_batch_size(model, images, runtime))
    return runtime


def _runs_channels_last(model: nn.Module, probe: torch.Tensor, runtime: Runtime) -> bool:
    trial = dataclasses.replace(runtime, channels_last=True)
    _set_layout(model, torch.channels_last)
    try:
        with torch.inference_mode(), trial.autocast():
            model(trial.normaliser()(probe.to(runtime.device)))
    except RuntimeError:
        # e.g. ``x.view(n, -1)`` on an NHWC activation; NCHW is what the model was written for.
        _set_layout(model, torch.contiguous_format)
        return False
    return True


def _cuda_batch_size(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> int:
    """Largest power-of-two batch whose measured activation memory fits the free memory.

    The per-sample footprint is the growth of peak memory between probe batches of 4 and 12
    images, so fixed costs (cuDNN workspaces, autocast's weight copies) are not counted
    per sample.
    """
    dev = runtime.device
    norm = runtime.normaliser()
    n = images.shape[0]
    peaks = []
    sizes = (min(4, n), min(12, n))
    try:
        for k in sizes:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            with torch.inference_mode(), runtime.autocast():
                model(norm(images[:k].to(dev)))
            torch.cuda.synchronize(dev)
            peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    except torch.OutOfMemoryError:
        return 1
    if sizes[1] > sizes[0] and peaks[1] > peaks[0]:
        per_sample = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    else:
        per_sample = peaks[-1] / max(1, sizes[-1])
    free, _ = torch.cuda.mem_get_info(dev)
    # Memory PyTorch's allocator holds but does not use is free to it, not to the driver.
    free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    fits = int(CUDA_MEMORY_FRACTION * free / max(per_sample, 1.0))
    if fits < 1:
        return 1
    return min(MAX_CUDA_BATCH, 1 << (fits.bit_length() - 1))


# ---------------------------------------------------------------------------- forward passes
def _device_batches(
    images: torch.Tensor,
    index: slice | np.ndarray | Sequence[np.ndarray],
    runtime: Runtime,
    batch_size: int,
) -> Iterator[torch.Tensor]:
    """Yield normalised batches on the device over ``images[index]``, in order.

    ``index`` is a contiguous slice (batches are views, no gather), an index array cut into
    ``batch_size`` pieces, or a sequence of index arrays (one per batch). On CUDA each batch
    is gathered straight into pinned memory and copied without blocking.
    """
    norm = runtime.normaliser()
    cuda = runtime.device.type == "cuda"
    if isinstance(index, slice):
        start, stop, _ = index.indices(images.shape[0])
        pieces: Iterator[slice | np.ndarray] = (
            slice(a, min(a + batch_size, stop)) for a in range(start, stop, batch_size)
        )
    elif isinstance(index, np.ndarray):
        pieces = (index[a : a + batch_size] for a in range(0, len(index), batch_size))
    else:
        pieces = iter(index)
    for piece in pieces:
        if isinstance(piece, slice):
            chunk = images[piece]
            if cuda:
                pinned = torch.empty(chunk.shape, dtype=chunk.dtype, pin_memory=True)
                chunk = pinned.copy_(chunk)
        else:
            idx = torch.from_numpy(np.asarray(piece, dtype=np.int64))
            if cuda:
                shape = (len(idx), *images.shape[1:])
                pinned = torch.empty(shape, dtype=images.dtype, pin_memory=True)
                chunk = torch.index_select(images, 0, idx, out=pinned)
            else:
                chunk = images.index_select(0, idx)
        if cuda:
            chunk = chunk.to(runtime.device, non_blocking=True)
        yield norm(chunk)


def predict(
    model: nn.Module,
    images: torch.Tensor | Shard,
    runtime: Runtime,
    *,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits of ``model`` on every cached image, as a float32 (n, K) CPU array.

    Under torchrun each rank runs its own rows (a :class:`Shard`'s, or a contiguous cut of
    a full tensor) and the blocks are all-gathered in rank order, so every rank returns the
    same array as a single process would. On CUDA out-of-memory the pass restarts with half
    the batch size (results do not depend on it).

    Parameters
    ----------
    model : torch.nn.Module
        A model already on ``runtime.device`` (see :func:`prepare_model`); not modified.
    images : torch.Tensor or Shard
        uint8 (n, 3, S, S) cache on CPU, held whole by every rank, or this rank's shard.
    runtime : Runtime
        Device, precision, batch size, layout, normalisation.
    progress : callable, optional
        Called with the number of samples newly finished (this rank's).
    """
    local, counts = _local_rows(images, runtime.dist)
    net = _fold_batchnorm(model, local[:2], runtime)
    # Each rank checked the folded graph on its own rows: fold only where all ranks did, so
    # every rank runs the same graph.
    if not _agree(net is not model, runtime.dist):
        net = model
    key = str(runtime.device)
    batch_size = min(runtime.batch_size, runtime._limits.get(key, runtime.batch_size))
    reported = 0

    def advance(done: int) -> None:
        # A restarted pass reports only the samples beyond what the failed one reported.
        nonlocal reported
        if progress is not None and done > reported:
            progress(done - reported)
            reported = done

    while True:
        try:
            out = _forward_rows(net, local, slice(0, local.shape[0]), runtime, batch_size, advance)
            break
        except torch.OutOfMemoryError:
            if runtime.device.type != "cuda" or batch_size <= 1:
                raise
        # Outside the handler, so the traceback no longer pins the failed batch's tensors.
        torch.cuda.empty_cache()
        batch_size //= 2
        runtime._limits[key] = batch_size
    if runtime.dist.world > 1:
        return _gather_rows(out, counts, runtime.device)
    return out.cpu().numpy()


def _forward_rows(
    model: nn.Module,
    images: torch.Tensor,
    shard: slice,
    runtime: Runtime,
    batch_size: int,
    advance: Callable[[int], None],
) -> torch.Tensor:
    """Logits of ``images[shard]`` as float32 (rows, K) on the device (no sync per batch)."""
    rows = shard.stop - shard.start
    out: torch.Tensor | None = None
    done = 0
    with torch.inference_mode(), runtime.autocast():
        for x in _device_batches(images, shard, runtime, batch_size):
            y = _as_matrix(model(x), x.shape[0])
            if out is None:
                out = torch.empty((rows, y.shape[1]), dtype=torch.float32, device=y.device)
            out[done : done + y.shape[0]] = y
            done += y.shape[0]
            advance(done)
    if out is None:
        return torch.zeros((0, 0))
    return out


def _as_matrix(y: object, rows: int) -> torch.Tensor:
    if isinstance(y, tuple | list):  # e.g. exported graphs returning a 1-tuple
        y = y[0]
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"the model returned {type(y).__name__}, not a tensor of logits")
    return y.reshape(rows, -1)


def _fold_batchnorm(model: nn.Module, probe: torch.Tensor, runtime: Runtime) -> nn.Module:
    """An inference-only view of ``model`` with eval-mode BatchNorm folded into the layer before.

    Folds ``Conv*d → BatchNorm*d`` and ``Linear → BatchNorm1d`` pairs (exact types, no hooks,
    each module called once, the layer's output read only by the norm) on an fx trace; the
    trace shares every other module with ``model``, which is not modified. Returns ``model``
    itself when there is nothing to fold, it cannot be traced, or the folded graph disagrees
    with it on ``probe`` (uint8 images).
    """
    bn_types = set(_FOLDABLE.values())
    if isinstance(model, torch.jit.ScriptModule) or not any(
        type(m) in bn_types for m in model.modules()
    ):
        return model
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - untraceable Python in forward: run the model as is
        return model
    modules = dict(gm.named_modules())
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer, bn = modules.get(prev.target), modules.get(node.target)
        if _FOLDABLE.get(type(layer)) is not type(bn) or calls[prev.target] != 1:
            continue
        if calls[node.target] != 1 or not bn.track_running_stats or bn.running_mean is None:
            continue
        if _has_hooks(layer) or _has_hooks(bn) or layer.training or bn.training:
            continue
        with torch.no_grad():
            new = (
                fuse_linear_bn_eval(layer, bn)
                if isinstance(layer, nn.Linear)
                else fuse_conv_bn_eval(layer, bn)
            )
        parent, _, name = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, new)
        modules[prev.target] = new
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    if not folded:
        return model
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.eval()
    _set_layout(gm, runtime.memory_format)
    if probe.shape[0] and not _same_outputs(model, gm, probe, runtime):
        return model
    return gm


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _same_outputs(a: nn.Module, b: nn.Module, probe: torch.Tensor, runtime: Runtime) -> bool:
    """Whether two models agree (to folding's rounding) on the probe images, in fp32."""
    x = runtime.normaliser()(probe.to(runtime.device))
    try:
        with torch.inference_mode():
            ya, yb = _as_matrix(a(x), x.shape[0]), _as_matrix(b(x), x.shape[0])
    except Exception:  # noqa: BLE001 - a trace that fails to run is a trace not to use
        return False
    scale = float(ya.abs().max()) if ya.numel() else 0.0
    if ya.shape != yb.shape:
        return False
    return bool(torch.allclose(ya, yb, rtol=1e-3, atol=1e-4 * max(1.0, scale)))


def input_batches(
    images: torch.Tensor | Shard,
    runtime: Runtime,
    *,
    seed: int = 0,
    max_samples: int | None = CALIB_MAX_SAMPLES,
    whole: bool = False,
) -> Iterator[torch.Tensor]:
    """Normalised calibration batches on the device, for BN recalibration.

    A seeded random order (so no batch is, say, one class of a sorted split), at most
    ``max_samples`` samples, cut into ``ceil(m / calib_batch_size)`` batches whose sizes
    differ by at most one (BN recalibration weighs every batch equally, so no tiny last
    batch). Given a full tensor, every rank gets the same batches; given a :class:`Shard`,
    the order and the batches are those of the whole set and each rank gets, per batch, the
    rows of it that it holds (possibly none), which :func:`sync_batchnorm` turns into one
    process's statistics, or with ``whole=True`` every batch whole, all-gathered from the
    ranks that hold its rows (for models that cannot sync their statistics).

    Parameters
    ----------
    images : torch.Tensor or Shard
        uint8 (n, 3, S, S) calibration images, or this rank's shard of them.
    runtime : Runtime
        Device, layout, normalisation and ``calib_batch_size``.
    seed : int, default 0
        Seeds the order and the subset.
    max_samples : int or None, default ``CALIB_MAX_SAMPLES``
        Cap on the samples used; None uses all.
    whole : bool, default False
        For a :class:`Shard` under torchrun: gather every batch whole on every rank.
    """
    if whole and isinstance(images, Shard) and runtime.dist.world > 1:
        order = _calibration_order(images.n, runtime, seed=seed, max_samples=max_samples)
        yield from _gathered_batches(images, order, runtime)
        return
    pieces = _calibration_pieces(images, runtime, seed=seed, max_samples=max_samples)
    local = images.images if isinstance(images, Shard) else images
    yield from _device_batches(local, pieces, runtime, 0)


def _calibration_order(
    n: int, runtime: Runtime, *, seed: int, max_samples: int | None
) -> list[np.ndarray]:
    """The single-process calibration batches, as arrays of row numbers of the whole set."""
    order = np.random.default_rng(seed).permutation(n)
    if max_samples is not None:
        order = order[:max_samples]
    if len(order) == 0:
        return []
    n_batches = -(-len(order) // runtime.calib_batch_size)
    return np.array_split(order, n_batches)


def _calibration_pieces(
    images: torch.Tensor | Shard, runtime: Runtime, *, seed: int, max_samples: int | None
) -> list[np.ndarray]:
    """Per batch, the local row indices this rank feeds (see :func:`input_batches`)."""
    if not isinstance(images, Shard):
        return _calibration_order(images.shape[0], runtime, seed=seed, max_samples=max_samples)
    batches = _calibration_order(images.n, runtime, seed=seed, max_samples=max_samples)
    lo, hi = images.offset, images.offset + images.images.shape[0]
    return [b[(b >= lo) & (b < hi)] - lo for b in batches]


def batchnorm_syncable(model: nn.Module) -> bool:
    """Whether every running statistic of ``model`` lives in an eager BatchNorm layer.

    Those layers can all-reduce their batch statistics (:func:`sync_batchnorm`); a model
    whose statistics live elsewhere (TorchScript, InstanceNorm) gets whole batches instead
    (``input_batches(..., whole=True)``).
    """
    if isinstance(model, torch.jit.ScriptModule):
        return False
    norms = {id(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    owners = dict(model.named_modules())
    return all(
        id(owners.get(name.rpartition(".")[0])) in norms
        for name, _ in model.named_buffers()
        if name.rpartition(".")[2] == "running_mean"
    )


_SYNC_GROUP: list[object] = []


def sync_batchnorm(model: nn.Module, runtime: Runtime) -> None:
    """Make ``model``'s BatchNorm layers all-reduce their train-mode batch statistics.

    Under torchrun, for BN recalibration and fine-tuning on a :class:`Shard`: each rank
    forwards only its part of every batch of the single-process order
    (:func:`input_batches`, :func:`training_batches`), and every eager BatchNorm layer in
    train mode all-reduces per-channel sum, sum of squares and count (float64) before
    normalising and updating its running statistics, so they are those of the whole batch,
    as SyncBatchNorm computes them (which refuses CPU tensors); with gradients enabled the
    all-reduce is differentiable, so fine-tuning backpropagates through the whole batch's
    statistics as one process does. In eval mode the layers run as before. In place, for a
    pruned copy; a no-op without torchrun or for a model that is not
    :func:`batchnorm_syncable`.
    """
    if runtime.dist.world == 1 or not batchnorm_syncable(model):
        return
    import torch.distributed as dist

    if not _SYNC_GROUP:
        # Its own group, so these collectives never interleave with others in flight.
        _SYNC_GROUP.append(dist.new_group(backend="gloo" if runtime.device.type == "cpu" else None))
    comm = _comm_device(runtime.device)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and "forward" not in vars(m):
            m.forward = _synced_forward(m, _SYNC_GROUP[0], comm)  # type: ignore[method-assign]


def _synced_forward(
    bn: nn.modules.batchnorm._BatchNorm, group: object, comm: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``bn``'s forward with its train-mode batch statistics all-reduced over ``group``."""
    import torch.distributed as dist

    plain = type(bn).forward.__get__(bn)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not bn.training:
            return plain(x)
        c = x.shape[1]
        dims = [0, *range(2, x.ndim)]
        # Fine-tuning backpropagates through the batch statistics, as one process's
        # BatchNorm does: a differentiable all-reduce (its backward all-reduces the
        # gradient). Recalibration runs under no_grad and needs no autograd graph.
        grad = torch.is_grad_enabled()
        x64 = x.double() if grad else x.detach().double()
        stats = torch.cat(
            [
                x64.sum(dims),
                (x64 * x64).sum(dims),
                torch.tensor([x.numel() / c if c else 0.0], dtype=torch.float64, device=x.device),
            ]
        ).to(comm)
        if grad:
            from torch.distributed.nn.functional import all_reduce

            stats = all_reduce(stats, group=group)
        else:
            dist.all_reduce(stats, group=group)
        stats = stats.to(x.device)
        total, squares, count = stats[:c], stats[c : 2 * c], stats[2 * c]
        if count < 2:
            raise ValueError(
                "BatchNorm recalibration needs more than one value per channel in every batch; "
                f"this batch has {int(count)} over all ranks"
            )
        mean = total / count
        var = (squares / count - mean * mean).clamp_min_(0.0)
        if bn.track_running_stats and bn.running_mean is not None:
            _update_running_stats(bn, mean.detach(), var.detach(), count.detach())
        shape = (1, c) + (1,) * (x.ndim - 2)
        scale = torch.rsqrt(var + bn.eps)
        if bn.affine:
            shift = bn.bias.double() - mean * scale * bn.weight.double()
            scale = scale * bn.weight.double()
        else:
            shift = -mean * scale
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    return forward


@torch.no_grad()
def _update_running_stats(
    bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor
) -> None:
    """Update running statistics as F.batch_norm does in train mode.

    A cumulative average for ``momentum=None``, and the unbiased variance in the estimate.
    """
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    unbiased = var * (count / (count - 1))
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


def _gathered_batches(
    images: Shard, batches: list[np.ndarray], runtime: Runtime
) -> Iterator[torch.Tensor]:
    """Every batch whole on every rank, its rows all-gathered from the ranks holding them."""
    import torch.distributed as dist

    comm = _comm_device(runtime.device)
    norm = runtime.normaliser()
    bounds = np.cumsum([0, *images.counts])
    for b in batches:
        masks = [(b >= bounds[r]) & (b < bounds[r + 1]) for r in range(len(images.counts))]
        mine = b[masks[images.rank]] - images.offset
        rows = images.images.index_select(0, torch.from_numpy(mine.astype(np.int64)))
        sizes = [int(m.sum()) for m in masks]
        padded = torch.zeros((max(sizes), *images.images.shape[1:]), dtype=torch.uint8, device=comm)
        padded[: rows.shape[0]] = rows.to(comm)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        got = torch.cat([p[:k] for p, k in zip(parts, sizes, strict=True)])
        # Rank order -> the batch's own (seeded) order, as one process feeds it.
        where = np.concatenate([np.flatnonzero(m) for m in masks])
        got = got[torch.from_numpy(np.argsort(where, kind="stable"))]
        yield norm(got.to(runtime.device))


def training_batches(
    images: torch.Tensor | Shard,
    targets: np.ndarray,
    runtime: Runtime,
    *,
    epoch: int,
    seed: int,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled (x, y) batches on the device for fine-tuning, seeded per epoch.

    The ``n`` samples are cut into ``ceil(n / b)`` batches (``b = min(calib_batch_size,
    TRAIN_BATCH_SIZE)``) whose sizes differ by at most one, so every sample is used every
    epoch and no batch is a short remainder: BatchNorm in train mode over a 1–2-sample batch
    (at layers whose maps are 1×1) gives degenerate statistics that enter the running
    averages, and used to be the last step of every epoch (450 images in batches of 64 ended
    each epoch with a 2-sample batch).

    Given a :class:`Shard` under torchrun (``targets`` then holds this rank's rows), the
    order and the batches are those of the whole split, and each rank gets, per batch, the
    rows of it that it holds (possibly none) as ``(x, y, w)`` with ``w = world * rows here /
    rows of the batch``: the factor that makes gradients averaged over the ranks (as
    DistributedDataParallel averages them) those of the whole batch's mean loss.

    Raises
    ------
    ValueError
        If there are fewer than two training samples (BatchNorm cannot train on one).
    """
    sharded = isinstance(images, Shard) and runtime.dist.world > 1
    local = images.images if isinstance(images, Shard) else images
    n = images.n if isinstance(images, Shard) else images.shape[0]
    if n < 2:
        raise ValueError(
            f"fine-tuning needs at least 2 training samples (BatchNorm normalises over the "
            f"batch); the train split has {n}"
        )
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    y_all = torch.from_numpy(np.ascontiguousarray(targets))
    bs = min(runtime.calib_batch_size, TRAIN_BATCH_SIZE)
    batches = np.array_split(order, math.ceil(n / bs))
    if isinstance(images, Shard):
        lo, hi = images.offset, images.offset + local.shape[0]
        pieces = [b[(b >= lo) & (b < hi)] - lo for b in batches]
    else:
        pieces = batches
    for b, idx, x in zip(batches, pieces, _device_batches(local, pieces, runtime, bs), strict=True):
        y = y_all[torch.from_numpy(idx)].to(runtime.device)
        if sharded:
            yield x, y, runtime.dist.world * len(idx) / len(b)
        else:
            yield x, y


def distributed_training(model: nn.Module, runtime: Runtime) -> nn.Module:
    """The module that fine-tunes ``model`` on :class:`Shard` batches under torchrun.

    ``model``'s BatchNorm layers all-reduce their statistics (:func:`sync_batchnorm`, in
    place) and it is wrapped in DistributedDataParallel, which starts every rank from rank
    0's weights and averages gradients over the ranks after every backward pass. Without
    torchrun, ``model`` itself.
    """
    if runtime.dist.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    sync_batchnorm(model, runtime)
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
