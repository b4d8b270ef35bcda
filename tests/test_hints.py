"""Core messages name settings through fastunet_core.hints: flags on the command line, other words elsewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from fastunet_core.hints import SETTINGS, FrontEnd, hint, setting, speaking

CORE = Path(__file__).resolve().parents[1] / "fastunet_core"

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
PLAIN = FrontEnd("plain", {"tile": "Tile size"})  # a front end with one control, like a small GUI


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Return the string constants of a module that are not docstrings."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_core_message_writes_a_command_line_flag() -> None:
    """Only the CLI and the table in hints.py spell flags; the rest of the core names settings by key."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        if "cli" in path.relative_to(CORE).parts or path.name == "hints.py":
            continue
        for line, text in _strings(ast.parse(path.read_text(), str(path))):
            if FLAG.search(text):
                found.append(f"{path.relative_to(CORE)}:{line}: {text!r}")
    assert not found, "\n".join(found)


def test_every_setting_named_in_the_core_is_known() -> None:
    keys: set[str] = set()
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setting", "hint"):
                named = node.args[:1] if node.func.id == "setting" else node.args[1:]
                keys |= {a.value for a in named if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    assert keys and keys <= set(SETTINGS), keys - set(SETTINGS)


def test_front_ends_word_the_same_message_differently() -> None:
    from fastunet_core.inference.resolution import plan_resolution

    assert setting("tile", 448) == "--tile 448"  # the CLI is the default
    assert "(give it with --model-resolution)" in plan_resolution("auto", 0.3, None).reason
    with speaking(PLAIN):
        assert setting("tile", 448) == "Tile size 448"
        assert hint("; use {}", "model_resolution") == ""  # no such control: the clause is left out
        reason = plan_resolution("auto", 0.3, None).reason
        assert "--" not in reason and reason.endswith("does not record the resolution it was trained at")
        with pytest.raises(Exception, match="the run resolution takes auto, native or metres"):
            plan_resolution("fine", 0.3, None)  # no name here for it: plain words, never the flag
    assert setting("tile") == "--tile"  # the context ended


def test_an_unknown_setting_is_a_bug_not_a_message() -> None:
    with pytest.raises(KeyError, match="unknown setting"):
        setting("tiles")
    with speaking(PLAIN), pytest.raises(KeyError):
        hint(" ({})", "no_such_setting")


def test_cli_still_names_its_flags(shared_data: Path, tmp_path: Path) -> None:
    """A Deepness model without a resolution: the CLI says which flag gives it."""
    from cli_helpers import run_cli

    model = shared_data / "deepness-testdata" / "models" / "one_output_sigmoid_red_detector.onnx"
    code, out = run_cli("predict", str(shared_data / "deepness-testdata" / "dummy_fotomap_small.tif"),
                        "-m", str(model), "-o", str(tmp_path / "red.tif"))
    assert code == 0, out
    assert "give it with --model-resolution" in out
    assert out.count("resolution: ") == 1


def test_counts_take_the_noun_in_the_right_number() -> None:
    from fastunet_core.hints import counted

    assert [counted(n, "tile") for n in (0, 1, 2)] == ["0 tiles", "1 tile", "2 tiles"]
    assert counted(1234, "polygon", thousands=True) == "1,234 polygons" and counted(1, "polygon", True) == "1 polygon"
