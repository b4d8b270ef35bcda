"""Render the README's plugin pictures offscreen: ``docs/dock.png`` (the dock after a run) and ``docs/map.png``.

What it does, all in a headless QGIS with the plugin's own code paths:

1. weak labels for ``data/samples/cogeo.tif`` from brightness alone (snow bright, forest dark, open ground in
   between), vectorised with the Processing algorithm ``fastunetgeo:vectorize`` (small bits dropped);
2. a small model trained on them with ``fastunetgeo:train`` (a few CPU minutes at most; ``--model`` skips it);
3. the dock segments the image through its QgsTask (with vectorisation) and is grabbed to PNG;
4. the polygons, styled by class, are rendered over the image with ``QgsMapRendererParallelJob``.

The labels are rules of thumb, only there so that the picture shows a trained model's result.

Usage: env -u PROJ_DATA -u PROJ_LIB QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/qgis_screenshots.py
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "data" / "samples" / "cogeo.tif"
CLASSES = (("snow", (116, 173, 209)), ("forest", (26, 152, 80)), ("open ground", (253, 174, 97)))

log = logging.getLogger("qgis_screenshots")


def weak_labels(image: Path, out: Path) -> Path:
    """Write a class raster from brightness: snow (> 170), forest (< 75), open ground between."""
    import json

    import numpy as np
    import rasterio

    with rasterio.open(image) as src:
        brightness = src.read().astype(np.float32).mean(axis=0)
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255}
    classes = np.where(brightness > 170, 0, np.where(brightness < 75, 1, 2)).astype(np.uint8)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
        dst.update_tags(CLASSES=json.dumps([{"id": i, "name": n, "color": list(c)}
                                            for i, (n, c) in enumerate(CLASSES)]))
    return out


def train_model(work: Path, epochs: int) -> Path:
    """Vectorise the weak labels and train a small model on them with the plugin's algorithms."""
    import processing

    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fastunet_core.models.metadata import ClassInfo

    labels = processing.run("fastunetgeo:vectorize", {
        "INPUT": str(weak_labels(IMAGE, work / "weak_labels.tif")), "MIN_AREA": 40, "SIMPLIFY": 0.6,
        "OUTPUT": str(work / "weak_labels.gpkg")})["OUTPUT"]
    log.info("training %d epochs on %s ...", epochs, labels)
    result = processing.run("fastunetgeo:train", {
        "INPUT": str(IMAGE), "LABELS": labels, "CLASS_FIELD": "class_name",
        "CLASS_NAMES": ",".join(n for n, _ in CLASSES), "ARCHITECTURE": 4, "TILE_SIZE": 128, "EPOCHS": epochs,
        "BATCH_SIZE": 8, "LEARNING_RATE": 0.01, "VAL_FRACTION": 0.2, "DEVICE": 0, "FRESH": True,
        "OUTPUT_FOLDER": str(work / "run")})
    log.info("best epoch %s, validation mIoU %.3f", result["BEST_EPOCH"], result["VAL_MIOU"])
    loaded = load_checkpoint(result["CHECKPOINT"])  # give the classes the picture's colours
    meta = dataclasses.replace(loaded.meta, classes=tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(CLASSES)),
                               resolution_m=0.6)
    return save_checkpoint(work / "cogeo_demo.safetensors", loaded.torch_model(), meta, overwrite=True)


class ScriptIface:
    """The few parts of QGIS's interface the dock uses."""

    def __init__(self, canvas: Any, bar: Any, window: Any) -> None:
        self.canvas, self.bar, self.window, self.active = canvas, bar, window, None

    def mapCanvas(self) -> Any:  # noqa: N802 (QGIS's name)
        """Return the map canvas."""
        return self.canvas

    def messageBar(self) -> Any:  # noqa: N802
        """Return the message bar."""
        return self.bar

    def activeLayer(self) -> Any:  # noqa: N802
        """Return the active layer."""
        return self.active

    def mainWindow(self) -> Any:  # noqa: N802
        """Return the main window."""
        return self.window


