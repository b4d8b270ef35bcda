"""The Processing provider in a real, headless QGIS: processing.run on real rasters, and qgis_process."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_helpers import read_polygons
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parent.parent
SEGMENT_OUTPUTS = {"OUTPUT", "OUTPUT_POLYGONS", "DEVICE", "TILES", "FEATURES"}


@pytest.fixture(scope="module")
def provider(qgis_processing: None) -> object:
    """The fastunetgeo provider, registered for this module's tests."""
    from qgis_plugin.algorithms.provider import FastUNetProvider

    prov = FastUNetProvider()
    assert QgsApplication.processingRegistry().addProvider(prov)
    yield prov
    QgsApplication.processingRegistry().removeProvider(prov)


def run(alg: str, params: dict[str, object], feedback: QgsProcessingFeedback | None = None) -> dict[str, object]:
    import processing

    return processing.run(f"fastunetgeo:{alg}", params, feedback=feedback)


class RecordingFeedback(QgsProcessingFeedback):
    """The algorithm's log as the Processing dialog shows it: each line appended to a QTextEdit as HTML.

    The dialog (QgsProcessingAlgorithmDialogBase::setInfo / pushConsoleInfo) appends the escaped text in a
    ``<span>`` (console lines in a ``<code>``), newlines as ``<br>``: runs of spaces collapse in both.
    """

    def __init__(self) -> None:
        super().__init__()
        from qgis.PyQt.QtWidgets import QTextEdit

        self.log = QTextEdit()

    def _show(self, text: str, tag: str) -> None:
        self.log.append(f"<{tag}>{html.escape(text, quote=False).replace(chr(10), '<br>')}</{tag}>")

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self._show(info, "span")
        super().pushInfo(info)

    def pushConsoleInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self._show(info, "code")
        super().pushConsoleInfo(info)

    def shown(self) -> list[str]:
        """Return the lines the dialog's log shows."""
        return self.log.toPlainText().replace("\u2028", "\n").splitlines()


def test_provider_lists_three_algorithms(provider: object) -> None:
    ids = sorted(a.id() for a in QgsApplication.processingRegistry().providerById("fastunetgeo").algorithms())
    assert ids == ["fastunetgeo:segment", "fastunetgeo:train", "fastunetgeo:vectorize"]


