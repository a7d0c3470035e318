"""The ``.pt2`` safety scan: what in an exported-program archive would run code.

Owns: reading the archive's entries as data and listing the reasons it is unsafe to load
without ``--trust-checkpoint`` -- pickled payloads, opaque objects, shared libraries, graph
targets outside ``torch.ops``, symbolic-shape strings that are not plain arithmetic. Must not
load or unpickle anything.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

_PT2_ENTRIES = [
    re.compile(p)
    for p in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"version",
        r"\.data/[\w.]+",
        r"models/[\w.-]+\.json",
        r"data/weights/[\w.-]+",
        r"data/constants/[\w.-]+",
        r"data/sample_inputs/[\w.-]+\.pt",
        r"extra/[^/]+",
    )
]


_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order)\.[a-z][a-z0-9_]*(\.[A-Za-z0-9_]+)?")


_OPERATOR_FUNCS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ not_"
    " invert".split()
)


_SYM_CALLS = frozenset(
    "Symbol Integer Rational Float Eq Ne Lt Le Gt Ge And Or Not Abs Max Min Mod floor ceiling"
    " sqrt FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv"
    " LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv TruncToFloat TruncToInt"
    " RoundToInt RoundDecimal ToFloat Identity IsNonOverlappingAndDenseIndicator".split()
)


_SYM_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo"})


_SYMBOL_NAME = re.compile(r"[A-Za-z]+\d+")


def _safe_target(target: str) -> bool:
    if "__" in target:
        return False
    if _OP_TARGET.fullmatch(target):
        return True
    if target.startswith("_operator."):
        return target[len("_operator.") :] in _OPERATOR_FUNCS
    return re.fullmatch(r"math\.[a-z]+", target) is not None


def _safe_sym_expr(text: str) -> bool:
    """Whether a symbolic-shape string only builds sympy numbers, symbols and arithmetic."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False
    allowed = (
        ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Load,
        ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
        ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
        ast.And, ast.Or, ast.Call, ast.Name, ast.Constant, ast.keyword,
    )  # fmt: skip
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            return False
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _SYM_CALLS
        ):
            return False
        if isinstance(node, ast.Name) and not (
            node.id in _SYM_CALLS or node.id in _SYM_CONSTANTS or _SYMBOL_NAME.fullmatch(node.id)
        ):
            return False
        if isinstance(node, ast.Constant) and not (
            isinstance(node.value, (int, float, bool))
            or (isinstance(node.value, str) and _SYMBOL_NAME.fullmatch(node.value))
        ):
            return False
        if isinstance(node, ast.keyword) and not (
            node.arg is not None
            and node.arg.isidentifier()
            and not node.arg.startswith("_")
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bool)
        ):
            return False
    return True


def pt2_unsafe_reasons(path: Path) -> list[str]:
    """List what in a ``.pt2`` archive would make ``torch.export.load`` run code from it.

    Fails closed: entries, payload kinds, graph targets and symbolic expressions outside a
    plain tensor program are all reported. An empty list means the archive holds only JSON,
    raw tensor bytes and weights-only pickles of tensors.
    """
    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                return ["the zip repeats entry names (readers may disagree on which is used)"]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1:
                return [f"entries under several top-level folders ({', '.join(sorted(tops))})"]
            files = {n.split("/", 1)[1]: n for n in names if "/" in n and not n.endswith("/")}
            for rel in files:
                if not any(p.fullmatch(rel) for p in _PT2_ENTRIES):
                    reasons.append(f"unexpected entry {rel!r}")
            for rel, full in files.items():
                data = zf.read(full)
                if rel.endswith("_config.json") and rel.startswith(
                    ("data/weights/", "data/constants/")
                ):
                    reasons += _payload_reasons(rel, data)
                elif rel.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                    except Exception:
                        reasons.append(f"{rel!r} is a pickle that is not weights-only")
                elif rel.startswith("models/"):
                    reasons += _graph_reasons(rel, data)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        return [f"the archive cannot be read ({type(e).__name__}: {e})"]
    return reasons


def _payload_reasons(rel: str, data: bytes) -> list[str]:
    try:
        config = json.loads(data).get("config", {})
    except (ValueError, AttributeError):
        return [f"{rel!r} is not valid JSON"]
    out = []
    for name, meta in config.items() if isinstance(config, dict) else []:
        if not isinstance(meta, dict):
            out.append(f"{rel!r} entry {name!r} is malformed")
        elif meta.get("use_pickle"):
            out.append(f"{name!r} in {rel!r} is stored as a pickle")
        elif rel.startswith("data/constants/") and not str(meta.get("path_name", "")).startswith(
            "tensor_"
        ):
            out.append(f"constant {name!r} is a custom/opaque object (unpickled on load)")
    return out


def _graph_reasons(rel: str, data: bytes) -> list[str]:
    try:
        tree = json.loads(data)
    except ValueError:
        return [f"{rel!r} is not valid JSON"]
    out: list[str] = []
    stack: list[Any] = [tree]
    while stack and len(out) < 5:
        obj = stack.pop()
        if isinstance(obj, dict):
            target = obj.get("target")
            if isinstance(target, str) and "inputs" in obj and not _safe_target(target):
                out.append(f"graph calls {target[:80]!r}")
            for key, value in obj.items():
                if key == "as_operator" and isinstance(value, str) and not _safe_target(value):
                    out.append(f"graph passes operator {value[:80]!r}")
                elif key == "expr_str" and isinstance(value, str) and not _safe_sym_expr(value):
                    out.append(f"symbolic shape {value[:80]!r} is not a plain expression")
                elif key in ("custom_obj_values", "as_custom_obj") and value:
                    out.append("graph uses custom (torchbind) objects")
                else:
                    stack.append(value)
        elif isinstance(obj, list):
            stack.extend(obj)
    return out
