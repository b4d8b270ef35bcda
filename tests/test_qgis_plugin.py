"""The packaged plugin: metadata, zip contents, loading from the zip in QGIS, and a light start."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parent.parent
REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
            "tracker", "homepage", "category", "tags", "icon", "hasProcessingProvider")


def _build_zip(out: Path) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from package_plugin import build_plugin_zip
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return build_plugin_zip(out)


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_zip(tmp_path_factory.mktemp("dist") / "fastunet_geo.zip")


@pytest.fixture
def profile_plugins(plugin_zip: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh profile's python/plugins folder with the zip installed (as QGIS's 'Install from ZIP' does)."""
    plugins = tmp_path / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    yield plugins


def test_metadata_declares_what_qgis_needs() -> None:
    cp = configparser.ConfigParser()
    cp.read(REPO / "metadata.txt", encoding="utf-8")
    general = cp["general"]
    missing = [k for k in REQUIRED if not general.get(k, "").strip()]
    assert not missing
    assert general["hasProcessingProvider"] == "yes"
    major, minor = (int(v) for v in general["qgisMinimumVersion"].split(".")[:2])
    assert (major, minor) == (3, 40)  # the version these tests run on
    assert Qgis.versionInt() >= major * 10000 + minor * 100
    assert (REPO / "qgis_plugin" / general["icon"]).is_file()


def test_zip_holds_plugin_metadata_and_core(plugin_zip: Path) -> None:
    with zipfile.ZipFile(plugin_zip) as zf:
        names = set(zf.namelist())
    assert {"fastunet_geo/__init__.py", "fastunet_geo/metadata.txt", "fastunet_geo/icons/icon.svg",
            "fastunet_geo/algorithms/provider.py", "fastunet_geo/_vendor/fastunet_core/inference/predict.py",
            "fastunet_geo/_vendor/fastunet_core/polygons/vectorize.py"} <= names
    for py in (REPO / "qgis_plugin").rglob("*.py"):
        assert f"fastunet_geo/{py.relative_to(REPO / 'qgis_plugin').as_posix()}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert all(n.startswith("fastunet_geo/") for n in names)
    again = _build_zip(plugin_zip.with_name("again.zip"))
    assert again.read_bytes() == plugin_zip.read_bytes()  # reproducible


def test_plugin_loads_from_zip_and_unloads(qgis_iface: object, profile_plugins: Path) -> None:
    import qgis.utils

    import fastunet_core  # noqa: F401 (keep the repository's core: the vendored copy is only a fallback)

    registry = QgsApplication.processingRegistry()
    assert registry.providerById("fastunetgeo") is None
    qgis.utils.plugin_paths.insert(0, str(profile_plugins))
    sys.path.insert(0, str(profile_plugins))
    qgis_iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    try:
        qgis.utils.updateAvailablePlugins()
        assert "fastunet_geo" in qgis.utils.available_plugins
        assert qgis.utils.pluginMetadata("fastunet_geo", "hasProcessingProvider") == "yes"
        assert qgis.utils.loadPlugin("fastunet_geo")
        assert Path(sys.modules["fastunet_geo"].__file__).parent == profile_plugins / "fastunet_geo"
        assert qgis.utils.startPlugin("fastunet_geo"), qgis_iface.messageBar().get_messages(  # type: ignore[attr-defined]
            Qgis.MessageLevel.Critical)
        plugin = qgis.utils.plugins["fastunet_geo"]
        provider = registry.providerById("fastunetgeo")
        assert provider is not None
        assert sorted(a.name() for a in provider.algorithms()) == ["segment", "train", "vectorize"]
        assert plugin.action is not None and plugin.action.text() == "fastunet-geo segmentation"
        dock = plugin.show_dock(True)
        assert dock is not None and dock.form.run is not None and not dock.isHidden()
        assert qgis.utils.unloadPlugin("fastunet_geo")
        assert registry.providerById("fastunetgeo") is None
        assert plugin.dock is None and plugin.action is None
        assert str(profile_plugins / "fastunet_geo" / "_vendor") not in sys.path
    finally:
        qgis.utils.plugin_paths.remove(str(profile_plugins))
        if str(profile_plugins) in sys.path:
            sys.path.remove(str(profile_plugins))
        for name in [m for m in sys.modules if m == "fastunet_geo" or m.startswith("fastunet_geo.")]:
            del sys.modules[name]
    QgsApplication.processEvents()