def test_segment_cogeo_gives_raster_and_polygons(provider: object, rio_data: Path, qgis_model: Path) -> None:
    cogeo = rio_data / "cogeo.tif"
    result = run("segment", {"INPUT": str(cogeo), "MODEL": str(qgis_model), "DEVICE": 0,
                             "OUTPUT": "TEMPORARY_OUTPUT", "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
    assert set(result) == SEGMENT_OUTPUTS
    assert result["TILES"] == 81  # 1024 px, tile 128, overlap 16: 9 x 9 tiles
    assert str(result["DEVICE"]).startswith("cpu (no CUDA: ")  # auto says why the GPU is not used
    assert Path(str(result["OUTPUT"])).suffix == ".tif" and Path(str(result["OUTPUT_POLYGONS"])).suffix == ".gpkg"

    source = QgsRasterLayer(str(cogeo), "cogeo")
    classes = QgsRasterLayer(str(result["OUTPUT"]), "classes")
    assert classes.isValid()
    assert classes.crs() == source.crs() and classes.crs().authid() == "EPSG:3857"
    assert (classes.width(), classes.height()) == (1024, 1024)
    assert classes.extent().toString(6) == source.extent().toString(6)
    assert classes.bandCount() == 1 and classes.dataProvider().sourceNoDataValue(1) == 255

    polygons = QgsVectorLayer(str(result["OUTPUT_POLYGONS"]), "polygons", "ogr")
    assert polygons.isValid() and polygons.crs() == source.crs()
    assert {"class_id", "class_name", "area_m2", "perimeter_m"} <= set(polygons.fields().names())
    features = list(polygons.getFeatures())
    assert len(features) == result["FEATURES"] >= 1
    assert {f["class_name"] for f in features} <= {"building", "water", "woodland"}
    assert all(f["area_m2"] > 0 for f in features)
    assert not Path(str(result["OUTPUT_POLYGONS"])).with_suffix(".qml").exists()  # the GeoPackage's style is inside
    assert isinstance(polygons.renderer(), QgsCategorizedSymbolRenderer)
    del source, classes, polygons


def test_an_extent_off_the_raster_is_refused_before_the_engine_starts(
        provider: object, rio_data: Path, qgis_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FINDINGS5 F16: pure geometry, found before the engine process is started and the model loaded."""
    from qgis_plugin import engine_process

    started: list[object] = []
    monkeypatch.setattr(engine_process, "run_segment", lambda *args: started.append(args))
    with rasterio.open(rio_data / "cogeo.tif") as src:
        right, top = src.bounds.right, src.bounds.top
    far = f"{right + 1000},{right + 2000},{top + 1000},{top + 2000} [EPSG:3857]"
    with pytest.raises(QgsProcessingException, match=r"the processed area does not overlap the layer 'cogeo'"):
        run("segment", {"INPUT": str(rio_data / "cogeo.tif"), "MODEL": str(qgis_model),
                        "OUTPUT": str(tmp_path / "o.tif"), "EXTENT": far})
    assert started == [] and list(tmp_path.iterdir()) == []


def test_the_dock_refuses_a_map_extent_off_the_raster_when_planning(provider: object, rio_data: Path,
                                                                    qgis_model: Path) -> None:
    """The dock's plan (made before its task starts the engine) checks the same box."""
    from fastunet_core.errors import ConfigError
    from qgis_plugin.dock_plan import DockChoices, plan_run

    layer = QgsRasterLayer(str(rio_data / "cogeo.tif"), "cogeo")
    ext = layer.extent()
    choices = DockChoices(layer, str(qgis_model), area="extent", map_crs=layer.crs(),
                          map_extent=QgsRectangle(ext.xMaximum() + 1000, ext.yMaximum() + 1000,
                                                  ext.xMaximum() + 2000, ext.yMaximum() + 2000))
    with pytest.raises(ConfigError, match=r"the processed area does not overlap the layer 'cogeo'"):
        plan_run(choices)


def test_segment_extent_and_mask_limit_the_area(provider: object, rio_data: Path, qgis_model: Path,
                                                tmp_path: Path) -> None:
    cogeo = rio_data / "cogeo.tif"
    with rasterio.open(cogeo) as src:
        left, top, px = src.bounds.left, src.bounds.top, src.transform.a
    xmin, xmax, ymin, ymax = left + 10 * px, left + 210 * px, top - 150 * px, top - 20 * px
    out = tmp_path / "extent.tif"
    result = run("segment", {"INPUT": str(cogeo), "MODEL": str(qgis_model), "OUTPUT": str(out),
                             "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:3857]"})
    assert set(result) == SEGMENT_OUTPUTS
    assert result["OUTPUT_POLYGONS"] is None and result["FEATURES"] == 0
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (200, 130)
        assert dst.transform.c == pytest.approx(xmin) and dst.transform.f == pytest.approx(ymax)

    # a polygon in another CRS: pixels outside it are nodata
    mask_layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "mask", "memory")
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    circle = QgsGeometry.fromPointXY(QgsPointXY((xmin + xmax) / 2, (ymin + ymax) / 2)).buffer(50 * px, 32)
    circle.transform(to_wgs84)
    feature = QgsFeature()
    feature.setGeometry(circle)
    mask_layer.dataProvider().addFeatures([feature])
    masked = tmp_path / "masked.tif"
    run("segment", {"INPUT": str(cogeo), "MODEL": str(qgis_model), "OUTPUT": str(masked), "MASK": mask_layer})
    with rasterio.open(masked) as dst:
        values = dst.read(1)
        assert dst.width == pytest.approx(100, abs=2) and dst.height == pytest.approx(100, abs=2)
        outside = values == 255
        assert 0.15 < outside.mean() < 0.3  # the corners of the circle's box: 1 - pi/4 = 0.21
        assert outside[0, 0] and outside[-1, -1] and not outside[dst.height // 2, dst.width // 2]
    del mask_layer


def _class_raster(path: Path, crs: str = "EPSG:32633") -> Path:
    """A 64 x 64 class raster at 1 m: two buildings (id 1) and a water body (id 2) on background (0)."""
    values = np.zeros((64, 64), dtype=np.uint8)
    values[5:15, 5:20] = 1
    values[30:40, 40:44] = 1  # 40 m2: dropped by MIN_AREA 50
    values[50:60, 10:60] = 2
    tags = json.dumps([{"id": 0, "name": "background", "color": [0, 0, 0]},
                       {"id": 1, "name": "building", "color": [227, 26, 28]},
                       {"id": 2, "name": "water", "color": [31, 120, 180]}])
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8", "crs": crs,
               "transform": rasterio.transform.from_origin(500000, 4000064, 1, 1), "nodata": 255}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
        dst.update_tags(CLASSES=tags)
    return path


def test_vectorize_class_raster(provider: object, tmp_path: Path) -> None:
    raster = _class_raster(tmp_path / "classes.tif")
    out = tmp_path / "buildings.shp"
    result = run("vectorize", {"INPUT": str(raster), "CLASSES": "building", "MIN_AREA": 50, "OUTPUT": str(out)})
    assert result == {"OUTPUT": str(out), "FEATURES": 1}
    layer = QgsVectorLayer(str(out), "b", "ogr")
    [feature] = list(layer.getFeatures())
    assert feature["class_name"] == "building" and feature["class_id"] == 1
    assert feature["area_m2"] == pytest.approx(150)
    assert out.with_suffix(".qml").is_file()
    del layer


def test_vectorize_defaults_are_the_docks(provider: object, tmp_path: Path) -> None:
    """Vectorize class raster, left at its defaults, drops single-pixel speckle as the dock and Segment raster do."""
    from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster

    raster = _class_raster(tmp_path / "classes.tif")
    with rasterio.open(raster, "r+") as dst:
        values = dst.read(1)
        values[22, 60] = 1  # one pixel (1 m²) of building on its own
        dst.write(values, 1)
    out = tmp_path / "defaults.gpkg"
    result = run("vectorize", {"INPUT": str(raster), "CLASSES": "building", "OUTPUT": str(out)})
    assert result["FEATURES"] == 2  # the two buildings (150 m², 40 m²), not the lone pixel
    core = vectorize_raster(raster, tmp_path / "core.gpkg", VectorizeOptions(classes=("building",), simplify_m=1.0,
                                                                             min_area_m2=2.0))  # one / two pixels
    ours, theirs = read_polygons(out), read_polygons(tmp_path / "core.gpkg")
    assert sorted(ours["area_m2"]) == pytest.approx(sorted(theirs["area_m2"])) == [40, 150]
    assert sorted(g.wkt for g in ours.geometry) == sorted(g.wkt for g in theirs.geometry)
    assert core.features == 2


def _labels(raster: Path) -> QgsVectorLayer:
    with rasterio.open(raster) as src:
        b = src.bounds
    labels = QgsVectorLayer("Polygon?crs=EPSG:3857&field=kind:string", "labels", "memory")
    feats = []
    for i, kind in enumerate(("building", "building", "road")):
        x0 = b.left + 10 + 40 * i
        feature = QgsFeature(labels.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, b.bottom + 20, x0 + 25, b.top - 20)))
        feature["kind"] = kind
        feats.append(feature)
    labels.dataProvider().addFeatures(feats)
    return labels


