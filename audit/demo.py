"""The bundled example that ``prune-audit demo`` audits: synthetic data and a small CNN.

Owns: a seeded generator of small RGB images with three binary target attributes and one
protected attribute (written in the manifest layout of SPEC §3.2), the training loop of the
``SmallCNN`` architecture (``audit.demo:small_cnn``, defined in ``audit.models.small_cnn`` so
the architecture registry needs no demo import), and a cache of the generated
data and trained checkpoint. Must not compute audit metrics or prune anything: the demo only
builds inputs, and the real tool audits them like any user's model.

The data plant the phenomenon of Iofinova, Peste & Alistarh (CVPR 2023). The protected
attribute ``Textured`` (a fine grating on the background of 25% of the images) is, in the
*train split only*, spuriously tied to the target ``Warm`` (a warm colour cast): 98% of
textured and 2% of plain train images are warm. In val and test the two are independent,
with the same overall rate of ``Warm`` (26%), so BatchNorm recalibration on val does not
shift decisions by itself. ``Round`` (disc vs square) and ``Bright`` (background lighter vs
darker) are controls, independent of the group everywhere, at a similar rate (27.5%).

What pruning then does (measured with ``examples/tune_demo.py`` and the real tool; numbers
in ``examples/README.md``): the dense model reads the colour but leans on the texture too
(it calls about half of the textured non-warm test images warm). Pruning erodes the colour
evidence, which the model learned from the few group-atypical train images, faster than the
texture shortcut, so at 90-95% sparsity plain warm images are missed far more often than
textured ones and ``Warm``'s FNR gap grows much more than the controls' gaps (its FPR gap,
already large, shrinks). The size of the effect varies with the seed of the data and model
(clear in four of six seeds measured), and from 98% sparsity on this 100k-parameter model
is partly broken: every target's gaps then move erratically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from audit.model_io import save_checkpoint
from audit.models.small_cnn import SmallCNN, small_cnn

__all__ = [
    "CORRELATED_TARGET",
    "DEFAULT_PARAMS",
    "DEMO_GROUP",
    "DEMO_SIZES",
    "DEMO_TARGETS",
    "GENERATOR_VERSION",
    "DemoParams",
    "SmallCNN",
    "channel_stats",
    "data_digest",
    "default_cache_dir",
    "demo_data_matches_shipped",
    "load_demo_split",
    "make_demo_dataset",
    "prepare_demo",
    "shipped_model_path",
    "small_cnn",
    "train_demo_model",
]

DEMO_TARGETS: tuple[str, ...] = ("Warm", "Round", "Bright")
"""Target attributes, in model-output order. ``Warm`` carries the planted shortcut."""

DEMO_GROUP: str = "Textured"
"""The protected attribute: a fine grating texture on about a quarter of the images."""

CORRELATED_TARGET: str = "Warm"
"""The target that is spuriously correlated with ``DEMO_GROUP`` in the train split."""

GENERATOR_VERSION: str = "3"
"""Bump whenever rendering or sampling changes, so cached demos are rebuilt."""

ARCH: str = "audit.demo:small_cnn"

SPLITS: tuple[str, ...] = ("train", "val", "test")

DEMO_SIZES: dict[str, int] = {"n_train": 8000, "n_val": 1000, "n_test": 3000, "image_size": 32}
"""Split sizes of the bundled demo (the defaults of ``make_demo_dataset``)."""


@dataclass(frozen=True)
class DemoParams:
    """Every knob of the demo generator and trainer (hashed into the cache key).

    Parameters
    ----------
    group_rate : float
        Share of images with the protected attribute, in every split.
    train_pos_rate_in_group : float
        ``P(Warm=1 | Textured=1)`` in the train split.
    train_pos_rate_out_group : float
        ``P(Warm=1 | Textured=0)`` in the train split.
    control_pos_rate : float
        Positive rate of the control targets in every split, independent of everything.
    faint_share : float
        Share of target evidence drawn near the faint end of its strength range.
    warm : tuple of float
        Range of the warm colour cast of ``Warm`` images (faint end, strong end): red up and
        blue down by this much, in [0, 1] intensity units.
    bright_delta : tuple of float
        Range of the background luminance offset from mid-grey (sign set by ``Bright``).
    shape_contrast : tuple of float
        Range of the shape's luminance contrast against the background.
    shape_radius : tuple of float
        Range of the shape's radius (of the disc; the square has the same area), as a
        fraction of the image side.
    texture_amp : tuple of float
        Range of the amplitude of the grating that marks ``Textured`` images.
    texture_period : tuple of float
        Range of the grating's period in pixels.
    texture_halo : float
        Width in pixels of the untextured margin around the shape.
    noise : float
        Standard deviation of the per-pixel Gaussian noise.
    color_jitter : float
        Standard deviation of the per-image, per-channel colour offset (the nuisance
        against which a faint warm cast must be told apart).
    epochs : int
        Training epochs.
    batch_size : int
        Training batch size.
    lr : float
        Peak learning rate of the one-cycle AdamW schedule.
    weight_decay : float
        AdamW weight decay.
    widths : tuple of int
        Channels of the four conv-BN-ReLU blocks of ``SmallCNN``.
    head_from : int
        How many of the last blocks feed ``SmallCNN``'s head.

    Notes
    -----
    In val and test, ``P(Warm=1 | Textured=v)`` is the same for both ``v``: the train
    split's marginal rate (``warm_rate``). Keeping every marginal equal across splits
    matters: BatchNorm recalibration on val would otherwise shift decisions by itself, and
    that change would be mistaken for an effect of pruning.
    """

    group_rate: float = 0.25
    train_pos_rate_in_group: float = 0.98
    train_pos_rate_out_group: float = 0.02
    control_pos_rate: float = 0.275
    faint_share: float = 0.3
    warm: tuple[float, float] = (0.02, 0.4)
    bright_delta: tuple[float, float] = (0.03, 0.2)
    shape_contrast: tuple[float, float] = (0.25, 0.5)
    shape_radius: tuple[float, float] = (0.16, 0.27)
    texture_amp: tuple[float, float] = (0.06, 0.12)
    texture_period: tuple[float, float] = (2.5, 4.0)
    texture_halo: float = 2.0
    noise: float = 0.05
    color_jitter: float = 0.02
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    head_from: int = 2

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``small_cnn`` for this model (JSON-like, for checkpoints)."""
        return {"widths": list(self.widths), "head_from": self.head_from}

    @property
    def warm_rate(self) -> float:
        """Marginal ``P(Warm=1)``, the same in every split."""
        return (
            self.group_rate * self.train_pos_rate_in_group
            + (1.0 - self.group_rate) * self.train_pos_rate_out_group
        )


