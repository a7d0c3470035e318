"""The forecast benchmark's corpus: case specifications, data, models and audits (not packaged).

A *case* is one (dataset, model, recovery) audited by the real tool (``audit.run_audit``) at
sparsities 0.8, 0.9 and 0.95. Two sources of images, both offline and seeded:

* ``digits`` — scikit-learn's handwritten digit scans (``load_digits``: 1797 real 8×8 scans,
  shipped with the package), upsampled to ``IMAGE_SIZE``×``IMAGE_SIZE`` RGB. Targets ``even``
  (digit is even), ``big`` (digit ≥ 5) and ``loop`` (0, 6, 8, 9); protected attributes
  derived from the images, each split at its per-digit median so that, as drawn, it carries
  no information about the digit: ``thick`` (total ink) and ``tophv`` (share of ink in the
  top half). A *planted* case subsamples the train split so that one target is spuriously
  tied to one attribute there (``P(target | attr=1)`` and ``P(target | attr=0)`` set to
  ``hi``/``lo``); val and test are left as drawn, so the tie is train-only.
* ``demo`` — the project's own generator (``audit.demo``) with its train-only correlation
  between ``Warm`` and ``Textured`` set to none / weak / medium / strong.

Planted pair of a case: (its planted target, its planted attribute); every other pair is
unplanted (a "none" case has none). Models: the demo's ``SmallCNN`` (``cnn``) and
torchvision's ResNet18 (``resnet18``, digits only). Recovery ``bn`` for every
configuration and ``finetune`` for a subset (the tool's defaults on the commit that built
it). The split into a *design* part and a *held-out* part is fixed here, by case, before
anything was fitted (``HELDOUT``).

Everything heavy is cached under ``~/.cache/prune-audit/forecast-corpus/<name>-<hash>/``
(hash of the case spec and ``CORPUS_VERSION``): the data bundle, the checkpoint and the
audit's ``report.json`` + ``predictions.npz``. A case whose entry holds ``done.json`` is
never rebuilt, so an interrupted build resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CORPUS_VERSION = "3"
SPARSITIES = (0.8, 0.9, 0.95)
IMAGE_SIZE = 16
DIGIT_TARGETS = ("even", "big", "loop")
DIGIT_GROUPS = ("thick", "tophv")
STRENGTHS = {  # (P(target | attr=1), P(target | attr=0)) in the train split
    "none": None,
    "weak": (0.6, 0.3),
    "medium": (0.75, 0.2),
    "strong": (0.92, 0.08),
}


@dataclass(frozen=True)
class CaseSpec:
    """One audit case (hashed into its cache key)."""

    name: str
    source: str  # "digits" | "demo"
    arch: str  # "cnn" | "resnet18"
    strength: str  # key of STRENGTHS
    plant_target: str | None
    plant_group: str | None
    seed: int
    recovery: str  # "bn" | "finetune"

    def key(self) -> str:
        blob = json.dumps(
            {"v": CORPUS_VERSION, "size": IMAGE_SIZE, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def planted(self) -> tuple[str, str] | None:
        if self.strength == "none" or self.plant_target is None or self.plant_group is None:
            return None
        return (self.plant_target, self.plant_group)


def _cases() -> list[CaseSpec]:
    out = []
    plants = [
        ("none", None, None),
        ("medium", "even", "thick"),
        ("strong", "even", "thick"),
        ("strong", "loop", "tophv"),
        ("medium", "big", "tophv"),
    ]
    for strength, t, g in plants:
        tag = "none" if t is None else f"{strength}-{t}-{g}"
        # ResNet18 costs ~20x the small CNN on CPU: one seed, three plants only.
        resnet_seeds = (0,) if strength != "medium" or t == "even" else ()
        for arch, seeds in (("cnn", (0, 1)), ("resnet18", resnet_seeds)):
            for seed in seeds:
                out.append(
                    CaseSpec(
                        f"digits-{tag}-{arch}-s{seed}-bn",
                        "digits",
                        arch,
                        strength,
                        t,
                        g,
                        seed,
                        "bn",
                    )
                )
        out.append(
            CaseSpec(
                f"digits-{tag}-cnn-s2-finetune", "digits", "cnn", strength, t, g, 2, "finetune"
            )
        )
    for strength in ("none", "weak", "medium", "strong"):
        for seed in (0, 1):
            t, g = ("Warm", "Textured") if strength != "none" else (None, None)
            out.append(
                CaseSpec(
                    f"demo-{strength}-cnn-s{seed}-bn", "demo", "cnn", strength, t, g, seed, "bn"
                )
            )
    for strength in ("none", "medium", "strong"):
        t, g = ("Warm", "Textured") if strength != "none" else (None, None)
        out.append(
            CaseSpec(
                f"demo-{strength}-cnn-s2-finetune", "demo", "cnn", strength, t, g, 2, "finetune"
            )
        )
    return out


CASES: tuple[CaseSpec, ...] = tuple(_cases())


def _heldout(spec: CaseSpec) -> bool:
    # Fixed before fitting: a hash of the case name, about a third of the cases.
    return int(hashlib.sha256(spec.name.encode()).hexdigest(), 16) % 3 == 0


HELDOUT: frozenset[str] = frozenset(c.name for c in CASES if _heldout(c))


def cache_root() -> Path:
    """``$PRUNE_AUDIT_CACHE/forecast-corpus`` or ``~/.cache/prune-audit/forecast-corpus``."""
    base = os.environ.get("PRUNE_AUDIT_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "prune-audit"
    return root / "forecast-corpus"


def entry_dir(spec: CaseSpec, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"{spec.name}-{spec.key()}"


# ------------------------------------------------------------------------------ digits data


def _digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def _median_split(values: np.ndarray, digit: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    for k in range(10):
        m = digit == k
        out[m] = values[m] > np.median(values[m])
    return out


def _plant(
    rng: np.random.Generator, y: np.ndarray, g: np.ndarray, hi: float, lo: float
) -> np.ndarray:
    """Indices of a subsample with P(y=1 | g=1) = hi and P(y=1 | g=0) = lo (drops samples)."""
    keep = []
    for value, rate in ((1, hi), (0, lo)):
        pos = np.flatnonzero((g == value) & (y == 1))
        neg = np.flatnonzero((g == value) & (y == 0))
        # Largest subsample of this group with the wanted rate.
        n_tot = min(len(pos) / rate, len(neg) / (1 - rate))
        n_pos, n_neg = int(round(n_tot * rate)), int(round(n_tot * (1 - rate)))
        keep += [rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]
    return np.sort(np.concatenate(keep))


def make_digits_bundle(path: Path, spec: CaseSpec, *, size: int = IMAGE_SIZE) -> dict[str, Any]:
    """Write the digits case's npz bundle; return a small description of its splits."""
    import torch

    raw, digit = _digit_arrays()
    n = len(digit)
    labels = np.stack([digit % 2 == 0, digit >= 5, np.isin(digit, (0, 6, 8, 9))], 1).astype(
        np.int64
    )
    ink = raw.sum(axis=(1, 2))
    top = raw[:, :4, :].sum(axis=(1, 2)) / np.maximum(ink, 1e-6)
    groups = np.stack([_median_split(ink, digit), _median_split(top, digit)], 1)
    # One split for the whole corpus (data seed 0); the case seed picks only the model.
    rng = np.random.default_rng(12345)
    order = rng.permutation(n)
    split = np.empty(n, dtype="<U5")
    split[order[:600]] = "test"
    split[order[600:850]] = "val"
    split[order[850:]] = "train"
    keep = np.ones(n, dtype=bool)
    if spec.planted is not None:
        hi, lo = STRENGTHS[spec.strength]
        t = DIGIT_TARGETS.index(spec.plant_target)
        gi = DIGIT_GROUPS.index(spec.plant_group)
        tr = np.flatnonzero(split == "train")
        sub = tr[_plant(np.random.default_rng(777), labels[tr, t], groups[tr, gi], hi, lo)]
        keep[tr] = False
        keep[sub] = True
    x = torch.from_numpy(raw[keep] / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    img = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).repeat(1, 3, 1, 1).numpy()
    ids = np.asarray([f"digit{i:04d}" for i in np.flatnonzero(keep)])
    np.savez(
        path,
        images=img,
        labels=labels[keep],
        label_names=np.asarray(DIGIT_TARGETS),
        groups=groups[keep],
        group_names=np.asarray(DIGIT_GROUPS),
        ids=ids,
        split=split[keep],
    )
    s = split[keep]
    return {"sizes": {k: int((s == k).sum()) for k in ("train", "val", "test")}}


