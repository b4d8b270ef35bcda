"""Look for Qt5-only code in the QGIS plugin, as QGIS's pyqt5_to_pyqt6 migration script would flag it.

Checks (the script's rules, re-implemented here because its enum table is not available offline):
unscoped enums (``Qt.AlignLeft`` instead of ``Qt.AlignmentFlag.AlignLeft``: found by introspecting the
installed PyQt5/QGIS classes), ``PyQt5`` imports (use ``qgis.PyQt``), ``exec_``, ``QVariant`` types,
``qApp``, ``QRegExp``, ``resources_rc``, ``QFontMetrics.width``, ``activated[str]``, ``QDesktopWidget``.
Prints one line per finding; exit status 1 when there is any.

Usage: env QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/check_qt6.py [qgis_plugin]
"""

from __future__ import annotations

import ast
import enum
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BANNED_NAMES = {"exec_": "exec_() is exec() in Qt6", "qApp": "qApp is removed: QApplication.instance()",
                "QRegExp": "QRegExp is removed: QRegularExpression", "resources_rc": "compiled resources are removed",
                "QDesktopWidget": "QDesktopWidget is removed"}


def _namespaces() -> dict[str, object]:
    from qgis import core, gui
    from qgis.PyQt import QtCore, QtGui, QtWidgets

    names: dict[str, object] = {}
    for module in (QtCore, QtGui, QtWidgets, core, gui):
        names.update({k: v for k, v in vars(module).items() if isinstance(v, type)})
    return names


def _is_unscoped_enum(owner: object, attr: str) -> bool:
    """Return True when ``owner.attr`` is an enum value reached without its enum's name."""
    if isinstance(getattr(owner, attr, None), type):
        return False  # a nested class or the enum type itself
    value = getattr(owner, attr, None)
    if value is None or type(value) in (int, float, str, bool):
        return False
    kind = type(value)
    if issubclass(kind, enum.Enum):
        return False  # PyQt6-style scoped enums (QGIS's Python enums): already fine
    enum_name = kind.__name__
    return getattr(owner, enum_name, None) is kind and getattr(kind, attr, None) is not None


def check_file(path: Path, classes: dict[str, object]) -> list[str]:
    """Return the findings in one Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("PyQt5"):
            found.append(f"{where}: import from {node.module}: use qgis.PyQt")
        if isinstance(node, (ast.ImportFrom, ast.Import)):
            for alias in node.names:
                if alias.name in BANNED_NAMES:
                    found.append(f"{where}: {BANNED_NAMES[alias.name]}")
        if isinstance(node, ast.Attribute):
            if node.attr in BANNED_NAMES:
                found.append(f"{where}: {BANNED_NAMES[node.attr]}")
            if isinstance(node.value, ast.Name) and node.value.id == "QVariant":
                found.append(f"{where}: QVariant.{node.attr}: use QMetaType.Type")
            if isinstance(node.value, ast.Name) and node.value.id in classes \
                    and _is_unscoped_enum(classes[node.value.id], node.attr):
                found.append(f"{where}: unscoped enum {node.value.id}.{node.attr}")
            if isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id in classes:
                owner = getattr(classes[node.value.value.id], node.value.attr, None)
                if isinstance(owner, type) and _is_unscoped_enum(owner, node.attr):
                    found.append(f"{where}: unscoped enum {node.value.value.id}.{node.value.attr}.{node.attr}")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "activated":
            found.append(f"{where}: activated[str] is removed")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "width" \
                and isinstance(node.func.value, ast.Call) \
                and getattr(node.func.value.func, "attr", "") == "fontMetrics":
            found.append(f"{where}: QFontMetrics.width() is removed")
    return found


def main(argv: list[str] | None = None) -> int:
    """Check every .py file under the given folder (default: qgis_plugin)."""
    args = argv if argv is not None else sys.argv[1:]
    folder = REPO / (args[0] if args else "qgis_plugin")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)  # noqa: F841 (some gui classes need an application)
    classes = _namespaces()
    findings = [f for path in sorted(folder.rglob("*.py")) for f in check_file(path, classes)]
    for line in findings:
        print(line)
    print(f"{len(findings)} finding(s) in {folder.relative_to(REPO)}")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
