"""The ONNX export cache: predict on the CPU runs a checkpoint's cached export without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import CheckpointFactory

REPO = Path(__file__).resolve().parent.parent

# a real predict in a fresh process; it reports which heavy modules got imported and what the engine was
_CHILD = """
import json, sys
from fastunet_core.inference.predict import Predictor, PredictOptions
p = Predictor(sys.argv[1], PredictOptions(device="auto"))
r = p.run(sys.argv[2], sys.argv[3])
print("@@" + json.dumps({"torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
                          "onnx": "onnx" in sys.modules, "engine": p.engine_name, "tiles": r.tiles_total}))
"""


def _child_predict(ckpt: Path, raster: Path, out: Path, cache: Path) -> dict:
    env = {**os.environ, "FASTUNET_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), str(raster), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@"))
    return json.loads(line[2:])


@pytest.fixture(scope="module")
def varied_checkpoint(tmp_path_factory: pytest.TempPathFactory, make_checkpoint: CheckpointFactory) -> Path:
    """A unet_tiny checkpoint whose class map varies across a raster (BatchNorm statistics as after training)."""
    import torch

    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(make_checkpoint("unet_tiny", tile=128, overlap=16))
    torch.manual_seed(3)
    with torch.no_grad():
        for m in loaded.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.05, 0.2)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("varied") / "varied.safetensors"
    return save_checkpoint(path, loaded.model, loaded.meta)


def test_predict_with_a_cached_export_never_imports_torch(tmp_path: Path, rio_data: Path,
                                                          varied_checkpoint: Path) -> None:
    from fastunet_core.inference.predict import PredictOptions, predict_raster

    ckpt = varied_checkpoint
    raster, cache = rio_data / "RGB.byte.tif", tmp_path / "cache"
    first = _child_predict(ckpt, raster, tmp_path / "first.tif", cache)
    assert "exported to the cache" in first["engine"]
    assert first["torch"]  # the first run exports, which needs torch
    entries = sorted(p.name for p in (cache / "onnx").iterdir())
    # the export, ONNX Runtime's optimised form of it for this CPU and that form's weights (memory-mapped when
    # loaded), the digest index; no temporary file
    assert len(entries) == 4 and entries[0] == "digests.json", entries
    assert entries[1].endswith(".onnx") and entries[2].endswith(".ort.onnx"), entries
    assert entries[3].startswith(entries[2]) and entries[3].endswith(".data"), entries
    second = _child_predict(ckpt, raster, tmp_path / "second.tif", cache)
    assert second["engine"] == "onnxruntime (CPU, fp32, cached export)"
    assert second["torch"] == [] and not second["onnx"]
    # the answer is PyTorch's: the same map as the PyTorch engine in fp32
    predict_raster(raster, ckpt, tmp_path / "torch.tif", PredictOptions(engine="torch", precision="fp32", device="cpu"))
    maps = {}
    for name in ("first", "second", "torch"):
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            maps[name] = ds.read(1)
    valid = maps["torch"] != 255
    assert len(np.unique(maps["torch"][valid])) > 1  # a map that varies, so agreement means something
    assert np.array_equal(maps["first"], maps["second"])
    assert (maps["second"][valid] == maps["torch"][valid]).mean() > 0.999


def test_cache_key_follows_the_weights_not_the_metadata(tmp_path: Path, make_checkpoint: CheckpointFactory) -> None:
    import dataclasses

    import torch

    from fastunet_core.inference.onnx_cache import onnx_cache_key
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(make_checkpoint("unet_tiny"))
    key = onnx_cache_key(loaded.path, loaded.meta)
    renamed = dataclasses.replace(loaded.meta, metrics={"bf16_agreement": 0.9995}, overlap_px=8)
    same = save_checkpoint(tmp_path / "same.safetensors", loaded.model, renamed)
    assert onnx_cache_key(same, renamed) == key
    with torch.no_grad():
        next(loaded.model.parameters()).view(-1)[0] += 1e-3
    other = save_checkpoint(tmp_path / "other.safetensors", loaded.model, loaded.meta)
    assert onnx_cache_key(other, loaded.meta) != key


def test_failed_export_leaves_no_cache_entry_and_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            make_checkpoint: CheckpointFactory) -> None:
    from fastunet_core.inference import onnx_cache
    from fastunet_core.inference.predict import PredictOptions, Predictor
    from fastunet_core.models import onnx_export

    monkeypatch.setenv("FASTUNET_CACHE_DIR", str(tmp_path / "cache"))

    def broken(checkpoint: Path, target: Path) -> None:
        target.write_bytes(b"half a model")
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(onnx_export, "export_checkpoint_onnx", broken)
    predictor = Predictor(make_checkpoint("unet_tiny"), PredictOptions(device="cpu"))
    assert predictor.engine_name.startswith("pytorch")
    assert [p.name for p in (onnx_cache.cache_root() / "onnx").iterdir()] == ["digests.json"]  # no model


def test_cache_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastunet_core.inference.onnx_cache import cache_root

    monkeypatch.delenv("FASTUNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "fastunet-geo"


_ENGINE_CHILD = """
import json, sys
import qgis_plugin.engine_child  # the QGIS engine process's module, as `python -m ...engine_child` loads it
from qgis_plugin.engine_calls import CALLS
from qgis_plugin.jobs import SegmentJob