def _train_params(raster: Path, labels: QgsVectorLayer, folder: Path) -> dict[str, object]:
    return {"INPUT": str(raster), "LABELS": labels, "CLASS_FIELD": "kind", "CLASS_NAMES": "background,building,road",
            "ARCHITECTURE": 4, "TILE_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4, "VAL_FRACTION": 0.25, "DEVICE": 2,
            "OUTPUT_FOLDER": str(folder)}


def test_train_from_raster_and_polygons(provider: object, tmp_path: Path, small_raster: Path) -> None:
    labels = _labels(small_raster)
    folder = tmp_path / "run"
    feedback = RecordingFeedback()
    result = run("train", _train_params(small_raster, labels, folder), feedback)
    assert set(result) == {"OUTPUT_FOLDER", "CHECKPOINT", "BEST_EPOCH", "VAL_MIOU"}
    # the per-class figures stay readable where spaces cannot align columns: one line per class, named
    shown = feedback.shown()
    for name in ("background", "building", "road"):
        assert any(re.fullmatch(rf"{name}: IoU (-|\d+\.\d\d %), paper IoU (-|\d+\.\d\d %)", line)
                   for line in shown), shown
    assert any(line.startswith("mIoU ") and "pixel accuracy " in line for line in shown), shown
    assert result["OUTPUT_FOLDER"] == str(folder) and result["BEST_EPOCH"] == 1
    assert result["CHECKPOINT"] == str(folder / "best.safetensors")
    from fastunet_core.models.checkpoint import read_metadata

    meta = read_metadata(folder / "best.safetensors")
    assert [c.name for c in meta.classes] == ["background", "building", "road"]
    assert meta.architecture == "unet_tiny" and meta.tile_size_px == 64
    del labels


