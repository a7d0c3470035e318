"""``--pruned``: models pruned elsewhere, audited against MODEL as levels of their own."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import prune as torch_prune
from typer.testing import CliRunner

from audit import AuditConfig, CheckpointError, Policy, run_audit, save_checkpoint
from audit.cli import app
from audit.model_io import load_model
from audit.pruning import fold_pruning_reparametrisations
from tests.conftest import TINY_ARCH, check_args

# Probabilities of the same weights through two loading routes; both run the same float32
# kernels, so they agree far below this.
PROB_ATOL = 1e-6
META = {
    "arch": TINY_ARCH,
    "outputs": ["red", "green", "blue"],
    "task": "multilabel",
    "preprocess": {"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
}


def _torch_pruned(model: torch.nn.Module, amount: float) -> torch.nn.Module:
    net = copy.deepcopy(model)
    torch_prune.global_unstructured(
        [(net.conv, "weight"), (net.conv2, "weight"), (net.fc, "weight")],
        pruning_method=torch_prune.L1Unstructured,
        amount=amount,
    )
    return net


def _cfg(ckpt: Path, data: Path, out: Path, **kw: object) -> AuditConfig:
    base = dict(
        model=ckpt,
        data=data,
        out=out,
        arch=TINY_ARCH,
        groups=("tinted",),
        bootstrap=20,
        device="cpu",
        policy=Policy(min_group_size=5),
    )
    return AuditConfig(**(base | kw))  # type: ignore[arg-type]


def test_torch_pruned_model_before_and_after_remove_matches_the_tools_own_level(
    tiny_audit_inputs, tmp_path: Path
) -> None:
    ckpt, data, model = tiny_audit_inputs
    reparam = _torch_pruned(model, 0.9)
    before = tmp_path / "before-remove.pt"
    torch.save(reparam.state_dict(), before)  # weight_orig + weight_mask
    assert any(k.endswith("weight_orig") for k in torch.load(before))
    removed = _torch_pruned(model, 0.9)  # a pruned module cannot be deep-copied
    for module in (removed.conv, removed.conv2, removed.fc):
        torch_prune.remove(module, "weight")
    after = tmp_path / "after-remove.pt"
    save_checkpoint(after, removed, **META)

    out = tmp_path / "out"
    result = run_audit(
        _cfg(
            ckpt,
            data,
            out,
            sparsities=(0.9,),
            method="global",
            recovery="none",
            pruned=(before, after),
        )
    )
    lvls = result.report["validation"]["levels"]
    assert [(lv["label"], lv["source"]) for lv in lvls] == [
        ("0.9", "method"),
        ("before-remove.pt", "supplied"),
        ("after-remove.pt", "supplied"),
    ]
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        probs, labels = z["pruned_probs"], list(z["level_labels"])
    assert labels == ["0.9", "before-remove.pt", "after-remove.pt"]
    np.testing.assert_allclose(probs[1], probs[0], rtol=0, atol=PROB_ATOL)
    np.testing.assert_allclose(probs[2], probs[0], rtol=0, atol=PROB_ATOL)
    for lv in lvls[1:]:
        assert lv["achieved_sparsity"] == pytest.approx(lvls[0]["achieved_sparsity"], abs=1e-12)
        assert lv["sparsity"] == lv["achieved_sparsity"]
        assert lv["model"]["n_parameters"] == lv["model"]["n_parameters_dense"]
        assert lv["model"]["parameter_reduction"] == 0.0 and not lv["model"]["shapes_differ"]
        assert [row["name"] for row in lv["per_layer"]] == [
            "conv.weight",
            "conv2.weight",
            "fc.weight",
        ]
    # The same deltas: the gate and the forecast grading see the same model.
    assert lvls[1]["delta"] == lvls[0]["delta"] == lvls[2]["delta"]
    # Supplied models replace target_sparsity: each is judged.
    judged = {c.get("model") for c in result.report["gate"]["checks"]}
    assert judged == {"before-remove.pt", "after-remove.pt"}
    assert result.report["validation"]["max_safe_sparsity"] in (None, 0.9)


def test_pruned_without_sparsity_skips_the_tools_own_levels(tiny_audit_inputs, tmp_path: Path):
    ckpt, data, model = tiny_audit_inputs
    path = tmp_path / "shipped.pt"
    save_checkpoint(path, _torch_pruned(model, 0.5), **META)
    cfg = _cfg(ckpt, data, tmp_path / "out", pruned=(path,))
    assert cfg.audit_sparsities == ()
    result = run_audit(cfg)
    (level,) = result.report["validation"]["levels"]
    assert level["label"] == "shipped.pt" and level["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result.report["validation"]["forecast_agreement"]["sparsity"] == level["sparsity"]
    assert "shipped.pt" in (tmp_path / "out" / "report.md").read_text()
    assert "shipped.pt" in (tmp_path / "out" / "report.html").read_text()


def test_pruned_model_with_other_outputs_is_an_input_error(tiny_audit_inputs, tmp_path: Path):
    ckpt, data, model = tiny_audit_inputs
    renamed = tmp_path / "renamed.pt"
    save_checkpoint(renamed, model, **(META | {"outputs": ["red", "blue", "green"]}))
    fewer = tmp_path / "fewer.pt"
    from tests.conftest import tiny_net

    save_checkpoint(fewer, tiny_net(2), **(META | {"outputs": ["red", "green"]}))
    for path, message in (
        (renamed, r"names its outputs red, blue, green but the dense model names them red, "),
        (fewer, r"has 2 outputs but the dense model"),
    ):
        with pytest.raises(CheckpointError, match=message):
            run_audit(_cfg(ckpt, data, tmp_path / "out", pruned=(path,)))
        result = CliRunner().invoke(
            app, check_args(ckpt, data, tmp_path / "cli", "--pruned", str(path))
        )
        assert result.exit_code == 3, result.output
        assert not (tmp_path / "cli").exists() and not (tmp_path / "out").exists()


def test_pruned_with_no_validate_is_a_usage_error() -> None:
    with pytest.raises(Exception, match=r"--pruned models are audited by measuring them"):
        AuditConfig(model=Path("m"), data=Path("d"), pruned=(Path("p"),), validate=False)


# ------------------------------------------------------------------ reparametrisations


def test_fold_nn_utils_prune_state_dict_equals_prune_remove(tiny_audit_inputs) -> None:
    _, _, model = tiny_audit_inputs
    reparam = _torch_pruned(model, 0.7)
    folded = fold_pruning_reparametrisations(reparam.state_dict(), source="test")
    for module in (reparam.conv, reparam.conv2, reparam.fc):
        torch_prune.remove(module, "weight")
    expected = reparam.state_dict()
    assert list(folded) == list(expected) or set(folded) == set(expected)
    assert all(torch.equal(folded[k], expected[k]) for k in expected)


def test_ao_parametrisation_round_trips_with_its_sparsifier_state(
    tiny_audit_inputs, tmp_path: Path
) -> None:
    from torch.ao.pruning import WeightNormSparsifier

    _, _, model = tiny_audit_inputs
    net = copy.deepcopy(model)
    sparsifier = WeightNormSparsifier(
        sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=2
    )
    sparsifier.prepare(net, [{"tensor_fqn": "fc.weight"}])
    sparsifier.step()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    path = tmp_path / "ao.pt"
    state = dict(sparsifier.state_dict()["state"])  # a plain dict, loadable weights-only
    torch.save({"state_dict": net.state_dict(), "sparsifier": {"state": state}}, path)
    loaded = load_model(path, arch=TINY_ARCH)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), expected, atol=PROB_ATOL)
    zeros = loaded.model.fc.weight == 0
    assert zeros.any() and torch.equal(zeros, net.fc.parametrizations.weight[0].mask == 0)

    bare = tmp_path / "ao-no-mask.pt"
    torch.save(net.state_dict(), bare)
    with pytest.raises(
        CheckpointError, match=r"torch\.ao\.pruning parametrisation, but not its mask"
    ):
        load_model(bare, arch=TINY_ARCH)

    sparsifier.squash_mask()
    squashed = tmp_path / "ao-squashed.pt"
    torch.save(net.state_dict(), squashed)
    with torch.no_grad():
        assert torch.allclose(
            load_model(squashed, arch=TINY_ARCH).model(x), expected, atol=PROB_ATOL
        )


def test_mask_of_the_wrong_shape_is_rejected() -> None:
    state = {"fc.weight_orig": torch.ones(2, 3), "fc.weight_mask": torch.ones(3, 2)}
    with pytest.raises(
        CheckpointError, match=r"the pruning mask of 'fc\.weight' has shape \(3, 2\)"
    ):
        fold_pruning_reparametrisations(state, source="'x.pt'")