START_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from qgis.core import QgsApplication
    app = QgsApplication([], True)
    app.initQgis()
    from unittest.mock import MagicMock
    from qgis.PyQt.QtWidgets import QMainWindow
    window = QMainWindow()
    iface = MagicMock()  # QGIS's interface: only mainWindow() must be a real widget (the action's parent)
    iface.mainWindow.return_value = window
    HEAVY = ("torch", "rasterio", "shapely", "safetensors", "pyogrio", "fastunet_core.models.checkpoint",
             "fastunet_core.inference.predict")
    before = sorted(m for m in HEAVY if m in sys.modules)  # qgis.core itself imports shapely when it has it
    import fastunet_geo
    plugin = fastunet_geo.classFactory(iface)
    plugin.initGui()
    import fastunet_core
    from fastunet_geo.installer import plan_install, requirements_file
    from fastunet_geo.installer import PackageSource
    import pathlib
    plan = plan_install(pathlib.Path(sys.argv[1]) / "venv", PackageSource(), gpu=False, python="python3")
    report = {"before": before, "after": sorted(m for m in HEAVY if m in sys.modules),
              "core": fastunet_core.__file__, "requirements": str(requirements_file()),
              "installs": list(plan.steps[2].argv),
              "provider": QgsApplication.processingRegistry().providerById("fastunetgeo") is not None}
    plugin.unload()
    del plugin, iface, window
    print("REPORT " + json.dumps(report), flush=True)
    app.exitQgis()
""")


def test_plugin_start_imports_no_torch(profile_plugins: Path, tmp_path: Path) -> None:
    """classFactory + initGui in a fresh interpreter: no torch, no rasterio; the vendored core is used."""
    script = tmp_path / "start.py"
    script.write_text(START_SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, str(script), str(profile_plugins)], env=env, capture_output=True,
                          text=True, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, proc.stderr[-3000:]
    report = json.loads(line[len("REPORT "):])
    assert "torch" not in report["before"]
    assert report["after"] == report["before"]  # the plugin imported none of the engine
    assert report["provider"] is True
    assert Path(report["core"]).is_relative_to(profile_plugins / "fastunet_geo" / "_vendor")
    # the engine installer reads the zip's own copy of requirements/engine.txt
    assert Path(report["requirements"]) == profile_plugins / "fastunet_geo" / "requirements" / "engine.txt"
    from qgis_plugin.installer import engine_requirements, torch_family

    assert set(torch_family(engine_requirements())[1]) <= set(report["installs"])  # torch's step brings the rest


def test_zip_is_ready_for_the_plugin_repository_and_qgis4(plugin_zip: Path) -> None:
    """What plugins.qgis.org's validator (QGIS-Django plugins/validator.py) and QGIS 4 ask beyond the basics."""
    with zipfile.ZipFile(plugin_zip) as zf:
        assert zf.read("fastunet_geo/LICENSE").decode().startswith("MIT License")  # mandatory since June 2024
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(zf.read("fastunet_geo/metadata.txt").decode("utf-8"))
    general = cp["general"]
    assert {"name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
            "repository"} <= set(general)  # the validator's required keys
    assert general["qgisMaximumVersion"] == "4.99" and general["supportsQt6"] == "True"
    assert general["changelog"].strip().startswith(general["version"])
    assert "pip install" not in general["about"]
    from qgis_plugin.about import help_url
    from qgis_plugin.algorithms.segment import SegmentAlgorithm

    expected = f"{general['homepage']}/#processing-segment"
    assert SegmentAlgorithm().helpUrl() == help_url("processing-segment") == expected
