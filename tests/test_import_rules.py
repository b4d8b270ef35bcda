"""The architecture's rules, read from the source: which package may import which."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QT_ROOTS = {"qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip"}


def imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, relative imports made absolute."""
    return imports_in(path.read_text(), ".".join(path.relative_to(REPO).with_suffix("").parts[:-1]))


def imports_in(source: str, package: str) -> list[str]:
    """The modules ``source`` (a module of ``package``) imports anywhere, at the top or inside functions."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    return names


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _violations(folder: str, forbidden: Callable[[str], bool], allowed: Callable[[Path], bool] = lambda p: False,
                ) -> list[str]:
    return [f"{p.relative_to(REPO)} imports {name}" for p in _sources(folder) if not allowed(p)
            for name in imported_modules(p) if forbidden(name)]


def _is_cli(name: str) -> bool:
    return name == "fastunet_core.cli" or name.startswith("fastunet_core.cli.")


def _is_bench(name: str) -> bool:
    return name.split(".")[0] == "bench" or name.startswith("bench_")


def test_core_imports_no_qt_nor_qgis() -> None:
    assert _violations("fastunet_core", lambda n: n.split(".")[0] in QT_ROOTS) == []


def test_core_imports_nothing_of_the_cli_outside_it() -> None:
    cli = REPO / "fastunet_core" / "cli"
    assert _violations("fastunet_core", _is_cli, allowed=lambda p: cli in p.parents) == []


def test_plugin_imports_nothing_of_the_cli() -> None:
    assert _violations("qgis_plugin", _is_cli) == []


@pytest.mark.parametrize("folder", ["fastunet_core", "qgis_plugin", "tests", "scripts"])
def test_nothing_imports_the_benches(folder: str) -> None:
    assert _violations(folder, _is_bench) == []


def test_the_rules_see_relative_and_nested_imports() -> None:
    names = imports_in("def f() -> None:\n    from ..cli import main\n    import qgis.core\n", "fastunet_core.polygons")
    assert "fastunet_core.cli" in names and "fastunet_core.cli.main" in names and "qgis.core" in names


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(folder: str) -> list[list[str]]:
    """Import cycles among the modules of ``folder`` (every import counts, also one inside a function)."""
    modules = {_module_name(p): p for p in _sources(folder)}
    graph = {name: sorted({m for m in imported_modules(path) if m in modules and m != name})
             for name, path in modules.items()}
    graph = {name: [m for m in deps if not name.startswith(m + ".")] for name, deps in graph.items()}  # parents
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                found.append([*trail[trail.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_plugin_has_no_import_cycles() -> None:
    assert _cycles("qgis_plugin") == []


def test_the_package_exports_its_tool_functions_lazily() -> None:
    import subprocess
    import sys

    code = ("import sys, fastunet_core as f; heavy = [m for m in ('torch', 'rasterio') if m in sys.modules]; "
            "assert not heavy, heavy; assert f.segment_raster.__module__ == 'fastunet_core.inference.segment'; "
            "assert callable(f.train) and callable(f.load_checkpoint) and callable(f.vectorize_raster)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