DEFAULT_PARAMS = DemoParams()


# --------------------------------------------------------------------------- generation


def _strength(rng: np.random.Generator, n: int, faint_share: float) -> np.ndarray:
    """Draw evidence strengths in [0, 1]: a ``faint_share`` near 0, the rest spread out.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of draws.
    faint_share : float
        Probability that a draw comes from the faint component ``U(0, 0.25)``; the others
        come from ``U(0.25, 1)``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float array.
    """
    faint = rng.random(n) < faint_share
    return np.where(faint, rng.uniform(0.0, 0.25, n), rng.uniform(0.25, 1.0, n))


def _lerp(lo_hi: tuple[float, float], s: np.ndarray) -> np.ndarray:
    """Map strengths ``s`` in [0, 1] linearly onto the range ``lo_hi``."""
    lo, hi = lo_hi
    return lo + (hi - lo) * s


def _sample_labels(
    rng: np.random.Generator, n: int, split: str, p: DemoParams
) -> dict[str, np.ndarray]:
    """Draw the binary attributes of one split, planting the correlation in train only.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of images.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    p : DemoParams
        Generator parameters.

    Returns
    -------
    dict of str to numpy.ndarray
        ``(n,)`` int arrays for every target and the group.
    """
    group = (rng.random(n) < p.group_rate).astype(np.int64)
    if split == "train":
        rate = np.where(group == 1, p.train_pos_rate_in_group, p.train_pos_rate_out_group)
    else:
        rate = np.full(n, p.warm_rate)
    labels = {CORRELATED_TARGET: (rng.random(n) < rate).astype(np.int64)}
    for name in DEMO_TARGETS:
        if name != CORRELATED_TARGET:
            labels[name] = (rng.random(n) < p.control_pos_rate).astype(np.int64)
    labels[DEMO_GROUP] = group
    return labels


