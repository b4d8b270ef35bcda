"""What a QGIS user reads from the dock and Processing: the controls' names, never a command-line flag."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsRasterLayer
from qgis_helpers import wait_for

pytestmark = pytest.mark.qgis

FLAG = re.compile(r"(?<![\w-])--[a-z]")


class Recorder(QgsProcessingFeedback):
    """A Processing feedback that keeps every line the algorithm's log shows."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802 (Qt's name)
        self.lines.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.lines.append(warning)
        super().pushWarning(warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        self.lines.append(error)
        super().reportError(error, fatalError)


@pytest.fixture(scope="module")
def provider(qgis_processing: None) -> Iterator[object]:
    from qgis_plugin.algorithms.provider import FastUNetProvider

    prov = FastUNetProvider()
    assert QgsApplication.processingRegistry().addProvider(prov)
    yield prov
    QgsApplication.processingRegistry().removeProvider(prov)


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with native bf16, so that a model without a recorded bf16 agreement gets the note about it."""
    from fastunet_core.inference import precision
    from fastunet_core.runtime.cpu import Bf16Support

    monkeypatch.setattr(precision, "bf16_support", lambda: Bf16Support(True, False))


def _red_detector(shared_data: Path) -> tuple[Path, Path]:
    """Deepness's red detector (no resolution, no class names recorded) and its orthophoto."""
    deepness = shared_data / "deepness-testdata"
    return deepness / "models" / "one_output_sigmoid_red_detector.onnx", deepness / "dummy_fotomap_small.tif"


def test_processing_log_and_errors_name_no_flag(provider: object, shared_data: Path, qgis_model: Path,
                                                small_raster: Path, native_bf16: None, tmp_path: Path) -> None:
    import processing

    model, fotomap = _red_detector(shared_data)
    onnx = Recorder()
    processing.run("fastunetgeo:segment", {"INPUT": str(fotomap), "MODEL": str(model), "OUTPUT":
                                           str(tmp_path / "red.tif")}, feedback=onnx)
    text = "\n".join(onnx.lines)
    assert "no model resolution (the raster is used at its own)" in text  # the hint left out, the fact kept
    assert sum(line.startswith("resolution: ") for line in onnx.lines) == 1, text
    torch_run = Recorder()
    processing.run("fastunetgeo:segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model), "OUTPUT":
                                           str(tmp_path / "c.tif")}, feedback=torch_run)
    text += "\n" + "\n".join(torch_run.lines)
    assert "no recorded bf16 agreement" in text
    with pytest.raises(QgsProcessingException) as err:
        processing.run("fastunetgeo:segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model), "OUTPUT":
                                               str(tmp_path / "x.tif"), "RUN_RESOLUTION": "fine"})
    assert "'Resolution' takes auto, native or metres" in str(err.value)
    text += "\n" + str(err.value)
    assert not FLAG.search(text), text


class ProgressRecorder(Recorder):
    """A Recorder that also keeps where the progress bar was set, among the log lines."""

    def setProgress(self, progress: float) -> None:  # noqa: N802 (Qt's name)
        self.lines.append(f"progress {progress:.0f}")
        super().setProgress(progress)


def test_processing_logs_the_inputs_warnings_once_before_the_tiles(provider: object, qgis_model: Path,
                                                                  tmp_path: Path) -> None:
    """16-bit pixels into an 8-bit model: the log says so before the progress moves, and not again at the end."""
    import numpy as np
    import processing
    import rasterio
    from affine import Affine

    raster = tmp_path / "u16.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=96, height=80, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 6000000)) as dst:
        dst.write(np.random.default_rng(1).integers(0, 4000, (3, 80, 96)).astype("uint16"))
    feedback = ProgressRecorder()
    processing.run("fastunetgeo:segment", {"INPUT": str(raster), "MODEL": str(qgis_model), "OUTPUT":
                                           str(tmp_path / "c.tif")}, feedback=feedback)
    warned = [i for i, line in enumerate(feedback.lines) if line.startswith("warning: ")]
    text = "\n".join(feedback.lines)
    assert len(warned) == 2 and "u16.tif is uint16" in feedback.lines[warned[0]], text
    assert "lie outside the value range" in feedback.lines[warned[1]], text
    assert warned[-1] < next(i for i, line in enumerate(feedback.lines) if line.startswith("progress ")), text


def test_dock_log_and_messages_name_no_flag(qgis_iface: object, qgis_new_project: QgsProject, shared_data: Path,
                                            native_bf16: None, tmp_path: Path) -> None:
    from qgis_plugin.dock import SegmentDock

    model, fotomap = _red_detector(shared_data)
    dock = SegmentDock(qgis_iface)
    try:
        layer = QgsRasterLayer(str(fotomap), "fotomap")
        QgsProject.instance().addMapLayer(layer)
        dock.form.layer.setLayer(layer)
        dock.form.model_file.setFilePath(str(model))
        dock.form.vectorize.setChecked(False)
        dock.form.class_output.setFilePath(str(tmp_path / "red.tif"))
        task = dock.start_run()
        assert task is not None
        wait_for(lambda: dock.task is None)
        assert task.outcome is not None, task.error
        dock.form.run_resolution.setCurrentText("fine")
        assert dock.start_run() is None  # refused before the engine, in the message bar
        log = dock.form.log.toPlainText()
        bar = qgis_iface.messageBar()  # type: ignore[attr-defined]
        shown = log + "\n" + "\n".join(m for level in bar.messages for m in bar.get_messages(level))
        assert "no model resolution (the raster is used at its own)" in log
        assert log.count("resolution: ") == 1, log
        assert "'Resolution' takes auto" in shown
        assert not FLAG.search(shown), shown
    finally:
        QgsProject.instance().removeAllMapLayers()
        dock.deleteLater()
        QgsApplication.processEvents()


