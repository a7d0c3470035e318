"""Show the demo's planted phenomenon without the audit tool: group gaps vs sparsity.

For each seed: generate the demo data, train the SmallCNN, prune it globally by weight
magnitude (``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` over every
Conv/Linear weight) at several sparsities, re-estimate BatchNorm statistics on the val split,
and print, per target, accuracy and the FNR/FPR gaps between the two values of the protected
attribute on the test split. This is the computation ``prune-audit demo`` runs through the
real tool, written out by hand (it was used to tune the generator).

Usage::

    uv run python examples/tune_demo.py --seeds 0 1 2
    uv run python examples/tune_demo.py --seeds 0 1 2 --set warm=0.02,0.3 head_from=1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting for a busy core make every op
# wait for the slowest one (measured: 100x slower per step); passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

from audit.demo import (  # noqa: E402
    DEFAULT_PARAMS,
    DEMO_GROUP,
    DEMO_TARGETS,
    DemoParams,
    _to_tensor,
    load_demo_split,
    make_demo_dataset,
    train_demo_model,
)

SPARSITIES = (0.8, 0.9, 0.95, 0.98, 0.99)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([torch.sigmoid(model(x[i : i + 500])) for i in range(0, len(x), 500)]).numpy()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    for i in range(0, len(x), 250):
        model(x[i : i + 250])
    model.eval()


def pruned_copy(model: nn.Module, sparsity: float) -> nn.Module:
    m = copy.deepcopy(model)
    params = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    for mod, name in params:
        prune.remove(mod, name)
    return m


def group_metrics(y: np.ndarray, pred: np.ndarray, g: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"acc": float((y == pred).mean())}
    rates = {}
    for v in (0, 1):
        sel = g == v
        pos, neg = sel & (y == 1), sel & (y == 0)
        rates[v] = (float((pred[pos] == 0).mean()), float((pred[neg] == 1).mean()))
    out["fnr0"], out["fnr1"] = rates[0][0], rates[1][0]
    out["fpr0"], out["fpr1"] = rates[0][1], rates[1][1]
    out["fnr_gap"] = abs(rates[1][0] - rates[0][0])
    out["fpr_gap"] = abs(rates[1][1] - rates[0][1])
    return out


def run_seed(
    seed: int,
    params: DemoParams,
    workdir: Path,
    save: Path | None = None,
    sizes: dict[str, int] | None = None,
) -> dict[str, list[dict[str, float]]]:
    t0 = time.perf_counter()
    make_demo_dataset(workdir, seed=seed, params=params, **(sizes or {}))
    t1 = time.perf_counter()
    model = train_demo_model(workdir, seed=seed, params=params)
    t2 = time.perf_counter()
    pre = model.demo_preprocess
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "preprocess": pre}, save / f"{seed}.pt")
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    xv = _to_tensor(load_demo_split(workdir, "val")[0], mean, std)
    xt_img, yt, gt = load_demo_split(workdir, "test")
    xt = _to_tensor(xt_img, mean, std)
    results: dict[str, list[dict[str, float]]] = {t: [] for t in DEMO_TARGETS}
    for sparsity in (0.0, *SPARSITIES):
        m = model if sparsity == 0 else pruned_copy(model, sparsity)
        if sparsity > 0:
            recalibrate_bn(m, xv)
        probs = predict(m, xt)
        for j, t in enumerate(DEMO_TARGETS):
            r = group_metrics(yt[:, j], (probs[:, j] > 0.5).astype(np.float32), gt)
            r["sparsity"] = sparsity
            r["unc"] = float((np.abs(probs[:, j] - 0.5) < 0.4).mean())
            results[t].append(r)
    print(f"seed {seed}: generate {t1 - t0:.1f}s, train {t2 - t1:.1f}s", flush=True)
    return results


def print_table(seed: int, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nseed {seed} ({DEMO_GROUP} 1 vs 0; gaps = |g1 - g0| on test)")
    print(
        f"{'target':8} {'sparsity':>8} {'acc':>6} {'unc':>6} {'FNR g0/g1':>12} "
        f"{'FPR g0/g1':>12} {'FNRgap':>7} {'FPRgap':>7}"
    )
    for t, rows in results.items():
        for r in rows:
            print(
                f"{t:8} {r['sparsity']:8.2f} {r['acc']:6.3f} {r['unc']:6.3f} "
                f"{r['fnr0']:5.3f}/{r['fnr1']:5.3f} {r['fpr0']:5.3f}/{r['fpr1']:5.3f} "
                f"{r['fnr_gap']:7.3f} {r['fpr_gap']:7.3f}"
            )


def parse_overrides(items: list[str]) -> DemoParams:
    changes = {}
    fields = {f.name: f for f in dataclasses.fields(DemoParams)}
    for item in items:
        key, value = item.split("=", 1)
        default = getattr(DEFAULT_PARAMS, key) if key in fields else None
        if key not in fields:
            raise SystemExit(f"unknown parameter {key!r}; known: {', '.join(fields)}")
        if isinstance(default, tuple):
            changes[key] = tuple(type(default[0])(v) for v in value.split(","))
        else:
            changes[key] = type(default)(value)
    return dataclasses.replace(DEFAULT_PARAMS, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="DemoParams overrides k=v")
    parser.add_argument("--json", type=Path, help="also write all numbers here")
    parser.add_argument("--save", type=Path, help="also save each dense model here")
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-test", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = parse_overrides(args.set)
    print(params)
    everything = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            everything[seed] = run_seed(
                seed, params, Path(tmp), args.save, {"n_train": args.n_train, "n_test": args.n_test}
            )
        print_table(seed, everything[seed])
    print("\nincrease of the gaps from dense to each sparsity, mean over seeds")
    print(f"{'target':8} " + " ".join(f"{s:>13.2f}" for s in SPARSITIES))
    for t in DEMO_TARGETS:
        cells = []
        for k in range(1, len(SPARSITIES) + 1):
            dfnr = np.mean(
                [
                    everything[s][t][k]["fnr_gap"] - everything[s][t][0]["fnr_gap"]
                    for s in args.seeds
                ]
            )
            dfpr = np.mean(
                [
                    everything[s][t][k]["fpr_gap"] - everything[s][t][0]["fpr_gap"]
                    for s in args.seeds
                ]
            )
            cells.append(f"{dfnr:+.3f}/{dfpr:+.3f}")
        print(f"{t:8} " + " ".join(f"{c:>13}" for c in cells))
    if args.json:
        args.json.write_text(
            json.dumps({"params": dataclasses.asdict(params), "results": everything}, indent=1)
        )


if __name__ == "__main__":
    main()