def _render(
    rng: np.random.Generator, labels: dict[str, np.ndarray], size: int, p: DemoParams
) -> np.ndarray:
    """Render images whose content shows the labels, with random nuisance.

    Each image is a mid-grey background, lighter when ``Bright`` and darker otherwise, with
    a random colour offset; a grating at a random angle, period and phase when
    ``Textured``; one filled shape at a random place, size and colour, a disc when
    ``Round`` and a square of the same area otherwise; a warm cast when ``Warm`` (red up,
    blue down, so luminance barely moves); and pixel noise. Every piece of target evidence
    has a random strength, a share of it faint; the texture is always clearly visible.
    Random draws do not depend on the labels, so flipping one label of a sample changes
    only that attribute's rendering.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    labels : dict of str to numpy.ndarray
        Output of ``_sample_labels``.
    size : int
        Image side in pixels.
    p : DemoParams
        Generator parameters.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size, 3)`` uint8 array.
    """
    n = len(labels[DEMO_GROUP])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = yy[None], xx[None]

    # Background: luminance offset by Bright, plus a per-image colour nuisance.
    sign = np.where(labels["Bright"] == 1, 1.0, -1.0)
    lum = 0.5 + sign * _lerp(p.bright_delta, _strength(rng, n, p.faint_share))
    img = np.repeat(lum[:, None, None, None], 3, axis=3).astype(np.float32)
    img = img + rng.normal(0.0, p.color_jitter, (n, 1, 1, 3)).astype(np.float32)

    # Shape geometry: a disc (Round) or an axis-aligned square of the same area.
    radius = rng.uniform(*p.shape_radius, n)[:, None, None] * size
    cy = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    cx = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    half = radius * 0.886  # a square of side 2 * 0.886 * r has the disc's area
    dist_disc = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - radius
    dist_square = np.maximum(np.abs(yy - cy), np.abs(xx - cx)) - half
    dist = np.where(labels["Round"][:, None, None] == 1, dist_disc, dist_square)

    # Texture (the protected attribute): a luminance grating on the background, kept
    # ``texture_halo`` pixels away from the shape so the shape's outline looks the same in
    # both groups; amplitude 0 when absent.
    amp = rng.uniform(*p.texture_amp, n) * labels[DEMO_GROUP]
    theta = rng.uniform(0.0, math.pi, n)[:, None, None]
    period = rng.uniform(*p.texture_period, n)[:, None, None]
    phase = rng.uniform(0.0, 2 * math.pi, n)[:, None, None]
    wave = np.sin(2 * math.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    wave = wave * (dist > p.texture_halo)
    background = img
    img = img + (amp[:, None, None] * wave)[..., None].astype(np.float32)

    # Shape fill: a random contrast (sign and strength) and hue against the background.
    contrast = _lerp(p.shape_contrast, _strength(rng, n, p.faint_share))
    contrast = contrast * rng.choice([-1.0, 1.0], n)
    hue = rng.normal(0.0, 0.05, (n, 3))
    shape_rgb = (contrast[:, None] + hue).astype(np.float32)
    img = np.where((dist <= 0)[..., None], background + shape_rgb[:, None, None, :], img)

    # Warm cast: red up, blue down, green barely (luminance moves by ~0.2 * t).
    t = _lerp(p.warm, _strength(rng, n, p.faint_share)) * labels["Warm"]
    cast = np.stack([t, -0.1 * t, -t], axis=1).astype(np.float32)
    img = img + cast[:, None, None, :]

    img = img + rng.normal(0.0, p.noise, img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_demo_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    n_train: int = 8000,
    n_val: int = 1000,
    n_test: int = 3000,
    image_size: int = 32,
    params: DemoParams = DEFAULT_PARAMS,
) -> Path:
    """Write the demo dataset in the manifest layout (SPEC §3.2).

    Writes ``root/labels.csv`` with columns ``image, split, Striped, Round, Bright,
    Tinted`` (0/1 values) and ``root/images/<split>_<index>.png`` (RGB). Each split is drawn
    from its own seeded stream, so the output is byte-for-byte identical for the same
    arguments, and changing one split's size leaves the others unchanged.

    Parameters
    ----------
    root : str or Path
        Output directory (created if missing; existing files with the same names are
        overwritten).
    seed : int, default 0
        Seed of everything random.
    n_train, n_val, n_test : int
        Images per split.
    image_size : int, default 32
        Side of the square images in pixels.
    params : DemoParams, optional
        Generator parameters; the defaults are the tuned demo.

    Returns
    -------
    Path
        ``root``.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    columns = ["image", "split", *DEMO_TARGETS, DEMO_GROUP]
    rows: list[list[str | int]] = []
    for split_index, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test), strict=True)):
        rng = np.random.default_rng([seed, split_index])
        labels = _sample_labels(rng, n, split, params)
        images = _render(rng, labels, image_size, params)
        for i in range(n):
            rel = f"images/{split}_{i:05d}.png"
            Image.fromarray(images[i], mode="RGB").save(root / rel, optimize=False)
            rows.append([rel, split, *(int(labels[c][i]) for c in columns[2:])])
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return root


def load_demo_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one split of a written demo dataset back from its PNGs.

    Parameters
    ----------
    root : str or Path
        Directory written by ``make_demo_dataset``.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.

    Returns
    -------
    images : numpy.ndarray
        ``(n, H, W, 3)`` uint8.
    targets : numpy.ndarray
        ``(n, len(DEMO_TARGETS))`` float32 0/1 labels in output order.
    group : numpy.ndarray
        ``(n,)`` int64 values of ``DEMO_GROUP``.
    """
    root = Path(root)
    paths: list[str] = []
    targets: list[list[float]] = []
    group: list[int] = []
    with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == split:
                paths.append(row["image"])
                targets.append([float(row[t]) for t in DEMO_TARGETS])
                group.append(int(row[DEMO_GROUP]))
    if not paths:
        raise ValueError(f"{root / 'labels.csv'} has no rows with split == {split!r}")
    images = np.stack([np.asarray(Image.open(root / p).convert("RGB")) for p in paths])
    return (
        images,
        np.asarray(targets, dtype=np.float32).reshape(len(paths), len(DEMO_TARGETS)),
        np.asarray(group, dtype=np.int64),
    )


# ---------------------------------------------------------------------------- training


def _to_tensor(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Turn ``(n, H, W, 3)`` uint8 images into normalised ``(n, 3, H, W)`` float32."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, H, W, 3)`` uint8.

    Returns
    -------
    mean, std : list of float
        Three values each, rounded to 4 decimals so they serialise cleanly.
    """
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def train_demo_model(
    root: Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    params: DemoParams = DEFAULT_PARAMS,
    max_train: int | None = None,
    num_threads: int | None = 1,
) -> nn.Module:
    """Train a ``SmallCNN`` on the train split of a written demo dataset.

    Multilabel training with ``BCEWithLogitsLoss``, AdamW with a one-cycle schedule and
    random horizontal flips (every attribute is flip-invariant). Images are read back from
    the PNGs with Pillow and normalised with the train split's per-channel mean and std,
    which are attached to the returned model as ``model.demo_preprocess`` (a dict with
    ``image_size``, ``mean``, ``std``) for the checkpoint. The caller's torch RNG state and
    thread count are left as they were.

    Parameters
    ----------
    root : Path
        Directory written by ``make_demo_dataset``.
    seed : int, default 0
        Seed of initialisation and batch order.
    epochs : int, optional
        Training epochs; ``params.epochs`` when omitted.
    progress : callable, optional
        Called as ``progress(done, total)`` after every epoch.
    params : DemoParams, optional
        Model width and optimiser settings.
    max_train : int, optional
        Use only the first ``max_train`` train images (for quick tests).
    num_threads : int or None, default 1
        Torch intra-op threads while training; None keeps the current setting. One thread
        by default: these small convolutions gain little from more, and on a busy machine
        OpenMP threads that spin-wait for a loaded core made each epoch 5-10x slower with
        two threads on two cores (measured).

    Returns
    -------
    torch.nn.Module
        The trained model in eval mode, on CPU.
    """
    epochs = params.epochs if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    images, targets, _ = load_demo_split(root, "train")
    if max_train is not None:
        images, targets = images[:max_train], targets[:max_train]
    mean, std = channel_stats(images)
    x = _to_tensor(images, np.asarray(mean), np.asarray(std))
    y = torch.from_numpy(targets)

    previous_threads = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _fit(x, y, seed=seed, epochs=epochs, params=params, progress=progress)
    finally:
        torch.set_num_threads(previous_threads)
    model.demo_preprocess = {"image_size": int(images.shape[1]), "mean": mean, "std": std}
    return model


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    params: DemoParams,
    progress: Callable[[int, int], None] | None,
) -> SmallCNN:
    """Run the training loop of ``train_demo_model`` on normalised tensors.

    Parameters
    ----------
    x : torch.Tensor
        ``(n, 3, H, W)`` normalised images.
    y : torch.Tensor
        ``(n, len(DEMO_TARGETS))`` float 0/1 labels.
    seed : int
        Seed of the batch order and flips.
    epochs : int
        Training epochs.
    params : DemoParams
        Model and optimiser settings.
    progress : callable or None
        Called as ``progress(done, total)`` after every epoch.

    Returns
    -------
    SmallCNN
        The trained model in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    model = SmallCNN(len(DEMO_TARGETS), widths=params.widths, head_from=params.head_from)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / params.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=params.lr, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), params.batch_size):
            idx = order[start : start + params.batch_size]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], x[idx].flip(3), x[idx])
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    return model.eval()


