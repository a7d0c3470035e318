"""Messages that name what is really wrong (issue 11, point 10, data side).

A semicolon-delimited manifest is a delimiter problem, not a missing column; a symlink loop,
a folder or a FIFO where an image should be is that, not "missing". Each case runs the real
CLI and checks exit 3, the message and an untouched ``--out`` (helpers of test_bad_inputs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import check_args
from tests.test_bad_inputs import EVAL_ROW, Inputs, _refused, pristine_manifest  # noqa: F401


@pytest.fixture
def manifest(pristine_manifest: Path, tmp_path: Path) -> Path:  # noqa: F811
    return Path(shutil.copytree(pristine_manifest, tmp_path / "data"))


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolons"), ("\t", "tabs")])
def test_wrong_delimiter_is_named(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, sep: str, word: str
) -> None:
    csv_path = manifest / "labels.csv"
    csv_path.write_text(csv_path.read_text().replace(",", sep))
    err = _refused(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"),
        rf"labels\.csv is not comma-separated: its header .* holding {word}\. Save it as a "
        r"comma-separated CSV",
    )
    assert "Rename the path column" not in err


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        ("loop", r"symlink loops"),
        ("folder", r"folders"),
        ("fifo", r"FIFOs \(named pipes\)"),
    ],
)
def test_image_that_is_not_a_file_is_named(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path, make: str, kind: str
) -> None:
    victim = manifest / "imgs" / f"{EVAL_ROW}.png"
    victim.unlink()
    if make == "loop":
        victim.symlink_to(victim.name)  # points at itself: ELOOP
    elif make == "folder":
        victim.mkdir()
    else:
        os.mkfifo(victim)  # opening it would block; stat must be enough
    err = _refused(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"),
        rf"1 of the \d+ image paths listed in .*labels\.csv are {kind}, not image files: "
        rf"'imgs/{EVAL_ROW}\.png'",
    )
    assert "do not exist" not in err


def test_missing_image_is_still_called_missing(
    tiny_audit_inputs: Inputs, manifest: Path, tmp_path: Path
) -> None:
    (manifest / "imgs" / f"{EVAL_ROW}.png").unlink()
    _refused(
        check_args(tiny_audit_inputs[0], manifest, tmp_path / "out"),
        rf"1 of the \d+ images listed in .*labels\.csv do not exist under DATA.*imgs/{EVAL_ROW}",
    )
