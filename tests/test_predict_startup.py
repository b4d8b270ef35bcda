"""Start-up of predict on the CPU: the ONNX Runtime session is built while the raster and outputs are opened.

The figures are in the README ("predict at default settings"; bench/bench_predict.py --first-tile-only);
these tests check the behaviour that gives them, never a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from fastunet_core.inference import onnx_engine
from fastunet_core.inference.predict import PredictOptions, Predictor, predict_raster
from fastunet_core.io.resume import partial_path
from tests.cli_helpers import run_cli
from tests.conftest import CheckpointFactory
from tests.run_helpers import CountingCancel


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ONNX cache of this test's own (its entries are damaged on purpose below)."""
    monkeypatch.setenv("FASTUNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory, make_checkpoint: CheckpointFactory) -> Path:
    """A unet_tiny checkpoint (weights large enough to go to the optimised form's weights file) whose class map
    varies across a raster (BatchNorm statistics as after training)."""
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(make_checkpoint("unet_tiny", tile=128, overlap=16))
    torch.manual_seed(3)
    with torch.no_grad():
        for m in loaded.torch_model().modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.05, 0.2)
                m.weight.uniform_(0.5, 1.5)
    return save_checkpoint(tmp_path_factory.mktemp("varied") / "varied.safetensors", loaded.torch_model(), loaded.meta)


@pytest.fixture()
def warm(cache: Path, rio_data: Path, tmp_path: Path, varied: Path) -> tuple[Path, Path]:
    """The model's export in the cache (with its optimised form) and the class map of that first run."""
    ckpt, out = varied, tmp_path / "first.tif"
    predict_raster(rio_data / "cogeo.tif", ckpt, out, PredictOptions(device="cpu"))
    assert len(np.unique(_read(out))) > 1  # a map that varies, so equality below means something
    return ckpt, out


def _entries(cache: Path) -> tuple[Path, Path]:
    model = next(p for p in cache.glob("*.onnx") if ".opt-" not in p.name)
    optimised = next(cache.glob("*.ort.onnx"))
    return model, optimised


