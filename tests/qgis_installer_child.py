"""Child of test_qgis_installer.py, run by QGIS's own Python (/usr/bin/python3 here: no torch, no rasterio).

A fresh QGIS profile: the dock says the engine is missing; "Install the engine" (the QgsTask) makes the venv
in the profile and installs the engine there; then a segmentation runs through the dock, in the engine venv.
Usage: QGIS_CUSTOM_CONFIG_PATH=DIR QGIS_PYTHON qgis_installer_child.py MODEL RASTER FIND_LINKS TORCH_REQUIREMENT
"""

from __future__ import annotations

import json
import sys
import time

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings


def wait(condition: object, timeout: float) -> bool:
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        QgsApplication.processEvents()
        if time.monotonic() - start > timeout:
            return False
        time.sleep(0.02)
    QgsApplication.processEvents()
    return True


def main() -> None:
    model, raster, find_links, torch_req = sys.argv[1:5]
    app = QgsApplication([], True)  # the profile folder comes from QGIS_CUSTOM_CONFIG_PATH (set by the test)
    app.initQgis()
    report: dict[str, object] = {"settings_dir": QgsApplication.qgisSettingsDirPath(),
                                 "torch_in_qgis_python": _importable("torch"),
                                 "rasterio_in_qgis_python": _importable("rasterio")}
    settings = QgsSettings()  # where pip takes packages from on this machine (see the test)
    settings.setValue("fastunet_geo/pip_find_links", find_links)
    settings.setValue("fastunet_geo/torch_index_url", "")
    settings.setValue("fastunet_geo/torch_requirement", torch_req)
    settings.setValue("fastunet_geo/smp_models", "false")  # no CPU torchvision wheel here (see the test)
    from qgis_plugin.dock import SegmentDock

    dock = SegmentDock(None)
    report["before"] = {"engine_ok": dock.engine.ok, "button": dock.form.install.text(),
                        "run_enabled": dock.form.run.isEnabled(), "missing": list(dock.engine.missing),
                        "device_info": dock.form.device_info.text()}
    task = dock.start_install()
    lines: list[str] = []
    task.line.connect(lines.append)
    finished = wait(lambda: dock.install_task is None, 1200)
    report["install"] = {"finished": finished, "python": str(task.python) if task.python else None,
                         "error": task.error, "log_tail": lines[-3:], "engine_ok": dock.engine.ok,
                         "button": dock.form.install.text(), "lacking": list(dock.engine.lacking),
                         "note": dock.form.engine_note.text()}
    layer = QgsRasterLayer(raster, "ortho")
    QgsProject.instance().addMapLayer(layer)
    dock.form.layer.setLayer(layer)
    report["model_loaded"] = dock.load_model(model)
    run = dock.start_run()
    ran = run is not None and wait(lambda: dock.task is None, 600)
    outcome = run.outcome if run is not None else None
    report["segment"] = {"ran": ran, "error": run.error if run is not None else "not started",
                         "class_raster_written": bool(outcome and outcome.class_raster.is_file()),
                         "features": outcome.features if outcome else None,
                         "tiles": outcome.tiles if outcome else None,
                         "layers": sorted(lyr.name() for lyr in QgsProject.instance().mapLayers().values())}
    report["torch_imported_in_qgis"] = "torch" in sys.modules
    QgsProject.instance().removeAllMapLayers()
    del layer
    dock.deleteLater()
    QgsApplication.processEvents()
    print("REPORT " + json.dumps(report), flush=True)
    app.exitQgis()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
