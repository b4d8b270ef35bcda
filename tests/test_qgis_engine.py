"""The plugin's engine plumbing without a QGIS window: job round trips, error rebuilding, engine checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from fastunet_core import errors
from fastunet_core.runtime.progress import NullProgress

pytestmark = pytest.mark.qgis


def test_segment_job_round_trips_through_json() -> None:
    import json

    from qgis_plugin.jobs import AreaSpec, SegmentJob

    area = AreaSpec("polygons", polygons_wkb=(shapely.to_wkb(shapely.box(0, 0, 2, 1)),))
    job = SegmentJob(raster=Path("/a/b.tif"), model=Path("/m.safetensors"), class_output=Path("/o/c.tif"),
                     polygons_output=Path("/o/p.gpkg"), tile_size_px=256, overlap_px=None, batch_size=3,
                     device="cpu", area=area, simplify_m=0.5, min_area_m2=4.0, work_dir=Path("/tmp"))
    assert SegmentJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    extent = AreaSpec("extent", (1.0, 2.0, 3.0, 4.0))
    assert AreaSpec.from_dict(json.loads(json.dumps(extent.to_dict()))) == extent


def test_child_errors_come_back_as_the_core_classes() -> None:
    from qgis_plugin.engine_process import core_error

    err = core_error("InputRasterError", "input raster not found: x.tif")
    assert type(err) is errors.InputRasterError and str(err) == "input raster not found: x.tif"
    assert type(core_error("CancelledError", "cancelled")) is errors.CancelledError
    imp = core_error("ModuleNotFoundError", "No module named 'torch'", "torch")
    assert isinstance(imp, ImportError) and imp.name == "torch"
    other = core_error("ZeroDivisionError", "division by zero")
    assert type(other) is errors.FastUNetError and "ZeroDivisionError" in str(other)


def test_plain_python_runs_the_engine_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from qgis_plugin import engine_process

    monkeypatch.delenv("FASTUNET_GEO_ENGINE", raising=False)
    assert engine_process.host_links_geo_libraries() is False  # pytest's python: QGIS's libraries stay local
    assert engine_process.use_subprocess() is False
    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")
    assert engine_process.use_subprocess() is True
    assert Path(engine_process.child_python()).name.startswith("python")


def test_child_process_runs_a_call_and_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorize call through a real child process: progress and log relayed, result returned."""
    import numpy as np
    import rasterio

    from qgis_plugin import engine_process

    raster = tmp_path / "classes.tif"
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": rasterio.transform.from_origin(500000, 4000032, 1, 1), "nodata": 255}
    values = np.zeros((32, 32), dtype=np.uint8)
    values[4:12, 4:12] = 1
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(values, 1)

    class Sink:
        def __init__(self) -> None:
            self.percents: list[float] = []
            self.logs: list[str] = []

        def set_percent(self, p: float) -> None:
            self.percents.append(p)

        def is_cancelled(self) -> bool:
            return False

        def log(self, text: str) -> None:
            self.logs.append(text)

    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")
    sink = Sink()
    result = engine_process.run_engine("vectorize", {"raster": str(raster), "output": str(tmp_path / "v.gpkg"),
                                                     "classes": ["1"], "simplify_m": 0.0, "min_area_m2": 0.0,
                                                     "dissolve": False}, sink)
    assert result["features"] == 1 and Path(result["output"]).is_file()
    assert sink.percents[-1] == 100 and any("separate Python process" in line for line in sink.logs)
    with pytest.raises(errors.ConfigError, match="cannot tell the vector format"):
        engine_process.run_engine("vectorize", {"raster": str(raster), "output": str(tmp_path / "v.txt"),
                                                "classes": None, "simplify_m": 0.0, "min_area_m2": 0.0,
                                                "dissolve": False}, sink)