def test_training_failures_name_the_dialogs_fields(provider: object, tmp_path: Path, small_raster: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory and divergence say which field to lower as the dialog names it, never a config key."""
    import torch

    from fastunet_core.models.unet import UNet

    labels = _labels(small_raster)
    forward = UNet.forward

    def out_of_memory(self: UNet, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (stand-in)")

    monkeypatch.setattr(UNet, "forward", out_of_memory)
    with pytest.raises(QgsProcessingException) as oom:
        run("train", _train_params(small_raster, labels, tmp_path / "oom"))
    assert "4 at a time" in str(oom.value) and "; try 'Batch size' 2, or 'Tile size' 32" in str(oom.value), oom.value
    assert "optim." not in str(oom.value) and "data." not in str(oom.value) and "accumulation" not in str(oom.value)

    def diverging(self: UNet, x: torch.Tensor) -> torch.Tensor:
        return forward(self, x) * float("nan")

    monkeypatch.setattr(UNet, "forward", diverging)
    with pytest.raises(QgsProcessingException) as nan:
        run("train", _train_params(small_raster, labels, tmp_path / "nan"))
    assert "training diverged" in str(nan.value), nan.value
    assert "Lower the learning rate (now 0.001), e.g. 'Learning rate' 0.0001 and" in str(nan.value), nan.value
    assert "optim." not in str(nan.value)
    del labels


def test_train_architectures_are_registered() -> None:
    from fastunet_core.models.registry import REGISTRY
    from qgis_plugin.algorithms.train import ARCHITECTURES

    assert set(ARCHITECTURES) <= set(REGISTRY)


def test_engine_errors_become_plain_processing_errors(provider: object, small_raster: Path, tmp_path: Path) -> None:
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    out = tmp_path / "out.tif"
    with pytest.raises(QgsProcessingException, match="not a fastunet-geo checkpoint"):
        run("segment", {"INPUT": str(small_raster), "MODEL": str(not_a_model), "OUTPUT": str(out)})
    assert sorted(tmp_path.iterdir()) == [not_a_model]  # nothing written


def test_missing_engine_package_is_named(provider: object, small_raster: Path, qgis_model: Path,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qgis_plugin.algorithms import segment

    monkeypatch.setitem(segment.SEGMENT_MODULES, "fastunet_no_such_module", "fastunet-no-such-package")
    with pytest.raises(QgsProcessingException, match=r"fastunet-no-such-package.*pip install"):
        run("segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model), "OUTPUT": str(tmp_path / "o.tif")})
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_qgis_process_runs_segment(tmp_path: Path, small_raster: Path, qgis_model: Path) -> None:
    """The standalone command line runs the packaged plugin (via QGIS_PLUGINPATH, enabled in a temp profile)."""
    qgis_process = shutil.which("qgis_process")
    if qgis_process is None:
        pytest.skip("qgis_process is not installed")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from package_plugin import build_plugin_zip
    finally:
        sys.path.remove(str(REPO / "scripts"))
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(build_plugin_zip(tmp_path / "fastunet_geo.zip")) as zf:
        zf.extractall(plugins)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir() and "venv" in p)
    env = {**os.environ, "QGIS_PLUGINPATH": str(plugins), "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
           "PYTHONPATH": site, "QT_QPA_PLATFORM": "offscreen",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("PROJ_DATA", None)
    env.pop("PROJ_LIB", None)
    enable = subprocess.run([qgis_process, "plugins", "enable", "fastunet_geo"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert enable.returncode == 0, enable.stderr[-2000:]
    out = tmp_path / "classes.tif"
    proc = subprocess.run(
        [qgis_process, "--json", "run", "fastunetgeo:segment", "--", f"INPUT={small_raster}", f"MODEL={qgis_model}",
         "DEVICE=2", f"OUTPUT={out}", f"OUTPUT_POLYGONS={tmp_path / 'polygons.gpkg'}"],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert "engine: a separate Python process" in json.dumps(report)  # qgis_process links GDAL/GEOS itself
    results = report["results"]
    assert results["OUTPUT"] == str(out) and results["TILES"] == 6  # 256 x 200 px: 3 x 2 tiles
    assert results["DEVICE"] == "cpu (cpu requested)"
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (256, 200)
    assert Path(results["OUTPUT_POLYGONS"]).is_file()


def test_segment_then_vectorize_in_a_model(provider: object, small_raster: Path, qgis_model: Path,
                                           tmp_path: Path) -> None:
    """The algorithms chain in a Graphical Modeler model: segment's class raster feeds vectorize."""
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("segment and vectorize", "tests")
    for name, param in (("ortho", QgsProcessingParameterRasterLayer("ortho", "Ortho")),
                        ("weights", QgsProcessingParameterFile("weights", "Model"))):
        model.addModelParameter(param, QgsProcessingModelParameter(name))
    segment = QgsProcessingModelChildAlgorithm("fastunetgeo:segment")
    segment.setChildId("segment")
    segment.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("ortho")])
    segment.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromModelParameter("weights")])
    model.addChildAlgorithm(segment)
    vectorize = QgsProcessingModelChildAlgorithm("fastunetgeo:vectorize")
    vectorize.setChildId("vectorize")
    vectorize.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("segment",
                                                                                                   "OUTPUT")])
    result = QgsProcessingModelOutput("polygons")
    result.setChildOutputName("OUTPUT")
    vectorize.setModelOutputs({"polygons": result})
    model.addChildAlgorithm(vectorize)
    out = tmp_path / "polygons.gpkg"
    ok, message = model.checkParameterValues({"ortho": str(small_raster), "weights": str(qgis_model),
                                              "vectorize:polygons": str(out)}, QgsProcessingContext())
    assert ok, message
    outputs, ok = model.run({"ortho": str(small_raster), "weights": str(qgis_model), "vectorize:polygons": str(out)},
                            QgsProcessingContext(), QgsProcessingFeedback())
    assert ok and outputs["vectorize:polygons"] == str(out)
    layer = QgsVectorLayer(str(out), "p", "ogr")
    assert layer.featureCount() >= 1 and "class_name" in layer.fields().names()
    del layer