def test_session_is_built_while_the_raster_and_outputs_are_opened(
        warm: tuple[Path, Path], rio_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, first = warm
    out = tmp_path / "second.tif"
    ort = onnx_engine.import_onnxruntime()
    real = ort.InferenceSession
    seen: dict[str, Any] = {}

    def gated(*args: Any, **kwargs: Any) -> Any:
        # hold the session back until predict has opened the raster and created its output (the partial
        # file): a session built before ``run`` (on the caller's thread) would never see it
        seen["thread"] = threading.current_thread() is threading.main_thread()
        deadline = time.monotonic() + 120
        while not seen["thread"] and not partial_path(out).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["output first"] = partial_path(out).exists()
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", gated)
    predictor = Predictor(ckpt, PredictOptions(device="cpu"))
    assert predictor.engine_name == "onnxruntime (CPU, fp32, cached export)"
    predictor.run(rio_data / "cogeo.tif", out)
    assert seen == {"thread": False, "output first": True}
    assert out.read_bytes() == first.read_bytes()  # the same file as the first run's


def test_background_session_gives_the_bytes_of_one_built_in_place(
        warm: tuple[Path, Path], rio_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, first = warm
    init = onnx_engine.OnnxEngine.__init__

    def in_place(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "background": False})

    monkeypatch.setattr(onnx_engine.OnnxEngine, "__init__", in_place)
    opts = PredictOptions(device="cpu", probs_path=tmp_path / "p_sync.tif")
    predict_raster(rio_data / "cogeo.tif", ckpt, tmp_path / "sync.tif", opts)
    monkeypatch.setattr(onnx_engine.OnnxEngine, "__init__", init)
    opts = PredictOptions(device="cpu", probs_path=tmp_path / "p_bg.tif")
    predict_raster(rio_data / "cogeo.tif", ckpt, tmp_path / "bg.tif", opts)
    assert (tmp_path / "bg.tif").read_bytes() == (tmp_path / "sync.tif").read_bytes() == first.read_bytes()
    assert (tmp_path / "p_bg.tif").read_bytes() == (tmp_path / "p_sync.tif").read_bytes()


@pytest.mark.parametrize("damage", ["graph", "weights file gone"])
def test_damaged_optimised_form_is_optimised_again(warm: tuple[Path, Path], cache: Path, rio_data: Path,
                                                  tmp_path: Path, damage: str) -> None:
    ckpt, first = warm
    _, optimised = _entries(cache)
    (weights,) = cache.glob(f"{optimised.name}.*.data")  # the optimised form's weights, memory-mapped
    if damage == "graph":
        optimised.write_bytes(b"not a model")
    else:
        weights.unlink()
    out = tmp_path / "again.tif"
    predict_raster(rio_data / "cogeo.tif", ckpt, out, PredictOptions(device="cpu"))
    assert out.read_bytes() == first.read_bytes()
    assert optimised.stat().st_size > 100  # written again, whole
    ort = onnx_engine.import_onnxruntime()
    ort.InferenceSession(str(optimised), providers=["CPUExecutionProvider"])  # and loadable
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_optimised_weights_are_memory_mapped_not_copied(warm: tuple[Path, Path], cache: Path) -> None:
    """The optimised graph keeps its weights in a file of its own, which ONNX Runtime maps (start-up time)."""
    _, optimised = _entries(cache)
    (weights,) = cache.glob(f"{optimised.name}.*.data")
    assert weights.stat().st_size > optimised.stat().st_size  # the weights left the graph
    assert weights.name.encode() in optimised.read_bytes()  # and the graph names their file


def test_damaged_cached_export_is_a_one_line_error_and_no_output(warm: tuple[Path, Path], cache: Path,
                                                                rio_data: Path, tmp_path: Path) -> None:
    ckpt, _ = warm
    model, optimised = _entries(cache)
    model.write_bytes(b"not a model")
    optimised.unlink()
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    code, text = run_cli("predict", str(rio_data / "cogeo.tif"), "-m", str(ckpt), "--device", "cpu",
                         "-o", str(outputs / "c.tif"))
    assert code == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    line = next(x for x in text.splitlines() if x.startswith("error: "))
    assert str(model) in line and "delete it" in line, line
    assert list(outputs.iterdir()) == []


def test_resume_follows_the_checkpoint_file_from_the_first_run_on(cache: Path, rio_data: Path, tmp_path: Path,
                                                                    make_checkpoint: Callable[..., Path]) -> None:
    """The resume fingerprint takes the weights' digest remembered in the cache (no hashing at each start).

    A run stopped while it exported the model continues in the next run (which finds the export); a
    checkpoint rewritten since (same path, same size) starts over.
    """
    from fastunet_core.errors import CancelledError
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(make_checkpoint().read_bytes())
    out, raster = tmp_path / "c.tif", rio_data / "cogeo.tif"
    opts = PredictOptions(device="cpu", resume=True)
    with pytest.raises(CancelledError):
        predict_raster(raster, ckpt, out, opts, CountingCancel(60))  # exports to the (empty) cache
    again = CountingCancel(1)
    with pytest.raises(CancelledError):
        predict_raster(raster, ckpt, out, opts, again)  # finds the export
    assert any("resuming" in m for m in again.messages), again.messages
    assert partial_path(out).exists()
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():
        for p in loaded.torch_model().parameters():
            p.neg_()  # other classes, same file size
    size = ckpt.stat().st_size
    save_checkpoint(ckpt, loaded.torch_model(), loaded.meta, overwrite=True)
    assert ckpt.stat().st_size == size
    run = CountingCancel(None)
    predict_raster(raster, ckpt, out, opts, run)
    assert not any("resuming" in m for m in run.messages), run.messages
    fresh = tmp_path / "fresh.tif"
    predict_raster(raster, ckpt, fresh, PredictOptions(device="cpu"))
    assert np.array_equal(_read(out), _read(fresh))
    before = tmp_path / "before.tif"
    predict_raster(raster, make_checkpoint(), before, PredictOptions(device="cpu"))
    assert not np.array_equal(_read(out), _read(before))  # a continued run would have kept the old classes
