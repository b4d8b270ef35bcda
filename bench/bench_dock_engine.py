"""The dock's engine process kept between runs: seconds from Run to the first tile, run 1 against the next runs.

Opens the dock in a headless QGIS with the engine in a separate process (``FASTUNET_GEO_ENGINE=subprocess``,
as in the QGIS executables), makes a model with ``fastunet-geo init`` and segments
``data/samples/cogeo.tif`` (whole layer, polygons on) several times. For each run: seconds from Run
(``start_run``) to the first tile's progress, whether the engine process was started or kept, and the
model loads that process counted (its ``stats`` call). A warm-up run in a dock of its own goes first, so
the ONNX export is in the cache and the files are in the page cache; run 1 then pays the process start and
the model load, as the first Run after opening the dock does.

    env -u PROJ_DATA -u PROJ_LIB QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_dock_engine.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "data" / "samples" / "cogeo.tif"


def first_tile_seconds(dock: object) -> tuple[float, float]:
    """Run the dock once; return seconds to the first tile and to the end."""
    from qgis.core import QgsApplication

    seen: list[float] = []
    t0 = time.perf_counter()
    task = dock.start_run()  # type: ignore[attr-defined]
    if task is None:
        raise SystemExit("the run did not start")
    # the first progress above the predict stage's start (5 %) is the first tile done
    task.progressChanged.connect(lambda p: seen.append(time.perf_counter()) if p > 5 and not seen else None)
    while dock.task is not None:  # type: ignore[attr-defined]
        QgsApplication.processEvents()
        time.sleep(0.002)
    end = time.perf_counter()
    if task.outcome is None:
        raise SystemExit(f"the run failed: {task.error}")
    return seen[0] - t0, end - t0


def open_dock(raster: Path, model: Path) -> object:
    from qgis.core import QgsProject, QgsRasterLayer

    from qgis_plugin.dock import SegmentDock

    dock = SegmentDock(None)
    layer = QgsRasterLayer(str(raster), "cogeo")
    QgsProject.instance().addMapLayer(layer)
    dock.form.layer.setLayer(layer)
    dock.load_model(str(model))
    dock.form.batch.setValue(1)  # the first progress after the first tile, not after a batch of them
    return dock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--architecture", default="unet_skinny")
    args = parser.parse_args()
    os.environ["FASTUNET_GEO_ENGINE"] = "subprocess"
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="bench-dock-engine-"))
    os.environ.setdefault("FASTUNET_CACHE_DIR", str(work / "cache"))
    model = work / "model.safetensors"
    subprocess.run([str(Path(sys.executable).with_name("fastunet-geo")), "init", args.architecture,
                    "--classes", "background,building,woodland,water,road", "-o", str(model)], check=True)

    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from qgis_plugin.progress_bridge import QuietSink

    warm = open_dock(IMAGE, model)
    first_tile_seconds(warm)  # fills the ONNX cache
    warm.shutdown()  # type: ignore[attr-defined]
    warm.deleteLater()  # type: ignore[attr-defined]

    dock = open_dock(IMAGE, model)
    print(f"{args.architecture}, {IMAGE.name}, tile {dock.form.tile.value()}, "  # type: ignore[attr-defined]
          f"load average {os.getloadavg()[0]:.1f}")
    kept: list[float] = []
    for run in range(1, args.runs + 1):
        starts = dock.engine_process.starts  # type: ignore[attr-defined]
        first, total = first_tile_seconds(dock)
        stats = dock.engine_process.call("stats", {}, QuietSink())  # type: ignore[attr-defined]
        how = "started" if dock.engine_process.starts > starts else "kept"  # type: ignore[attr-defined]
        if how == "kept":
            kept.append(first)
        print(f"run {run}: first tile {first:5.2f} s, whole run {total:5.2f} s; engine process {stats['pid']} "
              f"{how}, model loads so far {stats['loads']}")
    if kept:
        print(f"median first tile with the kept process: {statistics.median(kept):.2f} s")
    dock.shutdown()  # type: ignore[attr-defined]
    dock.deleteLater()  # type: ignore[attr-defined]
    QgsApplication.processEvents()
    app.exitQgis()


if __name__ == "__main__":
    main()