def test_processing_refuses_a_raster_output_it_would_not_write_as_named(provider: object, qgis_model: Path,
                                                                         small_raster: Path, tmp_path: Path) -> None:
    """An .img output would hold a GeoTIFF under an ERDAS name: refused before the model loads, as in the CLI."""
    import processing

    out = tmp_path / "classes.img"
    with pytest.raises(QgsProcessingException) as err:
        processing.run("fastunetgeo:segment", {"INPUT": str(small_raster), "MODEL": str(qgis_model),
                                               "OUTPUT": str(out)})
    assert str(err.value) == (f"class raster {out} ends in '.img', but it is written as a GeoTIFF: name it "
                              "classes.tif")
    assert list(tmp_path.iterdir()) == []


def test_the_install_text_cites_what_the_readme_has() -> None:
    """The engine note cites a README section and part that exist, and in the dock points at the button below."""
    from qgis_plugin.deps import README_SECTION, EngineStatus

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split(f"\n### {README_SECTION}\n", 1)
    assert len(section) == 2, f"README has no heading '### {README_SECTION}'"
    assert "\n**By hand**" in section[1].split("\n### ", 1)[0]
    in_dock = EngineStatus(("torch",)).message(in_dock=True)
    assert f"see the README's section '{README_SECTION}'" in in_dock
    assert "Press 'Install the engine' below" in in_dock and "fastunet-geo dock" not in in_dock
    assert f"README's section '{README_SECTION}' shows under 'By hand'" in EngineStatus(("torch",)).message()
    from qgis_plugin.installer import MARKER

    marker = re.search(r"> \S+/(\S+\.json)", section[1])  # the file the manual steps write last
    assert marker and marker.group(1) == MARKER  # the one the plugin looks for


def test_a_message_starting_with_a_name_keeps_its_spelling() -> None:
    """User data (layer and file names) is never re-cased, even a name that looks like a word."""
    from qgis_plugin.words import sentence

    assert sentence("u16_4b_classes.tif holds no polygon of the selected classes") == \
        "u16_4b_classes.tif holds no polygon of the selected classes"
    assert sentence("/data/ortho.tif: no such file") == "/data/ortho.tif: no such file"
    assert sentence("the layer 'atlanta' has 1 band(s) ") == "The layer 'atlanta' has 1 band(s)"
    assert sentence("input raster not found: x.tif") == "Input raster not found: x.tif"
    assert sentence("cancelled; nothing was written") == "Cancelled; nothing was written"
    assert sentence("'ortho' is not valid") == "'ortho' is not valid"


def test_the_value_range_warning_speaks_qgis(tmp_path: Path, make_checkpoint: object) -> None:
    """16-bit pixels into an 8-bit model: the warning names no training key and no GDAL command in QGIS."""
    import warnings

    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from fastunet_core.inference.predict import predict_raster
    from qgis_plugin.words import in_qgis_words

    raster = tmp_path / "u16_4b.tif"
    values = np.random.default_rng(0).uniform(0, 10000, (3, 64, 64)).astype("uint16")
    with rasterio.open(raster, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 0.5, 0.5)) as dst:
        dst.write(values)
    model = make_checkpoint(dtype="uint8", tile=32, overlap=0)  # type: ignore[operator]
    said = {}
    for words, out in (("cli", "c.tif"), ("qgis", "q.tif")):
        with warnings.catch_warnings(record=True), (in_qgis_words() if words == "qgis" else _nothing()):
            said[words] = [w for w in predict_raster(raster, model, tmp_path / out).warnings if "value range" in w]
    [cli], [qgis] = said["cli"], said["qgis"]
    assert "input.value_range in training" in cli and "gdal_translate -scale" in cli
    assert "input.value_range" not in qgis and "gdal_translate" not in qgis and not FLAG.search(qgis)
    assert qgis.endswith("(the model's input value range) or rescale the raster (e.g. Raster > Conversion > "
                         "Translate with -scale among its additional parameters)")


def _nothing() -> Iterator[None]:
    import contextlib

    return contextlib.nullcontext()  # type: ignore[return-value]


def test_no_plugin_message_starts_with_a_bare_layer_name() -> None:
    """A message starting with a layer's name would be re-cased by :func:`sentence` (``atlanta`` -> ``Atlanta``):
    every message of the plugin names a layer as ``the layer '<name>'``."""
    import re

    plugin = Path(__file__).resolve().parent.parent / "qgis_plugin"
    bare = re.compile(r"""Error\(f["']\{[^}]*name\(\)\}""")
    found = [f"{p.name}: {m.group(0)}" for p in sorted(plugin.rglob("*.py")) for m in bare.finditer(p.read_text())]
    assert found == []
