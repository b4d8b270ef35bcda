"""Child of test_qgis_load_results.py: run every algorithm as the Processing dialog does, in a fresh QGIS.

``processing.runAndLoadResults`` with every output set, in a QgsProcessingContext of our own that is then
destroyed (the dialog's path: results loaded into the project, the outputs' post-processors run, the context
deleted). Prints one JSON line of what was loaded and how it was styled; a crash shows as the exit status.
Usage: python qgis_load_results_child.py RASTER MODEL OUT_DIR
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

sys.path.append("/usr/share/qgis/python/plugins")

from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)


def layer_facts() -> list[dict[str, object]]:
    """Name, kind and renderer of each layer in the project, top of the layer tree first."""
    facts = []
    for node in QgsProject.instance().layerTreeRoot().findLayers():
        layer = node.layer()
        renderer = layer.renderer()
        facts.append({"name": layer.name(), "source": layer.source().split("|")[0],
                      "raster": isinstance(layer, QgsRasterLayer),
                      "renderer": renderer.type() if renderer is not None else None})
    return facts


def labels_layer(raster: str) -> QgsVectorLayer:
    """Three label rectangles inside ``raster`` (two building, one road), in a memory layer."""
    extent = QgsRasterLayer(raster, "r").extent()
    labels = QgsVectorLayer("Polygon?crs=EPSG:3857&field=kind:string", "labels", "memory")
    features = []
    for i, kind in enumerate(("building", "building", "road")):
        x0 = extent.xMinimum() + 10 + 40 * i
        feature = QgsFeature(labels.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, extent.yMinimum() + 20, x0 + 25,
                                                              extent.yMaximum() - 20)))
        feature["kind"] = kind
        features.append(feature)
    labels.dataProvider().addFeatures(features)
    return labels


def run_as_dialog(alg: str, params: dict[str, object], keep: bool = False) -> dict[str, object]:
    """Run and load the results in a context that is destroyed afterwards; return the results and layers."""
    import processing

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    results = processing.runAndLoadResults(f"fastunetgeo:{alg}", params, feedback=feedback, context=context)
    del context  # the dialog's context goes when the dialog is done: this deleted the post-processors twice
    gc.collect()
    QgsApplication.processEvents()
    facts = layer_facts()
    if not keep:  # keep: the next run finds this one's layers in the project
        QgsProject.instance().removeAllMapLayers()
    return {"results": {k: str(v) for k, v in results.items()}, "layers": facts}


def main() -> None:
    raster, model, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from qgis_plugin.algorithms.provider import FastUNetProvider

    provider = FastUNetProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    report = {
        "segment": run_as_dialog("segment", {
            "INPUT": raster, "MODEL": model, "DEVICE": 2, "OUTPUT": str(out / "classes.tif"),
            "OUTPUT_POLYGONS": str(out / "polygons.gpkg")}),
        "vectorize": run_as_dialog("vectorize", {
            "INPUT": str(out / "classes.tif"), "OUTPUT": str(out / "again.gpkg")}),
    }
    # outputs to temporary files, the dialog's default: named after the input raster, not "Class raster", and a
    # second run's layers get names of their own
    temporary = {"INPUT": raster, "MODEL": model, "DEVICE": 2, "OUTPUT": "TEMPORARY_OUTPUT",
                 "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"}
    report["segment_temporary"] = run_as_dialog("segment", temporary, keep=True)
    report["segment_again"] = run_as_dialog("segment", temporary)
    # a Deepness ONNX with two output heads: a class raster and polygons per head, as Deepness gives a layer per head
    deepness = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deepness-testdata"
    report["segment_two_heads"] = run_as_dialog("segment", {
        "INPUT": str(deepness / "dummy_fotomap_small.tif"),
        "MODEL": str(deepness / "models" / "two_outputs_softmax_bsx2x512x512.onnx"), "DEVICE": 2,
        "OUTPUT": str(out / "two.tif"), "OUTPUT_POLYGONS": str(out / "two.gpkg")})
    labels = labels_layer(raster)
    report["train"] = run_as_dialog("train", {
        "INPUT": raster, "LABELS": labels, "CLASS_FIELD": "kind", "CLASS_NAMES": "background,building,road",
        "ARCHITECTURE": 4, "TILE_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4, "VAL_FRACTION": 0.25, "DEVICE": 2,
        "OUTPUT_FOLDER": str(out / "run")})
    del labels
    print("REPORT " + json.dumps(report), flush=True)
    QgsApplication.processingRegistry().removeProvider(provider)
    app.exitQgis()
    print("EXITED", flush=True)


if __name__ == "__main__":
    main()