# ------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """Where demo data and checkpoints are cached.

    Returns
    -------
    Path
        ``$PRUNE_AUDIT_CACHE`` if set, else ``$XDG_CACHE_HOME/prune-audit``, else
        ``~/.cache/prune-audit``.
    """
    if os.environ.get("PRUNE_AUDIT_CACHE"):
        return Path(os.environ["PRUNE_AUDIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "prune-audit"
    return Path.home() / ".cache" / "prune-audit"


def _cache_key(seed: int, sizes: dict[str, int], params: DemoParams) -> str:
    """Hash of everything that determines the demo's bytes."""
    blob = json.dumps(
        {"version": GENERATOR_VERSION, "seed": seed, "sizes": sizes, "params": asdict(params)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shipped_model_path() -> Path:
    """The demo checkpoint shipped in the package (``audit/demo_assets/model.pt``).

    It is what ``train_demo_model`` produced for the default demo (seed 0, ``DEMO_SIZES``,
    ``DEFAULT_PARAMS``); shipping it makes the demo's numbers independent of the CPU that
    would otherwise train it (training sums in CPU-specific orders, and 6 epochs amplify
    last-bit differences into a different model). ``audit/demo_assets/manifest.json``
    records how it was made and the digest of the data it was trained on.
    """
    return Path(__file__).resolve().parent / "demo_assets" / "model.pt"


def _shipped_manifest() -> dict[str, Any]:
    path = shipped_model_path().with_name("manifest.json")
    return json.loads(path.read_text(encoding="utf-8"))


def data_digest(root: str | Path) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``root``, in path order.

    Parameters
    ----------
    root : str or Path
        A directory written by ``make_demo_dataset``.

    Returns
    -------
    str
        Hex digest; equal digests mean byte-identical datasets.
    """
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def prepare_demo(
    out_dir: Path | None = None,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    params: DemoParams = DEFAULT_PARAMS,
    sizes: dict[str, int] | None = None,
    retrain: bool = False,
) -> tuple[Path, Path]:
    """Generate the demo data (cached) and return it with the demo checkpoint.

    The data are generated with seeded numpy only, so they are byte-identical across
    machines (their digest is checked against ``demo_assets/manifest.json``). The model of
    the default demo is the shipped checkpoint (:func:`shipped_model_path`); with
    ``retrain=True``, or any other seed, parameters or sizes, a model is trained on this
    machine and cached (``retrain`` replaces a cached one).

    The cache entry ``<cache_dir>/demo-<hash>/`` (hash of the generator version, seed, sizes
    and parameters) holds ``data/`` (manifest layout), ``data.sha256`` and, for trained
    models, ``model.pt`` (a prune-audit checkpoint whose ``preprocess`` is the train split's
    mean and std, as used in training). Each piece is built in a temporary file or folder and
    renamed into place, so an interrupted run never leaves a half-written entry.

    Parameters
    ----------
    out_dir : Path, optional
        If given, ``data/`` and ``model.pt`` are copied there and those paths returned
        (existing ones are replaced); otherwise the cached (or shipped) paths are returned.
    seed : int, default 0
        Seed of data generation and training.
    cache_dir : Path, optional
        Cache root; ``default_cache_dir()`` when omitted.
    progress : callable, optional
        Called as ``progress(stage, done, total)`` with stage ``"generate"`` (0 then 1 of 1)
        or ``"train"`` (after every epoch); never called for what the cache already holds.
    params : DemoParams, optional
        Generator and trainer parameters.
    sizes : dict, optional
        ``n_train``, ``n_val``, ``n_test``, ``image_size``; ``DEMO_SIZES`` when omitted.
    retrain : bool, default False
        Train the model on this machine even where a shipped one exists.

    Returns
    -------
    model_path : Path
        The checkpoint.
    data_dir : Path
        The dataset directory.
    """
    sizes = dict(DEMO_SIZES if sizes is None else sizes)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_root / f"demo-{_cache_key(seed, sizes, params)}"
    if not (entry / "data.sha256").is_file():
        if entry.exists():  # not ours to trust: a hand-edited, foreign or older directory
            shutil.rmtree(entry)
        _build_data_entry(entry, seed=seed, sizes=sizes, params=params, progress=progress)
    shipped = not retrain and (seed, sizes, params) == (0, DEMO_SIZES, DEFAULT_PARAMS)
    if shipped:
        model_path = shipped_model_path()
    else:
        model_path = entry / "model.pt"
        if retrain or not model_path.is_file():
            _train_into(model_path, entry / "data", seed=seed, params=params, progress=progress)
    if out_dir is None:
        return model_path, entry / "data"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "data").exists():
        shutil.rmtree(out_dir / "data")
    shutil.copytree(entry / "data", out_dir / "data")
    shutil.copy2(model_path, out_dir / "model.pt")
    return out_dir / "model.pt", out_dir / "data"


def demo_data_matches_shipped(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds the bytes the shipped demo model was trained and measured on.

    Parameters
    ----------
    data_dir : Path
        The ``data`` folder of a demo cache entry (its sibling ``data.sha256`` is read).

    Returns
    -------
    bool
        True when the recorded digest equals ``demo_assets/manifest.json``'s.
    """
    recorded = (Path(data_dir).parent / "data.sha256").read_text(encoding="ascii").strip()
    return recorded == _shipped_manifest()["data_sha256"]


def _build_data_entry(
    entry: Path,
    *,
    seed: int,
    sizes: dict[str, int],
    params: DemoParams,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Write the data of one cache entry in a temporary sibling directory, then rename it."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-tmp-", dir=entry.parent))
    try:
        if progress is not None:
            progress("generate", 0, 1)
        make_demo_dataset(tmp / "data", seed=seed, params=params, **sizes)
        (tmp / "data.sha256").write_text(data_digest(tmp / "data") + "\n", encoding="ascii")
        if progress is not None:
            progress("generate", 1, 1)
        try:
            tmp.rename(entry)
        except OSError:
            # Another process finished the same entry first; its content is identical.
            if not (entry / "data.sha256").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _train_into(
    path: Path,
    data_dir: Path,
    *,
    seed: int,
    params: DemoParams,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Train the demo model on ``data_dir`` and save it at ``path`` (atomically)."""
    model = train_demo_model(
        data_dir,
        seed=seed,
        params=params,
        progress=None if progress is None else partial(progress, "train"),
    )
    fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".pt.tmp", dir=path.parent)
    os.close(fd)
    try:
        save_checkpoint(
            tmp_name,
            model,
            arch=ARCH,
            arch_kwargs=params.arch_kwargs,
            outputs=list(DEMO_TARGETS),
            task="multilabel",
            preprocess=dict(model.demo_preprocess),
        )
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
