"""Bad inputs (SPEC §10) through the real CLI, and one end-to-end multiclass audit.

Every bad input exits 3 with a message naming the file/column/key and leaves neither a
report nor a staging folder behind; a too-small group and skipped images are warnings, not
errors. The multiclass audit uses the image-folder layout (SPEC §3.2).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from audit import save_checkpoint
from audit.cli import app
from tests.conftest import CELEBA_ATTRS, TINY_ARCH, TinyNet, check_args

ARCH = TINY_ARCH
PREPROCESS = {"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
runner = CliRunner()

Inputs = tuple[Path, Path, torch.nn.Module]


# ---------------------------------------------------------------------------- helpers
def _refused(args: list[str], pattern: str) -> str:
    """Run the CLI; check exit 3, ``pattern`` in stderr, and no report or staging left."""
    res = runner.invoke(app, args)
    assert res.exit_code == 3, res.output
    assert re.search(pattern, res.stderr), res.stderr
    assert "Traceback" not in res.output
    out = Path(args[args.index("--out") + 1])
    assert not out.exists() or not any(out.iterdir())
    assert not list(out.parent.glob(".prune-audit-*"))
    assert not list(out.parent.glob(f".{out.name}.*"))  # the report writer's staging folder
    return res.stderr


def _ran(args: list[str]) -> tuple[dict, str]:
    """Run the CLI; check that the audit ran (exit 0 or 1); return report.json and stderr."""
    res = runner.invoke(app, args)
    assert res.exit_code in (0, 1), res.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "report.json").read_text()), res.stderr


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels but holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def _write_manifest(root: Path, rows: list[list[str]]) -> None:
    header = "image,split,red,green,blue,tinted\n"
    (root / "labels.csv").write_text(header + "".join(",".join(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def pristine_manifest(tiny_audit_inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest npz data as a manifest layout: 240 16x16 PNGs plus labels.csv."""
    _, npz_root, _ = tiny_audit_inputs
    root = tmp_path_factory.mktemp("manifest")
    (root / "imgs").mkdir()
    with np.load(npz_root / "bundle.npz") as z:
        images, labels, groups, split = z["images"], z["labels"], z["groups"], z["split"]
    rows = []
    for i, img in enumerate(images):
        (root / "imgs" / f"{i}.png").write_bytes(_png_bytes(img))
        rows.append([f"imgs/{i}.png", str(split[i]), *map(str, labels[i]), str(groups[i, 0])])
    _write_manifest(root, rows)
    return root


@pytest.fixture
def manifest(pristine_manifest: Path, tmp_path: Path) -> Path:
    """A private copy of the manifest layout that a test may damage."""
    return Path(shutil.copytree(pristine_manifest, tmp_path / "data"))


def _rows(root: Path) -> list[list[str]]:
    return [line.split(",") for line in (root / "labels.csv").read_text().splitlines()[1:]]


# Rows 180..239 are the test split, so they are decoded for evaluation.
EVAL_ROW = 200


# ---------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize(
    ("which", "pattern"),
    [
        ("model", r"Cannot read model file '.*model\.pt'.*permission"),
        ("labels", r"Cannot read .*labels\.csv .*PermissionError"),
        ("image", rf"Cannot read image 'imgs/{EVAL_ROW}\.png'.*permission"),
        ("data", r"Cannot read DATA folder '.*data'.*permission"),
        ("class-folder", r"Cannot list the image folder '.*folder/b'.*permission"),
        ("policy", r"Cannot read policy file '.*policy\.toml'"),
    ],
)
def test_unreadable_file(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, which: str, pattern: str
) -> None:
    """chmod 000 on an input file or folder: exit 3 naming it (not click's usage error 2)."""
    ckpt = shutil.copy(tiny_audit_inputs[0], tmp_path / "model.pt")
    policy = tmp_path / "policy.toml"
    policy.write_text("target_sparsity = 0.5\n")
    folder = tmp_path / "folder"  # image-folder layout: an unlisted class would lose its images
    for rel in ("a/0.png", "a/1.png", "b/0.png", "b/1.png"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest / "imgs" / "0.png", folder / rel)
    data = folder if which == "class-folder" else manifest
    victim = {
        "model": Path(ckpt),
        "labels": manifest / "labels.csv",
        "image": manifest / "imgs" / f"{EVAL_ROW}.png",
        "data": manifest,
        "policy": policy,
        "class-folder": folder / "b",
    }[which]
    mode = victim.stat().st_mode
    victim.chmod(0)
    try:
        if os.access(victim, os.R_OK):
            pytest.skip("running as root: chmod 000 does not make a file unreadable")
        _refused(check_args(ckpt, data, tmp_path / "out", "--policy", str(policy)), pattern)
    finally:
        victim.chmod(mode)


