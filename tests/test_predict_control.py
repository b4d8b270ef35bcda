"""Read-ahead, cancellation and failure paths of predict: same result, nothing left behind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fastunet_core.errors import CancelledError
from fastunet_core.inference.predict import PredictOptions, Predictor, predict_raster
from fastunet_core.io.raster_input import TileReader
from fastunet_core.runtime.progress import NullProgress


class CancelAfter(NullProgress):
    def __init__(self, tiles: int) -> None:
        self.tiles, self.done = tiles, 0

    def start(self, total: float, label: str) -> None:
        pass

    def advance(self, n: float = 1) -> None:
        self.done += int(n)

    def is_cancelled(self) -> bool:
        return self.done >= self.tiles

    def message(self, text: str) -> None:
        pass


def _reader_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "fastunet-tile-reader")


def test_read_ahead_gives_the_same_result(tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]) -> None:
    ckpt = make_checkpoint()
    outs = []
    for prefetch in (True, False):
        out = tmp_path / f"o{prefetch}.tif"
        predict_raster(rio_data / "RGB.byte.tif", ckpt, out, PredictOptions(prefetch=prefetch, batch_size=3))
        with rasterio.open(out) as ds:
            outs.append(ds.read(1))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("prefetch", [True, False])
def test_cancel_leaves_no_file_and_no_thread(tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path],
                                            prefetch: bool) -> None:
    out, probs = tmp_path / "o.tif", tmp_path / "p.tif"
    with pytest.raises(CancelledError):
        predict_raster(rio_data / "cogeo.tif", make_checkpoint(), out,
                       PredictOptions(prefetch=prefetch, batch_size=2, probs_path=probs), CancelAfter(4))
    assert list(tmp_path.iterdir()) == []
    assert _reader_threads() == 0


def test_read_error_in_background_thread_reaches_the_caller(tmp_path: Path, rio_data: Path,
                                                            make_checkpoint: Callable[..., Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = TileReader.read

    def flaky(self: TileReader, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk went away")
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(TileReader, "read", flaky)
    predictor = Predictor(make_checkpoint(), PredictOptions(prefetch=True))
    with pytest.raises(OSError, match="disk went away"):
        predictor.run(rio_data / "cogeo.tif", tmp_path / "o.tif")
    assert list(tmp_path.iterdir()) == []
    assert _reader_threads() == 0
