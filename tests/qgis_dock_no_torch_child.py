"""Child of test_qgis_dock_threads.py: QGIS's own process never imports torch; reports torch's state as JSON.

Usage: python qgis_dock_no_torch_child.py dock MODEL: open the dock, read a model, get the device line.
       python qgis_dock_no_torch_child.py train RASTER RUN_FOLDER: the Processing train algorithm, once with a
       good configuration (one epoch) and once with one the engine refuses (learning rate 0).
The engine is forced into a separate process (FASTUNET_GEO_ENGINE=subprocess, as in the QGIS executables), so
QGIS's own process should never import torch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.append("/usr/share/qgis/python/plugins")

from qgis.core import QgsApplication


def main() -> None:
    app = QgsApplication([], True)
    app.initQgis()
    if sys.argv[1] == "train":
        train(*sys.argv[2:4])
    else:
        dock(sys.argv[2])
    app.exitQgis()


def train(raster: str, folder: str) -> None:
    import processing
    from processing.core.Processing import Processing
    from qgis.core import QgsProcessingException
    from qgis_load_results_child import labels_layer

    from qgis_plugin.algorithms.provider import FastUNetProvider

    Processing.initialize()
    provider = FastUNetProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    labels = labels_layer(raster)
    params = {"INPUT": raster, "LABELS": labels, "CLASS_FIELD": "kind", "CLASS_NAMES": "background,building,road",
              "ARCHITECTURE": 4, "TILE_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4, "VAL_FRACTION": 0.25, "DEVICE": 2,
              "OUTPUT_FOLDER": folder}
    result = processing.run("fastunetgeo:train", params)
    report: dict[str, object] = {"best_epoch": result["BEST_EPOCH"], "checkpoint": result["CHECKPOINT"],
                                 "torch_after_train": "torch" in sys.modules,
                                 "pydantic_after_train": "pydantic" in sys.modules}
    try:
        processing.run("fastunetgeo:train", {**params, "LEARNING_RATE": 0.0,
                                             "OUTPUT_FOLDER": str(Path(folder).with_name("refused"))})
        report["refused"] = None
    except QgsProcessingException as exc:
        report["refused"] = str(exc)
    report["torch_at_end"] = "torch" in sys.modules
    del labels
    QgsApplication.processingRegistry().removeProvider(provider)
    print("REPORT " + json.dumps(report), flush=True)


def dock(model: str) -> None:
    from qgis_plugin.dock import SegmentDock

    dock = SegmentDock(None)
    dock.show()
    QgsApplication.processEvents()
    loaded = dock.load_model(model)
    after_open = "torch" in sys.modules
    start = time.monotonic()
    while dock.gpu is None and time.monotonic() - start < 120:
        QgsApplication.processEvents()
        time.sleep(0.01)
    report = {"loaded": loaded, "tile": dock.form.tile.value(), "torch_after_open": after_open,
              "torch_at_end": "torch" in sys.modules, "device_line": dock.form.device_info.text()}
    dock.deleteLater()
    QgsApplication.processEvents()
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
