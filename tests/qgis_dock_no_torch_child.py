"""Child of test_qgis_dock_threads.py: open the dock, read a model, get the device line; report torch's state.

Usage: python qgis_dock_no_torch_child.py MODEL. The engine is forced into a separate process
(FASTUNET_GEO_ENGINE=subprocess, as in the QGIS executables), so QGIS's own process should never import torch.
"""

from __future__ import annotations

import json
import sys
import time

from qgis.core import QgsApplication


def main() -> None:
    app = QgsApplication([], True)
    app.initQgis()
    from qgis_plugin.dock import SegmentDock

    dock = SegmentDock(None)
    dock.show()
    QgsApplication.processEvents()
    loaded = dock.load_model(sys.argv[1])
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
    app.exitQgis()


if __name__ == "__main__":
    main()
