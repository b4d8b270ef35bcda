"""The progress channel: the device said once, the current file as a status, never as prefixed text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from make_test_data import GeneratedRaster

from fastunet_core.inference.batch import run_batch
from fastunet_core.inference.predict import PredictOptions
from fastunet_core.runtime.progress import NullProgress


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def message(self, text: str) -> None:
        self.calls.append(("message", text))

    def status(self, text: str) -> None:
        self.calls.append(("status", text))

    def device(self, text: str) -> None:
        self.calls.append(("device", text))


def test_batch_says_its_device_once_and_each_file_as_a_status(
        generated_rasters: dict[str, GeneratedRaster], make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    rasters = [generated_rasters[n].path for n in ("utm_nodata", "alpha", "float_nan")]
    progress = Recorder()
    run = run_batch(rasters, make_checkpoint(tile=64, overlap=8), tmp_path / "out", PredictOptions(device="cpu"),
                    progress=progress)
    assert len(run.result.items) == 3 and run.summary is not None and run.summary.is_file()
    devices = [text for kind, text in progress.calls if kind == "device"]
    assert len(devices) == 1 and devices[0].startswith("cpu (")
    assert [text for kind, text in progress.calls if kind == "status"] == [p.name for p in rasters]
    assert not [text for kind, text in progress.calls if kind == "message" and text.startswith(("device", "status"))]