def test_cancel_through_feedback_leaves_no_output(provider: object, rio_data: Path, qgis_model: Path,
                                                  tmp_path: Path) -> None:
    from qgis.core import QgsProcessingFeedback

    class CancelAfterAFewTiles(QgsProcessingFeedback):
        def setProgress(self, progress: float) -> None:  # noqa: N802 (Qt's name)
            super().setProgress(progress)
            if progress > 10:
                self.cancel()

    import processing

    feedback = CancelAfterAFewTiles()
    with pytest.raises(QgsProcessingException, match="Cancelled; no output was written"):
        processing.run("fastunetgeo:segment", {"INPUT": str(rio_data / "cogeo.tif"), "MODEL": str(qgis_model),
                                               "BATCH_SIZE": 1, "OUTPUT": str(tmp_path / "c.tif"),
                                               "OUTPUT_POLYGONS": str(tmp_path / "p.gpkg")}, feedback=feedback)
    assert list(tmp_path.iterdir()) == []
    assert feedback.progress() < 60


def test_segment_runs_a_deepness_onnx_model(provider: object, shared_data: Path, tmp_path: Path) -> None:
    """A Deepness-format ONNX file is a model like any other in Processing (same core path as the CLI)."""
    fotomap = shared_data / "deepness-testdata" / "dummy_fotomap_small.tif"
    model = shared_data / "deepness-testdata" / "models" / "one_output_sigmoid_red_detector.onnx"
    out = tmp_path / "red.tif"
    result = run("segment", {"INPUT": str(fotomap), "MODEL": str(model), "DEVICE": 0, "OUTPUT": str(out)})
    assert Path(str(result["OUTPUT"])) == out
    with rasterio.open(fotomap) as src:
        red = src.read(1).astype(np.float32) / 255 >= 0.5  # the model is sigmoid(R/255 - 0.5) >= 0.5
    with rasterio.open(out) as dst:
        ours = dst.read(1)
    assert np.mean((ours == 1) == red) > 0.99