def run_dock(model: Path, work: Path, dock_png: Path) -> tuple[Any, Any, Any]:
    """Segment the image through the dock's task and grab the dock; return it and the two new layers."""
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtWidgets import QMainWindow

    from qgis_plugin.dock import SegmentDock

    window = QMainWindow()
    canvas = QgsMapCanvas(window)
    iface = ScriptIface(canvas, QgsMessageBar(window), window)
    image = QgsRasterLayer(str(IMAGE), "cogeo")
    QgsProject.instance().addMapLayer(image)
    iface.active = image
    dock = SegmentDock(iface)
    dock.load_model(str(model))
    dock.form.simplify.setValue(1.0)
    dock.form.min_area.setValue(50.0)
    dock.form.batch.setValue(8)
    dock.form.class_output.setFilePath(str(work / "cogeo_classes.tif"))
    dock.form.polygons_output.setFilePath(str(work / "cogeo_polygons.gpkg"))
    dock.resize(430, 1010)
    dock.show()
    dock.refresh_device_info()
    task = dock.start_run()
    if task is None:
        raise SystemExit("the dock did not start a run (see the log)")
    while dock.task is not None:
        QgsApplication.processEvents()
        time.sleep(0.01)
    if task.outcome is None:
        raise SystemExit(f"the run failed: {task.error}")
    for _ in range(5):
        QgsApplication.processEvents()
    dock.grab().save(str(dock_png))
    layers = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    return dock, layers["cogeo classes"], layers["cogeo polygons"]


def render_map(polygons: Any, map_png: Path) -> None:
    """Render the class polygons, half transparent, over the image, with a legend."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsProject
    from qgis.PyQt.QtCore import QRectF, QSize, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QPainter

    image = QgsProject.instance().mapLayersByName("cogeo")[0]
    polygons.setOpacity(0.5)
    settings = QgsMapSettings()
    settings.setLayers([polygons, image])
    settings.setDestinationCrs(image.crs())
    settings.setExtent(image.extent())
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    picture = job.renderedImage()
    painter = QPainter(picture)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setFont(QFont("DejaVu Sans", 11))
    box = QRectF(12, 12, 190, 30 + 24 * len(CLASSES))
    painter.setBrush(QColor(255, 255, 255, 225))
    painter.setPen(QColor("#555555"))
    painter.drawRoundedRect(box, 4, 4)
    painter.drawText(QRectF(22, 18, 180, 22), Qt.AlignmentFlag.AlignLeft, "fastunet-geo classes")
    for i, (name, rgb) in enumerate(CLASSES):
        y = 46 + 24 * i
        painter.setBrush(QColor(*rgb))
        painter.drawRect(QRectF(22, y, 18, 14))
        painter.drawText(QRectF(48, y - 3, 150, 20), Qt.AlignmentFlag.AlignLeft, name)
    painter.end()
    picture.save(str(map_png))


def main(argv: list[str] | None = None) -> int:
    """Make both pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="use this checkpoint instead of training one")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs [12]")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "screenshots", help="scratch folder")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the PNGs go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for var in ("PROJ_DATA", "PROJ_LIB"):  # the wheels' PROJ must find its own database
        os.environ.pop(var, None)
    os.environ["GDAL_PAM_ENABLED"] = "NO"  # QGIS would leave cogeo.tif.aux.xml (statistics) in data/samples
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(REPO))
    sys.path.append("/usr/share/qgis/python/plugins")
    args.work.mkdir(parents=True, exist_ok=True)
    args.docs.mkdir(parents=True, exist_ok=True)

    from qgis.core import QgsApplication, QgsProject

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from qgis_plugin.algorithms.provider import FastUNetProvider

    provider = FastUNetProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    try:
        model = args.model or train_model(args.work, args.epochs)
        dock, classes, polygons = run_dock(model, args.work, args.docs / "dock.png")
        render_map(polygons, args.docs / "map.png")
        log.info("wrote %s and %s", args.docs / "dock.png", args.docs / "map.png")
        dock.close()
        del dock, classes, polygons
    finally:
        QgsProject.instance().removeAllMapLayers()  # no layer may outlive exitQgis (it would crash at exit)
        QgsApplication.processingRegistry().removeProvider(provider)
        QgsApplication.processEvents()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