def test_missing_packages_message_says_how_to_install() -> None:
    from qgis_plugin.deps import check_engine, install_hint

    status = check_engine({"numpy": "numpy", "fastunet_no_such_module": "fastunet-no-such-package"})
    assert status.missing == ("fastunet-no-such-package",) and not status.ok
    assert "fastunet-no-such-package" in status.message() and "pip install" in status.message()
    assert check_engine().ok, check_engine().message()  # this environment has the whole engine
    assert "OSGeo4W Shell" in install_hint(["torch"], "win32")
    assert "/Applications/QGIS.app" in install_hint(["torch"], "darwin")
    linux = install_hint(["torch"], "linux")
    assert "--user" not in linux and "venv --system-site-packages" in linux and "Install the engine" in linux


def test_cancelled_predict_stops_its_reader_thread(rio_data: Path, qgis_model: Path, tmp_path: Path) -> None:
    """A cancel (the dock's Cancel) must stop the read-ahead thread before the raster is closed.

    Otherwise the thread goes on reading a closed GDAL dataset (seen: a segfault of QGIS after Cancel).
    """
    import threading

    from fastunet_core.inference.predict import PredictOptions, predict_raster

    class CancelAfterFirstBatch(NullProgress):
        def start(self, total: float, label: str) -> None: ...

        def advance(self, n: float = 1) -> None:
            self.done = True

        def is_cancelled(self) -> bool:
            return getattr(self, "done", False)

        def message(self, text: str) -> None: ...

    with pytest.raises(errors.CancelledError) as caught:
        predict_raster(rio_data / "cogeo.tif", qgis_model, tmp_path / "c.tif",
                       PredictOptions(batch_size=1, prefetch=True), CancelAfterFirstBatch())
    assert "cancelled" in str(caught.value)  # ``caught`` keeps the traceback and its frames alive here
    assert not [t for t in threading.enumerate() if t.name == "fastunet-tile-reader" and t.is_alive()]
    assert list(tmp_path.iterdir()) == []


def test_an_engine_process_deaf_to_cancel_and_exit_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stuck engine process (tests/engine_deaf_child.py ignores cancel, end of input and SIGTERM) cannot hang
    a run or QGIS's exit: it is killed a grace period after the cancel, or after shutdown's wait, and reaped."""
    import signal
    import threading
    import time

    from qgis_plugin import engine_session

    monkeypatch.setattr(engine_session, "CANCEL_GRACE_S", 1.0)

    class CancelAtFirstProgress:
        def __init__(self) -> None:
            self.percents: list[float] = []
            self.logs: list[str] = []
            self.cancel = True

        def set_percent(self, p: float) -> None:
            self.percents.append(p)

        def is_cancelled(self) -> bool:
            return self.cancel and bool(self.percents)

        def log(self, text: str) -> None:
            self.logs.append(text)

    def call_on_a_thread(session: engine_session.EngineSession, sink: CancelAtFirstProgress) -> dict[str, object]:
        box: dict[str, object] = {}

        def run() -> None:
            try:
                session.call("segment", {}, sink)
            except BaseException as exc:
                box["error"] = exc

        box["thread"] = thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return box

    sink = CancelAtFirstProgress()
    session = engine_session.EngineSession(module="engine_deaf_child")
    box = call_on_a_thread(session, sink)
    box["thread"].join(timeout=30)  # type: ignore[attr-defined]
    assert isinstance(box.get("error"), errors.CancelledError), box
    assert "engine process was stopped" in str(box["error"]) and any("no answer" in s for s in sink.logs)
    assert session.pid is None and session.starts == 1

    sink = CancelAtFirstProgress()
    sink.cancel = False  # a run that goes on; the dock closes meanwhile
    box = call_on_a_thread(session, sink)
    deadline = time.monotonic() + 30
    while not sink.percents and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = session.pid
    assert pid is not None and session.starts == 2  # the next call started a new process
    t0 = time.monotonic()
    assert session.shutdown(wait_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - t0 < 10 and not Path(f"/proc/{pid}").exists()  # killed and reaped
    box["thread"].join(timeout=30)  # type: ignore[attr-defined]
    assert isinstance(box.get("error"), errors.CancelledError), box  # the run ends as cancelled, never hangs