def test_band_mismatch_is_refused_before_the_engine_and_bands_choose(provider: object, small_raster: Path,
                                                                     qgis_model: Path, tmp_path: Path) -> None:
    single = tmp_path / "red.tif"
    with rasterio.open(small_raster) as src, rasterio.open(single, "w", **dict(src.profile, count=1)) as dst:
        dst.write(src.read(1), 1)
    out = tmp_path / "classes.tif"
    with pytest.raises(QgsProcessingException) as err:
        run("segment", {"INPUT": str(single), "MODEL": str(qgis_model), "DEVICE": 2, "OUTPUT": str(out)})
    assert "the layer 'red' has 1 band(s) but the model needs 3" in str(err.value) and "--" not in str(err.value)
    assert not out.exists()
    result = run("segment", {"INPUT": str(single), "MODEL": str(qgis_model), "DEVICE": 2, "BANDS": [1, 1, 1],
                             "OUTPUT": str(out), "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
    assert result["OUTPUT"] == str(out) and out.is_file()


def test_default_minimum_area_drops_single_pixel_speckle(provider: object, small_raster: Path, qgis_model: Path,
                                                         tmp_path: Path) -> None:

    from fastunet_core.polygons.measure import Measurer

    with rasterio.open(small_raster) as src:
        pixel_m2 = Measurer.for_raster(src.crs.to_wkt(), src.transform, src.width, src.height).pixel_size_m ** 2
    exact = run("segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model), "DEVICE": 2, "MIN_AREA": 0,
                            "SIMPLIFY": 0, "OUTPUT": str(tmp_path / "a.tif"),
                            "OUTPUT_POLYGONS": str(tmp_path / "a.gpkg")})
    default = run("segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model), "DEVICE": 2,
                              "OUTPUT": str(tmp_path / "b.tif"), "OUTPUT_POLYGONS": str(tmp_path / "b.gpkg")})
    speckle = read_polygons(exact["OUTPUT_POLYGONS"])
    kept = read_polygons(default["OUTPUT_POLYGONS"])
    assert (speckle["area_m2"] < 1.5 * pixel_m2).sum() > 0  # without a minimum: single-pixel polygons
    assert len(kept) < len(speckle)
    assert kept["area_m2"].min() >= 2 * pixel_m2 * 0.999  # the default: nothing under two pixels


def test_segment_runs_at_the_model_resolution(provider: object, shared_data: Path, tmp_path: Path) -> None:
    """Run resolution and output grid as Processing parameters: Deepness's 3 cm model on its 2 cm orthophoto."""
    from click.testing import CliRunner

    from fastunet_core.cli import cli

    fotomap = shared_data / "deepness-testdata" / "dummy_fotomap_small.tif"
    model = tmp_path / "dummy_3cm.onnx"  # Deepness's dummy model, told once that it works at 3 cm
    source = shared_data / "deepness-testdata" / "models" / "dummy_model.onnx"
    result = CliRunner().invoke(cli, ["init", "--from", str(source), "--resolution-m", "0.03", "-o", str(model)])
    assert result.exit_code == 0, result.stderr
    for grid, size in ((0, (1243, 841)), (1, (829, 561))):
        out = tmp_path / f"c{grid}.tif"
        run("segment", {"INPUT": str(fotomap), "MODEL": str(model), "DEVICE": 0, "OUTPUT": str(out),
                        "RUN_RESOLUTION": "auto", "OUTPUT_GRID": grid})
        with rasterio.open(out) as dst:
            assert (dst.width, dst.height) == size
    out = tmp_path / "native.tif"
    run("segment", {"INPUT": str(fotomap), "MODEL": str(model), "DEVICE": 0, "OUTPUT": str(out),
                    "RUN_RESOLUTION": "native", "OUTPUT_GRID": 1})
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (1243, 841)
    with pytest.raises(QgsProcessingException, match="'Resolution' takes auto, native or metres"):
        run("segment", {"INPUT": str(fotomap), "MODEL": str(model), "DEVICE": 0, "OUTPUT": str(tmp_path / "x.tif"),
                        "RUN_RESOLUTION": "fine"})


def test_segment_batch_size_defaults_to_the_engines_default_for_the_device(provider: object, small_raster: Path,
                                                                          qgis_model: Path) -> None:
    """BATCH_SIZE left alone (0) is the core's default for the device (1 on a CPU, 4 on CUDA), as predict's."""
    from qgis.core import QgsProcessingContext

    from qgis_plugin.algorithms.segment_inputs import segment_job

    alg = QgsApplication.processingRegistry().algorithmById("fastunetgeo:segment")
    assert alg.parameterDefinition("BATCH_SIZE").defaultValue() == 0
    context = QgsProcessingContext()
    params: dict[str, object] = {"INPUT": str(small_raster), "MODEL": str(qgis_model), "OUTPUT": "TEMPORARY_OUTPUT"}
    assert segment_job(alg, params, context)[0].batch_size is None  # the core picks by device
    assert segment_job(alg, {**params, "BATCH_SIZE": 3}, context)[0].batch_size == 3
