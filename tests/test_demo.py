from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audit.demo import (
    CORRELATED_TARGET,
    DEFAULT_PARAMS,
    DEMO_GROUP,
    DEMO_TARGETS,
    SmallCNN,
    default_cache_dir,
    make_demo_dataset,
    prepare_demo,
    small_cnn,
    train_demo_model,
)
from audit.model_io import save_checkpoint


def _read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def big_labels(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """Labels of a dataset large enough to check rates (images are tiny to stay fast)."""
    root = make_demo_dataset(
        tmp_path_factory.mktemp("big"), seed=3, n_train=2000, n_val=10, n_test=2000, image_size=8
    )
    return _read_rows(root)


def test_generator_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    kw = {"n_train": 40, "n_val": 10, "n_test": 20}
    a = make_demo_dataset(tmp_path / "a", seed=7, **kw)
    b = make_demo_dataset(tmp_path / "b", seed=7, **kw)
    c = make_demo_dataset(tmp_path / "c", seed=8, **kw)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_changing_one_split_size_leaves_the_others_unchanged(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", seed=1, n_train=30, n_val=5, n_test=12)
    b = make_demo_dataset(tmp_path / "b", seed=1, n_train=50, n_val=5, n_test=12)
    for name in ("test_00000.png", "test_00011.png", "val_00004.png"):
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()


def test_manifest_layout(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path, seed=0, n_train=12, n_val=5, n_test=7, image_size=32)
    with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["image", "split", *DEMO_TARGETS, DEMO_GROUP]
    rows = _read_rows(root)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [12, 5, 7]
    assert len({r["image"] for r in rows}) == len(rows)
    for r in rows:
        assert {r[c] for c in (*DEMO_TARGETS, DEMO_GROUP)} <= {"0", "1"}
        with Image.open(root / r["image"]) as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == (32, 32)


def test_train_split_has_the_planted_correlation(big_labels: list[dict[str, str]]) -> None:
    train = [r for r in big_labels if r["split"] == "train"]
    rate_in = np.mean([r[CORRELATED_TARGET] == "1" for r in train if r[DEMO_GROUP] == "1"])
    rate_out = np.mean([r[CORRELATED_TARGET] == "1" for r in train if r[DEMO_GROUP] == "0"])
    assert rate_in == pytest.approx(DEFAULT_PARAMS.train_pos_rate_in_group, abs=0.03)
    assert rate_out == pytest.approx(DEFAULT_PARAMS.train_pos_rate_out_group, abs=0.02)
    assert rate_in > 0.9 and rate_out < 0.1


def test_test_split_has_no_correlation_and_the_train_prevalence(
    big_labels: list[dict[str, str]],
) -> None:
    train = [r for r in big_labels if r["split"] == "train"]
    test = [r for r in big_labels if r["split"] == "test"]
    for target in DEMO_TARGETS:
        train_rate = np.mean([r[target] == "1" for r in train])
        by_group = [
            np.mean([r[target] == "1" for r in test if r[DEMO_GROUP] == v]) for v in ("0", "1")
        ]
        assert abs(by_group[0] - by_group[1]) < 0.07
        assert np.mean([r[target] == "1" for r in test]) == pytest.approx(train_rate, abs=0.04)


def test_controls_are_independent_of_the_group_in_train(big_labels: list[dict[str, str]]) -> None:
    train = [r for r in big_labels if r["split"] == "train"]
    for target in DEMO_TARGETS[1:]:
        rates = [
            np.mean([r[target] == "1" for r in train if r[DEMO_GROUP] == v]) for v in ("0", "1")
        ]
        assert abs(rates[0] - rates[1]) < 0.07


def test_group_is_under_represented(big_labels: list[dict[str, str]]) -> None:
    for split in ("train", "test"):
        share = np.mean([r[DEMO_GROUP] == "1" for r in big_labels if r["split"] == split])
        assert 0.2 <= share <= 0.3


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_test must be a non-negative int"):
        make_demo_dataset(tmp_path, n_test=-1)
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        make_demo_dataset(tmp_path, image_size=4)


def test_small_cnn_output_shape_and_size() -> None:
    model = small_cnn(3, **DEFAULT_PARAMS.arch_kwargs)
    assert isinstance(model, SmallCNN)
    assert model(torch.zeros(4, 3, 32, 32)).shape == (4, 3)
    assert 50_000 <= sum(p.numel() for p in model.parameters()) <= 200_000
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    tiny = small_cnn(2, widths=[4, 8, 8, 8], head_from=2)
    assert tiny.head.in_features == 16
    assert tiny(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
    with pytest.raises(ValueError, match="head_from must be in"):
        small_cnn(2, widths=[4, 8], head_from=3)


def test_tiny_training_run_saves_a_loadable_checkpoint(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    root = make_demo_dataset(
        tmp_path / "data", seed=0, n_train=48, n_val=4, n_test=4, image_size=16
    )
    calls: list[tuple[int, int]] = []
    model = train_demo_model(root, seed=0, epochs=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 1)]
    assert not model.training
    pre = model.demo_preprocess
    assert pre["image_size"] == 16 and len(pre["mean"]) == 3 and len(pre["std"]) == 3
    path = save_checkpoint(
        tmp_path / "model.pt",
        model,
        arch="audit.demo:small_cnn",
        arch_kwargs=DEFAULT_PARAMS.arch_kwargs,
        outputs=list(DEMO_TARGETS),
        task="multilabel",
        preprocess=pre,
    )
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert ckpt["arch"] == "audit.demo:small_cnn"
    assert ckpt["outputs"] == list(DEMO_TARGETS)
    rebuilt = small_cnn(len(ckpt["outputs"]), **ckpt["arch_kwargs"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x))


def test_prepare_demo_builds_once_then_reuses_the_cache(tmp_path: Path) -> None:
    params = dataclasses.replace(DEFAULT_PARAMS, epochs=1)
    sizes = {"n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16}
    calls: list[tuple[str, int, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))

    model_path, data_dir = prepare_demo(
        seed=1, cache_dir=tmp_path, params=params, sizes=sizes, progress=progress
    )
    assert calls == [("generate", 0, 1), ("generate", 1, 1), ("train", 1, 1)]
    assert model_path.parent == data_dir.parent and model_path.parent.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [model_path.parent.name]  # no temp left
    ckpt = torch.load(model_path, weights_only=True, map_location="cpu")
    assert ckpt["preprocess"]["image_size"] == 16
    assert (data_dir / "labels.csv").is_file()

    again = prepare_demo(seed=1, cache_dir=tmp_path, params=params, sizes=sizes, progress=progress)
    assert again == (model_path, data_dir)
    assert len(calls) == 3  # cache hit: nothing rebuilt

    copied = prepare_demo(tmp_path / "out", seed=1, cache_dir=tmp_path, params=params, sizes=sizes)
    assert copied == (tmp_path / "out" / "model.pt", tmp_path / "out" / "data")
    assert copied[0].read_bytes() == model_path.read_bytes()


def test_default_cache_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PRUNE_AUDIT_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PRUNE_AUDIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "prune-audit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "prune-audit"
