"""The plugin has no Qt5-only code (scripts/check_qt6.py, the rules of QGIS's pyqt5_to_pyqt6 script)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parent.parent


def _checker() -> object:
    spec = importlib.util.spec_from_file_location("check_qt6", REPO / "scripts" / "check_qt6.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checker_flags_qt5_code_and_the_plugin_has_none(qgis_app: object, tmp_path: Path) -> None:
    check = _checker()
    classes = check._namespaces()  # type: ignore[attr-defined]
    bad = REPO / "tests" / "_qt5_sample_tmp.py"
    bad.write_text("from PyQt5.QtCore import Qt\nfrom qgis.core import QgsTask\nfrom qgis.PyQt.QtWidgets import "
                   "QComboBox\na = Qt.AlignLeft\nb = QgsTask.CanCancel\nc = QComboBox.SizeAdjustPolicy."
                   "AdjustToContents\nd = Qt.AlignmentFlag.AlignLeft\nw.exec_()\n")
    try:
        found = check.check_file(bad, classes)  # type: ignore[attr-defined]
    finally:
        bad.unlink()
    assert [f.split(": ", 1)[1] for f in found] == [
        "import from PyQt5.QtCore: use qgis.PyQt", "unscoped enum Qt.AlignLeft", "unscoped enum QgsTask.CanCancel",
        "exec_() is exec() in Qt6"]
    plugin = [f for p in sorted((REPO / "qgis_plugin").rglob("*.py")) for f in check.check_file(p, classes)]  # type: ignore[attr-defined]
    assert plugin == []
