"""Build the bundled demo by hand: synthetic images, a trained SmallCNN, a checkpoint.

This is what ``prune-audit demo`` prepares before auditing, written out step by step so it
can be read and adapted. It writes, under the output directory (default ``demo/``)::

    data/labels.csv        manifest: image, split, Striped, Round, Bright, Tinted
    data/images/*.png      32x32 RGB images
    model.pt               prune-audit checkpoint (arch "audit.demo:small_cnn")

Then audit it with::

    uv run prune-audit check demo/model.pt demo/data --group Tinted --out reports/

Usage::

    uv run python examples/make_demo.py [OUT_DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from audit.demo import (
    DEFAULT_PARAMS,
    DEMO_GROUP,
    DEMO_TARGETS,
    make_demo_dataset,
    train_demo_model,
)
from audit.model_io import save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the demo data and train its model.")
    parser.add_argument("out", nargs="?", type=Path, default=Path("demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    # 1. Data. Textured (the protected attribute, ~25% of images) is tied to Warm in the
    #    train split only (98% of textured vs 2% of plain images are warm); Round and Bright
    #    are controls.
    start = time.perf_counter()
    data_dir = make_demo_dataset(args.out / "data", seed=args.seed)
    print(f"wrote the dataset to {data_dir} ({time.perf_counter() - start:.1f}s)")

    # 2. Model: multilabel SmallCNN trained on the train split, one logit per target.
    start = time.perf_counter()
    model = train_demo_model(
        data_dir, seed=args.seed, progress=lambda done, total: print(f"  epoch {done}/{total}")
    )
    print(f"trained the model ({time.perf_counter() - start:.1f}s)")

    # 3. Checkpoint: weights plus everything the audit needs to rebuild and feed the model
    #    (architecture factory, output names, task, the preprocessing used in training).
    model_path = save_checkpoint(
        args.out / "model.pt",
        model,
        arch="audit.demo:small_cnn",
        arch_kwargs=DEFAULT_PARAMS.arch_kwargs,  # widths and head of the SmallCNN
        outputs=list(DEMO_TARGETS),
        task="multilabel",
        preprocess=model.demo_preprocess,
    )
    print(f"wrote the checkpoint to {model_path}")
    print(
        f"next: uv run prune-audit check {model_path} {data_dir} --group {DEMO_GROUP} "
        "--out reports/"
    )


if __name__ == "__main__":
    main()
