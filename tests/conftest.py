"""Shared fixtures: paths to the shared test data and small checkpoints made on the fly."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

# rasterio's wheel brings its own PROJ: a PROJ_DATA/PROJ_LIB pointing at Debian's breaks every EPSG lookup.
os.environ.pop("PROJ_DATA", None)
os.environ.pop("PROJ_LIB", None)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# ONNX exports made by the tests go to a cache of their own (never the user's), shared by the whole session
_CACHE = tempfile.mkdtemp(prefix="fastunet-test-cache-")
os.environ["FASTUNET_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))

from make_test_data import GeneratedRaster, bad_rasters, tiny_layouts  # noqa: E402  (tests/data, on the path above)


@pytest.fixture(scope="session", autouse=True)
def _tile_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' tile caches (data.cache: auto) in the session's temporary folder, not ~/.cache."""
    os.environ["FASTUNET_CACHE_DIR"] = str(tmp_path_factory.mktemp("tile-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test data folder (read-only; never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}; the tests expect ../shared/data beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rio_data(shared_data: Path) -> Path:
    """rasterio's CC0 test rasters."""
    return shared_data / "rasterio-testdata"


@pytest.fixture(scope="session")
def generated_rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GeneratedRaster]:
    """The seeded awkward rasters of tests/data/make_test_data.py (UTM + nodata, internal mask, alpha, ...)."""
    return bad_rasters(tmp_path_factory.mktemp("generated_rasters"))


@pytest.fixture(scope="session")
def generated_layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny LandCover.ai, LoveDA and image/mask folder layouts from tests/data/make_test_data.py."""
    return tiny_layouts(tmp_path_factory.mktemp("generated_layouts"))


CheckpointFactory = Callable[..., Path]

# The tests' default model: ``test_pixel_colour`` (fastunet_core/models/pixel_colour.py), a fixed 1x1 convolution
# whose classes follow the pixel brightness, so that every map the tests compare differs from place to place
# (tests/test_stand_in_model.py checks that each class covers a real share of every test raster).
STAND_IN = "test_pixel_colour"


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointFactory:
    """Return a function that writes (and caches) a small checkpoint: the stand-in model unless told otherwise."""
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    cache: dict[tuple[object, ...], Path] = {}

    def make(architecture: str = STAND_IN, classes: str = "background,building,water", bands: tuple[int, ...] =
             (1, 2, 3), dtype: str = "uint8", tile: int = 128, overlap: int = 16, **kw: object) -> Path:
        key = (architecture, classes, bands, dtype, tile, overlap, tuple(sorted(kw.items())))
        if key not in cache:
            path = folder / f"ckpt{len(cache)}.safetensors"
            init_checkpoint(InitRequest(architecture=architecture, classes=classes, bands=bands, dtype=dtype,
                                        tile_size_px=tile, overlap_px=overlap, **kw), path)  # type: ignore[arg-type]
            cache[key] = path
        return cache[key]

    return make


# -- QGIS plugin tests (tests/test_qgis_*.py) --

QGIS_CLASSES = "building=#e31a1c,water=#1f78b4,woodland=#33a02c"  # no background: every class is vectorised


@pytest.fixture(scope="session")
def qgis_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in model for the plugin tests (tile 128, overlap 16): three classes that each cover part of a map."""
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    path = tmp_path_factory.mktemp("qgis_model") / "small.safetensors"
    return init_checkpoint(InitRequest(architecture=STAND_IN, classes=QGIS_CLASSES, tile_size_px=128,
                                       overlap_px=16, resolution_m=0.5), path)


@pytest.fixture(scope="session")
def small_raster(tmp_path_factory: pytest.TempPathFactory, rio_data: Path) -> Path:
    """A 256 x 200 pixel part of cogeo.tif (EPSG:3857, RGB uint8), written once."""
    import rasterio
    from rasterio.windows import Window

    out = tmp_path_factory.mktemp("qgis_raster") / "small.tif"
    with rasterio.open(rio_data / "cogeo.tif") as src:
        window = Window(450, 500, 256, 200)  # a varied part: each stand-in class covers over 20 %
        profile = {"driver": "GTiff", "width": 256, "height": 200, "count": 3, "dtype": "uint8", "crs": src.crs,
                   "transform": src.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


@pytest.fixture(autouse=True)
def _qgis_writes_no_aux_xml(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """QGIS saves raster statistics as .aux.xml beside a raster it draws: not beside the shared test data."""
    if request.module.__name__.startswith("test_qgis_"):
        monkeypatch.setenv("GDAL_PAM_ENABLED", "NO")


@pytest.fixture(autouse=True)
def _no_unexpected_question(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A question box the test did not expect fails the test: offscreen, nobody would ever answer it."""
    if not request.module.__name__.startswith("test_qgis_"):
        return
    from qgis.PyQt.QtWidgets import QMessageBox

    def unexpected(_parent: object, _title: str, text: str, *_args: object) -> object:
        raise AssertionError(f"the plugin asked a question the test did not expect: {text!r}")

    monkeypatch.setattr(QMessageBox, "question", unexpected)


# -- CUDA tests (tests/test_cuda*.py, marker ``cuda``) --


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``cuda``-marked tests unless ``-m`` names the marker (``make gpu-check`` runs ``-m cuda``).

    Deselected, not skipped: a machine without a GPU does not count them as passes. Selected explicitly on a
    machine without CUDA, they fail (see tests/test_cuda.py), since a GPU check that ran nothing is no pass.
    """
    if "cuda" in (config.getoption("markexpr", "") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("cuda") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("cuda")])
        items[:] = keep