# ---------------------------------------------------------------------------- bad images
def _damage(path: Path, how: str) -> None:
    if how == "corrupt":
        path.write_bytes(b"this is not an image at all" * 10)
    else:  # truncated: the PNG signature and header survive, the pixel data is cut short
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_bad_image_is_an_input_error(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, how: str
) -> None:
    _damage(manifest / "imgs" / f"{EVAL_ROW}.png", how)
    _refused(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"),
        rf"Cannot decode image 'imgs/{EVAL_ROW}\.png'.*--skip-bad-images",
    )


def test_skip_bad_images_counts_them_in_the_report(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path
) -> None:
    """With --skip-bad-images the audit runs without them and report.json lists each one."""
    _damage(manifest / "imgs" / f"{EVAL_ROW}.png", "corrupt")
    _damage(manifest / "imgs" / f"{EVAL_ROW + 1}.png", "truncated")
    report, stderr = _ran(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out", "--skip-bad-images")
    )
    skipped = report["inputs"]["skipped_images"]
    assert [s["id"] for s in skipped] == [f"imgs/{EVAL_ROW}.png", f"imgs/{EVAL_ROW + 1}.png"]
    assert all(s["reason"] for s in skipped)
    assert report["inputs"]["n_samples"] == 60 - 2  # the test split minus the skipped images
    assert re.search(rf"skipped unreadable image imgs/{EVAL_ROW}\.png", stderr), stderr


def test_image_too_large_to_decode(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path
) -> None:
    """A header declaring 100000x100000 pixels is refused before any pixel is decoded."""
    (manifest / "imgs" / f"{EVAL_ROW}.png").write_bytes(_png_header_only(100_000, 100_000))
    _refused(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"),
        rf"Refusing to decode image 'imgs/{EVAL_ROW}\.png'.*too large to decode safely",
    )


