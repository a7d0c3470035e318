"""Sample images and labels written in several dataset layouts, for the layout tests.

The same encoded images and labels go into a manifest CSV and into each container layout, in
the same row order, so a layout's decoded images and audit probabilities can be compared
exactly with the manifest's.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Split folder/file words as the Hugging Face Hub names them, and the manifest's names.
HUB_SPLITS = {"test": "test", "train": "train", "validation": "val"}
LABELS = ("red", "green", "blue", "tinted")


@dataclass(frozen=True)
class Sample:
    name: str
    hub_split: str  # test / train / validation
    png: bytes
    labels: dict[str, int]

    @property
    def split(self) -> str:
        return HUB_SPLITS[self.hub_split]


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def samples_from_npz(bundle: Path) -> list[Sample]:
    """The tiny audit's npz bundle as samples, in canonical order (hub split name, index)."""
    hub = {v: k for k, v in HUB_SPLITS.items()}
    with np.load(bundle) as z:
        images, labels, groups, split = z["images"], z["labels"], z["groups"], z["split"]
    out = [
        Sample(
            name=f"s{i:04d}",
            hub_split=hub[str(split[i])],
            png=png_bytes(images[i]),
            labels={
                **dict(zip(LABELS[:3], map(int, labels[i]), strict=True)),
                "tinted": int(groups[i, 0]),
            },
        )
        for i in range(len(images))
    ]
    return sorted(out, key=lambda s: (s.hub_split, s.name))


def write_manifest(root: Path, samples: list[Sample]) -> Path:
    """``labels.csv`` + ``imgs/<name>.png``, rows in the order given."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    lines = ["image,split," + ",".join(LABELS)]
    for s in samples:
        (root / "imgs" / f"{s.name}.png").write_bytes(s.png)
        lines.append(f"imgs/{s.name}.png,{s.split}," + ",".join(str(s.labels[k]) for k in LABELS))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def write_parquet(root: Path, samples: list[Sample], *, rows_per_group: int = 16) -> Path:
    """``data/<split>-00000-of-00001.parquet`` as ``datasets.push_to_hub`` writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {
        "image": {"_type": "Image"},
        **{k: {"dtype": "int64", "_type": "Value"} for k in LABELS[:3]},
        "tinted": {"names": ["no", "yes"], "_type": "ClassLabel"},
    }
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split in sorted({s.hub_split for s in samples}):
        part = [s for s in samples if s.hub_split == split]
        image = pa.StructArray.from_arrays(
            [
                pa.array([s.png for s in part], pa.binary()),
                pa.array([f"{s.name}.png" for s in part]),
            ],
            names=["bytes", "path"],
        )
        table = pa.table(
            {
                "image": image,
                **{k: pa.array([s.labels[k] for s in part], pa.int64()) for k in LABELS},
            }
        ).replace_schema_metadata(meta)
        pq.write_table(
            table, root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=rows_per_group
        )
    return root


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, samples: list[Sample]) -> Path:
    """``<split>-000000.tar`` shards: ``<name>.png`` + ``<name>.json`` per sample."""
    root.mkdir(parents=True, exist_ok=True)
    for split in sorted({s.hub_split for s in samples}):
        with tarfile.open(root / f"{split}-000000.tar", "w") as tar:
            for s in (s for s in samples if s.hub_split == split):
                add_tar_member(tar, f"{s.name}.png", s.png)
                add_tar_member(
                    tar, f"{s.name}.json", json.dumps(s.labels | {"caption": "a face"}).encode()
                )
    return root


def write_imagefolder(root: Path, samples: list[Sample]) -> Path:
    """``<split>/<name>.png`` with one ``<split>/metadata.jsonl`` (train) or ``.csv`` (others)."""
    for split in sorted({s.hub_split for s in samples}):
        part = [s for s in samples if s.hub_split == split]
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for s in part:
            (folder / f"{s.name}.png").write_bytes(s.png)
        if split == "train":
            lines = [
                json.dumps({"file_name": f"{s.name}.png", **s.labels, "text": "x"}) for s in part
            ]
            (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        else:
            rows = [
                f"{s.name}.png," + ",".join(str(s.labels[k]) for k in LABELS) + ",a face"
                for s in part
            ]
            (folder / "metadata.csv").write_text(
                "file_name," + ",".join(LABELS) + ",caption\n" + "\n".join(rows) + "\n"
            )
    return root


def audit_probabilities(ckpt: Path, data: Path, out: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Run the tiny CLI audit; return dense and pruned probabilities and the layout read."""
    from typer.testing import CliRunner

    from audit.cli import app
    from tests.conftest import check_args

    res = CliRunner().invoke(app, check_args(ckpt, data, out))
    assert res.exit_code in (0, 1), res.output
    layout = json.loads((out / "report.json").read_text())["inputs"]["data"]["layout"]
    with np.load(out / "predictions.npz") as z:
        return z["dense_probs"], z["pruned_probs"], layout