class Sink:
    def set_percent(self, p): pass
    def is_cancelled(self): return False
    def log(self, text): print(text, file=sys.stderr)

job = SegmentJob(raster=sys.argv[2], model=sys.argv[1], class_output=sys.argv[3], polygons_output=sys.argv[4],
                 device="auto")
out = CALLS["segment"](job.to_dict(), Sink())
print("@@" + json.dumps({"torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
                          "features": out["features"]}))
"""


def test_qgis_engine_segment_call_runs_without_torch(tmp_path: Path, rio_data: Path, varied_checkpoint: Path) -> None:
    """The plugin's engine process (segment: predict + vectorise) with a cached export imports no torch."""
    cache, raster = tmp_path / "cache", rio_data / "RGB.byte.tif"
    _child_predict(varied_checkpoint, raster, tmp_path / "warm.tif", cache)  # fills the cache
    env = {**os.environ, "FASTUNET_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    args = [str(varied_checkpoint), str(raster), str(tmp_path / "c.tif"), str(tmp_path / "p.gpkg")]
    proc = subprocess.run([sys.executable, "-c", _ENGINE_CHILD, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("@@"))[2:])
    assert report["torch"] == [] and report["features"] > 0
    assert "cached export" in proc.stderr  # the engine line the dock shows


# the CLI as a user runs it; at exit it reports which heavy modules it had imported
_CLI_CHILD = """
import atexit, json, sys
HEAVY = ("torch", "onnx", "geopandas", "pandas", "shapely", "pyogrio", "tqdm")
def report():
    print("@@" + json.dumps(sorted(m for m in HEAVY if m in sys.modules)), flush=True)
atexit.register(report)
sys.argv = ["fastunet-geo", *sys.argv[1:]]
from fastunet_core.cli import main
main()
"""


def _cli_modules(args: list[str], cache: Path) -> list[str]:
    env = {**os.environ, "FASTUNET_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CLI_CHILD, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("@@"))[2:])


def test_cli_predict_imports_no_torch_nor_vector_libraries(tmp_path: Path, rio_data: Path,
                                                           varied_checkpoint: Path) -> None:
    """`fastunet-geo predict` with a cached export loads neither torch nor the vector stack (start-up time).

    geopandas/pandas/shapely/pyogrio cost about a second of imports; they load only when polygons are written.
    """
    cache, raster = tmp_path / "cache", rio_data / "RGB.byte.tif"
    _child_predict(varied_checkpoint, raster, tmp_path / "warm.tif", cache)  # fills the cache
    base = ["predict", str(raster), "-m", str(varied_checkpoint), "--device", "cpu"]
    assert _cli_modules([*base, "-o", str(tmp_path / "cli.tif")], cache) == []
    with rasterio.open(tmp_path / "warm.tif") as a, rasterio.open(tmp_path / "cli.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    # with polygons the vector stack is loaded (so the check above can see it), torch still is not
    loaded = _cli_modules([*base, "-o", str(tmp_path / "v.tif"), "--vector", str(tmp_path / "v.gpkg")], cache)
    assert "pyogrio" in loaded and "shapely" in loaded and "torch" not in loaded
    # and the batch form (--out-dir) imports no more than the single one
    assert _cli_modules([*base, "--out-dir", str(tmp_path / "many")], cache) == []