def _train_digits(path: Path, spec: CaseSpec, out: Path, *, quick: bool = False) -> None:
    import torch
    import torchvision
    from torch import nn

    from audit import save_checkpoint
    from audit.demo import small_cnn

    z = np.load(path)
    tr = z["split"] == "train"
    x = torch.from_numpy(z["images"][tr]).float().div(255.0)
    mean, std = [0.25] * 3, [0.35] * 3  # ink on black; fixed so every case shares them
    x = (x - 0.25) / 0.35
    y = torch.from_numpy(z["labels"][tr]).float()
    torch.manual_seed(spec.seed)
    if spec.arch == "cnn":
        arch, kwargs = "audit.demo:small_cnn", {"widths": [8, 16, 32, 64], "head_from": 2}
        model = small_cnn(3, **kwargs)
        epochs, lr = 20, 4e-3
    else:
        arch, kwargs = "torchvision:resnet18", None
        model = torchvision.models.resnet18(num_classes=3)
        epochs, lr = 6, 3e-3
    if quick:  # the test suite's tiny real case: a few seconds, not a good model
        epochs = 3
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    bs = 64
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), bs):
            idx = perm[s : s + bs]
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))  # ±1 px shift augmentation
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    save_checkpoint(
        out,
        model.eval(),
        arch=arch,
        arch_kwargs=kwargs,
        outputs=list(DIGIT_TARGETS),
        task="multilabel",
        preprocess={"image_size": IMAGE_SIZE, "mean": mean, "std": std},
    )