# ---------------------------------------------------------------------------- paths out of DATA
@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("../outside.png", r"'\.\./outside\.png' at line \d+ of .*labels\.csv escapes DATA"),
        ("ABSOLUTE", r"'/.*outside\.png' at line \d+ of .*labels\.csv escapes DATA"),
        ("imgs/link.png", r"'imgs/link\.png' .*escapes DATA.*through a symlink"),
    ],
    ids=["dotdot", "absolute", "symlink-out"],
)
def test_image_path_escaping_data(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, path: str, pattern: str
) -> None:
    outside = tmp_path / "outside.png"
    shutil.copy(manifest / "imgs" / "0.png", outside)
    (manifest / "imgs" / "link.png").symlink_to(outside)
    rows = _rows(manifest)
    rows[EVAL_ROW][0] = str(outside) if path == "ABSOLUTE" else path
    _write_manifest(manifest, rows)
    _refused(check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"), pattern)


# ---------------------------------------------------------------------------- label values
@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("2", rf"Target column 'green' has value 2 for 'imgs/{EVAL_ROW}\.png'.*0/1"),
        ("yes", r"Label column 'green' in .*labels\.csv has value 'yes' at line \d+"),
        # Printed verbatim: the value is not read as rich markup (which would raise).
        ("[/b]", r"Label column 'green' in .*labels\.csv has value '\[/b\]' at line \d+"),
    ],
    ids=["two", "word", "markup"],
)
def test_manifest_label_outside_accepted_values(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, value: str, pattern: str
) -> None:
    rows = _rows(manifest)
    rows[EVAL_ROW][3] = value
    _write_manifest(manifest, rows)
    _refused(check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"), pattern)


@pytest.mark.parametrize("value", ["0", "2"])
def test_celeba_label_outside_minus_one_one(
    tiny_audit_inputs: Inputs, tmp_path: Path, value: str
) -> None:
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["4", " ".join(CELEBA_ATTRS)]
    for i in range(4):
        name = f"{i + 1:06d}.jpg"
        (root / "img_align_celeba" / name).write_bytes(_png_bytes(np.zeros((8, 8, 3), np.uint8)))
        cells = [str(v) for v in rng.choice([-1, 1], size=len(CELEBA_ATTRS))]
        cells[CELEBA_ATTRS.index("Male")] = ("1", "-1", value, "1")[i]
        lines.append(f"{name} {' '.join(cells)}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    _refused(
        check_args(tiny_audit_inputs[0], root, tmp_path / "out", group="Male"),
        rf"'Male' in .*list_attr_celeba\.txt has value -1 at line 4 and value {value} at line 5",
    )


# ---------------------------------------------------------------------------- model outputs
class ConvHead(torch.nn.Module):
    """Two outputs from a 1x1 convolution: no Linear weight tells how many before it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("when", ["recorded", "at-inference"])
def test_output_count_differs_from_targets(
    tiny_audit_inputs: Inputs, tmp_path: Path, when: str
) -> None:
    """3 outputs for 2 targets (known from the checkpoint) or 2 for 3 (seen in the logits)."""
    ckpt, data, _ = tiny_audit_inputs
    if when == "recorded":
        args = check_args(ckpt, data, tmp_path / "out", "--target", "red", "--target", "green")
        pattern = r"'.*model\.pt' has 3 outputs but 2 targets were selected \(red, green\)"
    else:
        ckpt = tmp_path / "convhead.pt"
        torch.jit.save(torch.jit.script(ConvHead().eval()), str(ckpt))
        args = check_args(ckpt, data, tmp_path / "out")
        pattern = r"'.*convhead\.pt' produced 2 outputs per image but 3 targets"
    _refused(args, pattern)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits(tiny_audit_inputs: Inputs, tmp_path: Path, bad: float) -> None:
    """Weights that make the dense model emit NaN/Inf (diverged training) stop the audit."""
    ckpt, data, model = tiny_audit_inputs
    broken = TinyNet(3)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.fc.bias[1] = bad  # output 'green'
    path = save_checkpoint(
        tmp_path / "diverged.pt",
        broken,
        arch=ARCH,
        outputs=["red", "green", "blue"],
        task="multilabel",
        preprocess=PREPROCESS,
    )
    _refused(
        check_args(path, data, tmp_path / "out"),
        r"'.*diverged\.pt' produced NaN/Inf logits \(\d+ images; first at image row 0, "
        r"output 'green'\)",
    )


# ---------------------------------------------------------------------------- small groups
def test_too_small_group_is_a_warning_not_an_error(
    tiny_audit_inputs: Inputs, tmp_path: Path
) -> None:
    """A group value with 3 evaluated samples (< min_group_size 5): warned, 'not estimable'."""
    _, npz_root, _ = tiny_audit_inputs
    with np.load(npz_root / "bundle.npz") as z:
        arrays = dict(z)
    rare = np.zeros(len(arrays["split"]), dtype=np.int64)
    rare[np.flatnonzero(arrays["split"] == "test")[:3]] = 1
    rare[np.flatnonzero(arrays["split"] == "train")[:20]] = 1
    arrays["groups"] = np.stack([arrays["groups"][:, 0], rare], axis=1)
    arrays["group_names"] = np.array(["tinted", "rare"])
    data = tmp_path / "npz"
    data.mkdir()
    np.savez(data / "bundle.npz", **arrays)
    report, stderr = _ran(check_args(tiny_audit_inputs[0], data, tmp_path / "out", group="rare"))
    assert re.search(r"warning.*Group rare=1 has 3 samples, fewer than min_group_size=5", stderr)
    by_group = report["dense"]["default"]["red"]["by_group"]["rare"]
    small = {c["value"]: c["small"] for c in by_group["cells"]}
    assert small == {"0": False, "1": True}
    gap = by_group["gaps"]["fnr_gap"]
    assert gap["value"] is None
    # the FNR rests on positives: rare=1 is too small for it by its positives (issue 13.3)
    positives = next(c["positives"] for c in by_group["cells"] if c["value"] == "1")
    assert re.search(
        rf"not estimable: rare=1 has {positives} positives < min_group_size=5 "
        r"\(fnr is a share of the positives\)",
        gap["reason"],
    )
    acc = by_group["gaps"]["accuracy_gap"]
    assert re.search(r"not estimable: rare=1 has 3 samples < min_group_size=5$", acc["reason"])


# ---------------------------------------------------------------------------- code execution
class Boom:
    """Unpickling this creates ``marker``: proof that loading ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickled_module_needs_trust_checkpoint(tiny_audit_inputs: Inputs, tmp_path: Path) -> None:
    ckpt, data, model = tiny_audit_inputs
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    _refused(
        check_args(path, data, tmp_path / "out"),
        r"'.*whole\.pt' is not a plain weights file.*execute arbitrary code.*--trust-checkpoint",
    )


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused_unrun(
    tiny_audit_inputs: Inputs, tmp_path: Path, writer: str
) -> None:
    _, data, model = tiny_audit_inputs
    marker = tmp_path / "pwned"
    payload = {"state_dict": model.state_dict(), "extra": Boom(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f, protocol=2)  # the protocol torch.load expects
    _refused(check_args(path, data, tmp_path / "out"), r"'.*evil\.pt'.*--trust-checkpoint")
    assert not marker.exists()


# ---------------------------------------------------------------------------- multiclass
CLASSES = ("blue", "green", "red")  # sorted folder names = class indices 0, 1, 2
CHANNEL = {"blue": 2, "green": 1, "red": 0}


def test_multiclass_audit_end_to_end(tmp_path: Path) -> None:
    """Image-folder layout with 3 classes and groups.csv; a softmax TinyNet; one sparsity."""
    rng = np.random.default_rng(1)
    n, size = 150, 16
    y = np.arange(n) % 3
    tinted = (rng.random(n) < 0.4).astype(np.int64)
    split = np.array(["train"] * 60 + ["val"] * 40 + ["test"] * 50)
    images = rng.integers(0, 60, size=(n, size, size, 3)).astype(np.uint8)
    for i in range(n):
        images[i, :, : size // 2 + rng.integers(0, 4), CHANNEL[CLASSES[y[i]]]] += 120
    images[tinted == 1] += 30
    data = tmp_path / "folder"
    rows = ["image,split,tinted"]
    for i in range(n):
        rel = f"{CLASSES[y[i]]}/{i:03d}.png"
        (data / CLASSES[y[i]]).mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(_png_bytes(images[i]))
        rows.append(f"{rel},{split[i]},{tinted[i]}")
    (data / "groups.csv").write_text("\n".join(rows) + "\n")

    torch.manual_seed(0)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.25
    model = TinyNet(3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.from_numpy(y)).backward()
        opt.step()
    ckpt = save_checkpoint(
        tmp_path / "mc.pt",
        model.eval(),
        arch=ARCH,
        outputs=list(CLASSES),
        task="multiclass",
        preprocess=PREPROCESS,
    )

    out = tmp_path / "out"
    report, _ = _ran(check_args(ckpt, data, out, "--target-sparsity", "0.5"))
    assert report["inputs"]["task"] == "multiclass"
    assert report["inputs"]["data"]["layout"] == "folder"
    assert report["inputs"]["targets"] == list(CLASSES)
    assert [lv["sparsity"] for lv in report["validation"]["levels"]] == [0.5]

    with np.load(out / "predictions.npz") as z:
        probs, labels, groups = z["dense_probs"], z["labels"], z["groups"][:, 0]
    assert probs.shape == (50, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    pred = np.eye(3, dtype=np.int8)[probs.argmax(axis=1)]
    top2 = np.sort(probs, axis=1)[:, -2:]
    uncertain = top2[:, 1] - top2[:, 0] < 0.8  # top-1 − top-2 margin below the band width
    block = report["dense"]["default"]
    for k, name in enumerate(CLASSES):
        entry = block[name]
        assert entry["threshold"] is None
        assert entry["overall"]["uncertainty_rate"] == pytest.approx(uncertain.mean())
        for cell in entry["by_group"]["tinted"]["cells"]:
            g = groups == int(cell["value"])
            pos, neg = g & (labels[:, k] == 1), g & (labels[:, k] == 0)
            # One-vs-rest rates of class k within the group.
            assert cell["tpr"] == pytest.approx(pred[pos, k].mean())
            assert cell["fpr"] == pytest.approx(pred[neg, k].mean())
            assert cell["uncertainty_rate"] == pytest.approx(uncertain[g].mean())
        assert "fnr_gap" in entry["by_group"]["tinted"]["gaps"]
