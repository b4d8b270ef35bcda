"""A full disk or a read-only folder is a user error: one line naming the path and the cause, exit 1.

The failures are real, at the operating system's level, in a child process running the CLI:

- ``tmpfs``: a 32 KiB tmpfs mounted for the test: writes fail with ENOSPC (needs root and mount, as on the
  project's machines; skipped, and said so, elsewhere);
- ``rlimit``: the child's RLIMIT_FSIZE set to 32 KiB (``ulimit -f``): writes past it fail with EFBIG
  (Python ignores SIGXFSZ), on any POSIX machine;
- read-only: a tmpfs mounted read-only (EROFS) when root, a folder without write permission (EACCES) otherwise.

Nothing may be left behind, and above all no incomplete output under its final name (predict used to
rename a GeoTIFF whose last blocks never reached the disk into place and exit 0).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 32 * 1024
CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [227, 26, 28]},
           {"id": 2, "name": "water", "color": [31, 120, 180]}]


def _mount(target: Path, options: str) -> bool:
    target.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return r.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


class Place:
    """A folder where writing fails, how to run the CLI there, and the words the error must use."""

    def __init__(self, folder: Path, cause: str, preexec: Callable[[], None] | None = None) -> None:
        self.folder, self.cause, self.preexec = folder, cause, preexec

    def run(self, *args: str) -> tuple[int, str]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "-q", *args], env=env, capture_output=True,
                           text=True, preexec_fn=self.preexec, timeout=600)
        return r.returncode, r.stderr


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


@pytest.fixture(params=["tmpfs", "rlimit", "read-only"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    folder = tmp_path / "target"
    if request.param == "rlimit":
        folder.mkdir()
        yield Place(folder, "file too large", _limit_file_size)
        return
    if request.param == "tmpfs":
        if not _mount(folder, f"size={LIMIT_BYTES}"):
            pytest.skip("a small tmpfs needs root and mount(8) here; the rlimit case covers full writes")
        try:
            yield Place(folder, "no space left on the device")
        finally:
            _umount(folder)
        return
    if _mount(folder, "ro,size=64k"):
        try:
            yield Place(folder, "read-only file system")
        finally:
            _umount(folder)
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions and mount(8) failed: no read-only folder can be made here")
    folder.chmod(0o555)
    try:
        yield Place(folder, "permission denied")
    finally:
        folder.chmod(0o755)


def _assert_user_error(code: int, stderr: str, place: Place, path: Path, keeps_finished: bool = False) -> None:
    assert code == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert str(path) in lines[0] and place.cause in lines[0], lines[0]
    left = [p for p in place.folder.rglob("*") if p.is_file()]
    if not keeps_finished:
        assert left == [], f"files left behind: {left}"
        return
    # training keeps the checkpoints it finished before the disk filled up: complete files, no temporary ones
    assert [p for p in left if p.name.startswith(".")] == [], left
    from safetensors import safe_open

    for p in left:
        with safe_open(str(p), framework="pt") as f:
            assert f.keys()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    return init_checkpoint(InitRequest(architecture="unet_tiny", classes="background,building,water",
                                       tile_size_px=128, overlap_px=16), path)


@pytest.fixture(scope="module")
def busy_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600 x 600 class raster of 3 x 3 px random cells: its polygons need megabytes in any format."""
    path = tmp_path_factory.mktemp("mask") / "mask.tif"
    cells = np.random.default_rng(1).integers(0, 3, (200, 200), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 600, "height": 600, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 5000000, 0.5, 0.5), "nodata": 255}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.kron(cells, np.ones((3, 3), np.uint8)), 1)
        dst.update_tags(CLASSES=json.dumps(CLASSES))
    return path


def test_predict(place: Place, model: Path, rio_data: Path) -> None:
    code, err = place.run("predict", str(rio_data / "cogeo.tif"), "-m", str(model), "-o",
                          str(place.folder / "c.tif"), "--probs", str(place.folder / "p.tif"))
    _assert_user_error(code, err, place, place.folder)


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson"])
def test_vectorize(place: Place, busy_mask: Path, suffix: str) -> None:
    out = place.folder / f"poly{suffix}"
    code, err = place.run("vectorize", str(busy_mask), "-o", str(out))
    _assert_user_error(code, err, place, place.folder)


def test_init(place: Place) -> None:
    code, err = place.run("init", "unet", "--classes", "a,b,c", "-o", str(place.folder / "m.safetensors"))
    _assert_user_error(code, err, place, place.folder)


def test_train(place: Place, shared_data: Path, tmp_path: Path) -> None:
    cfg = {"data": {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"),
                    "tile_size": 32},
           "model": {"architecture": "unet", "args": {"widths": [8, 16, 32], "convs": 1}},
           "optim": {"epochs": 1, "batch_size": 4, "micro_batch": 4, "lr": 0.01, "num_workers": 0,
                     "max_batches_per_epoch": 2},
           "device": "cpu", "output": str(place.folder / "run")}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    code, err = place.run("train", "-c", str(config))
    _assert_user_error(code, err, place, place.folder, keeps_finished=True)