# -------------------------------------------------------------------------------- building


def _demo_params(spec: CaseSpec):  # noqa: ANN202 (DemoParams; imported lazily)
    from audit.demo import DEFAULT_PARAMS

    rate = DEFAULT_PARAMS.control_pos_rate
    if spec.planted is None:
        return dataclasses.replace(
            DEFAULT_PARAMS, train_pos_rate_in_group=rate, train_pos_rate_out_group=rate
        )
    hi, lo = {"weak": (0.5, 0.2), "medium": (0.8, 0.1), "strong": (0.98, 0.02)}[spec.strength]
    return dataclasses.replace(
        DEFAULT_PARAMS, train_pos_rate_in_group=hi, train_pos_rate_out_group=lo
    )


DEMO_SIZES = {"n_train": 2000, "n_val": 400, "n_test": 1200, "image_size": 24}


def build_case(spec: CaseSpec, *, root: Path | None = None, quick: bool = False) -> Path:
    """Build (or reuse) one case's cache entry and return its directory.

    ``quick`` (digits only, for the test suite) trains 3 epochs and bootstraps 200 times;
    such an entry belongs in a throw-away ``root``, never in the corpus cache.
    """
    import torch

    from audit import AuditConfig, Policy, run_audit

    entry = entry_dir(spec, root)
    if (entry / "done.json").is_file():
        return entry
    # One thread per case (several build processes share the cores); restored afterwards, so
    # a caller in the same process (the test suite) keeps its own setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=entry.parent))
    t0 = time.perf_counter()
    try:
        info: dict[str, Any] = {"spec": dataclasses.asdict(spec)}
        if spec.source == "digits":
            data = tmp / "digits.npz"
            info |= make_digits_bundle(data, spec)
            model = tmp / "model.pt"
            _train_digits(data, spec, model, quick=quick)
        else:
            from audit.demo import prepare_demo

            model, data = prepare_demo(
                seed=spec.seed,
                cache_dir=entry.parent / "demo",
                params=_demo_params(spec),
                sizes=DEMO_SIZES,
            )
        t_train = time.perf_counter() - t0
        cfg = AuditConfig(
            model=model,
            data=data,
            out=tmp / "audit",
            targets=DIGIT_TARGETS if spec.source == "digits" else ("Warm", "Round", "Bright"),
            groups=DIGIT_GROUPS if spec.source == "digits" else ("Textured",),
            sparsities=SPARSITIES,
            recovery=spec.recovery,  # type: ignore[arg-type]
            policy=Policy(target_sparsity=0.9, min_group_size=30),
            formats=("json",),
            bootstrap=200 if quick else 1000,
            device="cpu",
            quiet=True,
        )
        res = run_audit(cfg)
        t_audit = time.perf_counter() - t0 - t_train
        info["wall_s"] = {"train": round(t_train, 1), "audit": round(t_audit, 1)}
        info["train"] = _train_stats(data, spec)
        info["commit"] = _git_head()
        del res
        (tmp / "done.json").write_text(json.dumps(info, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        tmp.rename(entry)
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _train_stats(data: Path, spec: CaseSpec) -> dict[str, Any]:
    """Train split label/group arrays summary (the population's train rates come from these)."""
    from audit.data import load_dataset

    ds = load_dataset(data)
    return {"n": int(len(ds.ids)), "layout": ds.layout}


def _git_head() -> str | None:
    import subprocess

    import audit

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(audit.__file__).parent,  # the code that ran the audit
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CaseData:
    """One built case, read back from its cache entry (everything the scorer needs)."""

    spec: CaseSpec
    pop: Any  # audit.criteria.Population of the evaluation split
    dense_probs: np.ndarray  # (N, A)
    pruned_probs: np.ndarray  # (L, N, A)
    sparsities: tuple[float, ...]
    thresholds: dict[str, np.ndarray]
    report: dict[str, Any]
    info: dict[str, Any]
    weights: dict[str, np.ndarray]  # prunable weight tensors of the dense checkpoint

    @property
    def heldout(self) -> bool:
        return self.spec.name in HELDOUT


def load_case(spec: CaseSpec, *, root: Path | None = None) -> CaseData:
    """Rebuild the audit's population from the cached data and predictions of one case."""
    from audit import criteria
    from audit.data import load_dataset

    entry = entry_dir(spec, root)
    info = json.loads((entry / "done.json").read_text())
    report = json.loads((entry / "audit" / "report.json").read_text())
    z = np.load(entry / "audit" / "predictions.npz", allow_pickle=False)
    targets = tuple(str(t) for t in z["target_names"])
    group_names = tuple(str(g) for g in z["group_names"])
    data = Path(report["inputs"]["data"]["path"])
    if not data.exists():  # entries are renamed into place after the audit ran
        data = entry / data.name if (entry / data.name).exists() else data
    ds = load_dataset(data)
    train = np.flatnonzero(ds.splits == "train")
    pop = criteria.build_population(
        targets,
        report["inputs"]["task"],
        z["labels"],
        z["groups"],
        group_names,
        train_labels=np.stack([ds.columns[t][train] for t in targets], 1),
        train_groups=np.stack([ds.columns[g][train] for g in group_names], 1),
        min_group_size=int(report["gate"]["policy"]["min_group_size"]),
        band=tuple(report["inputs"]["uncertainty_band"]),
    )
    thr = {
        mode: np.asarray([report["inputs"]["thresholds"][mode][t] for t in targets])
        for mode in ("default", "calibrated")
    }
    return CaseData(
        spec=spec,
        pop=pop,
        dense_probs=np.asarray(z["dense_probs"], dtype=np.float64),
        pruned_probs=np.asarray(z["pruned_probs"], dtype=np.float64),
        sparsities=tuple(float(s) for s in z["sparsities"]),
        thresholds=thr,
        report=report,
        info=info,
        weights={},
    )


def built_cases(root: Path | None = None) -> list[CaseSpec]:
    """The cases of ``CASES`` whose cache entry is finished."""
    return [c for c in CASES if (entry_dir(c, root) / "done.json").is_file()]
