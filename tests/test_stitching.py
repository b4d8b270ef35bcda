"""Stitching is exact: with a per-pixel model, tiled+blended output equals the untiled prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from fastunet_core.inference.predict import PredictOptions, predict_raster
from fastunet_core.models.checkpoint import LoadedModel
from fastunet_core.models.metadata import InputSpec, ModelMeta, default_classes
from fastunet_core.models.registry import REGISTRY, register


class PixelModel(nn.Module):
    """Output at a pixel depends only on that pixel: a 1x1 convolution."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module", autouse=True)
def _pixel_arch() -> None:
    if "test_pixel" not in REGISTRY:
        register("test_pixel", lambda in_channels, num_classes: PixelModel(in_channels, num_classes),
                 "test stand-in", lambda args: 1)


def _pixel_model(n_classes: int = 4) -> LoadedModel:
    torch.manual_seed(1)
    model = PixelModel(3, n_classes).eval()
    with torch.no_grad():
        model.conv.weight.mul_(5.0)
    meta = ModelMeta("test_pixel", {}, InputSpec((1, 2, 3), mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25)),
                     default_classes([f"c{i}" for i in range(n_classes)]), tile_size_px=64, overlap_px=16)
    return LoadedModel(model, meta, Path("in-memory"))


def _write_raster(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 256, size=(3, height, width), dtype=np.uint8)
    data[:, : height // 5, : width // 7] = 0  # a nodata corner
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5), nodata=0) as dst:
        dst.write(data)
    return data


def _untiled(loaded: LoadedModel, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = (data != 0).any(axis=0)
    x = loaded.meta.input.normalise(data)
    x[:, ~valid] = 0
    with torch.inference_mode():
        p = torch.softmax(loaded.model(torch.from_numpy(x)[None]), dim=1)[0].numpy()
    cls = p.argmax(axis=0).astype(np.uint8)
    cls[~valid] = 255
    return cls, p


@pytest.mark.parametrize(("width", "height"), [(37, 23), (130, 97), (301, 250)])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 16), (32, 24), (48, 7)])
@pytest.mark.parametrize("blend", ["cosine", "core"])
def test_tiled_equals_untiled(tmp_path: Path, width: int, height: int, tile: int, overlap: int, blend: str) -> None:
    src = tmp_path / "in.tif"
    data = _write_raster(src, width, height, seed=width * height)
    loaded = _pixel_model()
    out, probs = tmp_path / "out.tif", tmp_path / "probs.tif"
    predict_raster(src, loaded, out, PredictOptions(tile_size_px=tile, overlap_px=overlap, batch_size=3,
                                                    blend=blend, probs_path=probs))
    expected_cls, expected_p = _untiled(loaded, data)
    with rasterio.open(out) as ds:
        got = ds.read(1)
    assert np.array_equal(got, expected_cls)
    with rasterio.open(probs) as ds:
        got_p = ds.read()
    valid = expected_cls != 255
    assert np.abs(got_p[:, valid].astype(int) - np.rint(expected_p[:, valid] * 100).astype(int)).max() <= 1
    assert (got_p[:, ~valid] == 255).all()


def _peak_live_pixels(width: int, height: int, tile: int, overlap: int) -> tuple[int, int]:
    from fastunet_core.tiling.grid import TileGrid
    from fastunet_core.tiling.stitching import StreamingStitcher

    n_classes = 3
    grid = TileGrid.for_raster(width, height, tile, overlap)
    finished: list[int] = []
    stitcher = StreamingStitcher(grid, n_classes, "cosine", lambda ly, x0, s, w: finished.append(w.size))
    probs = np.full((n_classes, tile, tile), 1.0 / n_classes, dtype=np.float32)
    peak = 0
    for row, col, _ in grid.windows():
        stitcher.add(row, col, probs, None)
        peak = max(peak, sum(a[-1].size for a in stitcher._acc.values()))
    stitcher.check_complete()
    return peak, sum(finished)


def test_live_memory_is_bounded_by_overlap_band_not_raster_area() -> None:
    width, tile, overlap = 2000, 64, 16
    peak_short, done_short = _peak_live_pixels(width, 1000, tile, overlap)
    peak_tall, done_tall = _peak_live_pixels(width, 4000, tile, overlap)
    assert (done_short, done_tall) == (width * 1000, width * 4000)  # every pixel finished exactly once
    # tiles are spread evenly, so every overlap is `overlap` or one more pixel
    assert peak_tall <= 2 * (overlap + 1) * width + 2 * tile * tile
    assert peak_tall <= peak_short * 1.05  # does not grow with the raster's height


@pytest.mark.parametrize("channels", [1, 2, 6, 9])
def test_argmax_channels_equals_numpy_with_ties(channels: int) -> None:
    from fastunet_core.tiling.stitching import argmax_channels

    rng = np.random.default_rng(channels)
    sums = rng.integers(0, 4, size=(channels, 37, 53)).astype(np.float32)  # few values: many ties
    assert np.array_equal(argmax_channels(sums), np.argmax(sums, axis=0))


def test_row_assembler_writes_each_block_once_in_file_order_holding_about_a_tile_of_rows() -> None:
    """Cells from the stitcher become blocks written in file order; memory: the block rows being filled."""
    from fastunet_core.tiling.grid import TileGrid, edges
    from fastunet_core.tiling.stitching import RowAssembler, StreamingStitcher

    width, height, tile, overlap, block = 1000, 1500, 128, 20, 64  # blocks do not line up with the tiles
    grid = TileGrid.for_raster(width, height, tile, overlap)
    yy, xx = np.mgrid[0:height, 0:width]
    expected = ((yy * 7 + xx * 3) % 250).astype(np.uint8)[None]
    got = np.full_like(expected, 255)
    writes: list[tuple[int, int, tuple[int, ...]]] = []

    def write(row0: int, values: np.ndarray, col0: int = 0) -> None:
        writes.append((row0, col0, values.shape))
        got[:, row0 : row0 + values.shape[1], col0 : col0 + values.shape[2]] = values

    rows = RowAssembler(edges(grid.rows), edges(grid.cols), 1, np.dtype(np.uint8), block, block, write)
    peak_rows = 0

    def finish(ly: int, x0: int, sums: np.ndarray, wsum: np.ndarray) -> None:
        nonlocal peak_rows
        y0 = grid_edges[ly]
        h, w = wsum.shape
        rows.put(ly, x0, expected[:, y0 : y0 + h, x0 : x0 + w])
        peak_rows = max(peak_rows, len(rows._rows))

    grid_edges = edges(grid.rows)
    stitcher = StreamingStitcher(grid, 3, "cosine", finish)
    probs = np.full((3, tile, tile), 1 / 3, dtype=np.float32)
    for row, col, _ in grid.windows():
        stitcher.add(row, col, probs, None)
    stitcher.check_complete()
    assert np.array_equal(got, expected)
    blocks = [(r, c, (1, min(block, height - r), min(block, width - c)))
              for r in range(0, height, block) for c in range(0, width, block)]
    assert writes == blocks  # every block once, whole, in the file's order
    assert rows.written_rows == height
    assert peak_rows * block <= tile + 2 * block  # the block rows of about one tile row, whatever the height


def test_read_cache_follows_the_source_blocks_not_the_raster(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL's block cache while reading tiles: a few MiB for a tiled source, a tile row of strips for a striped one."""
    from fastunet_core.io.raster_input import GDAL_CACHE_BYTES, READ_CACHE_MIN, read_cache_bytes

    def cache(width: int, tiled: bool) -> int:
        path = tmp_path / f"{width}_{tiled}.tif"
        extra = {"tiled": True, "blockxsize": 512, "blockysize": 512} if tiled else {}
        with rasterio.open(path, "w", driver="GTiff", width=width, height=600, count=3, dtype="uint8",
                           sparse_ok=True, **extra):
            pass
        with rasterio.open(path) as src:
            return read_cache_bytes(src, 512)

    assert cache(4096, True) == cache(8192, True) == READ_CACHE_MIN  # tiled: the cache does not grow with the width
    striped = cache(4096, False), cache(8192, False)
    assert READ_CACHE_MIN < striped[0] < striped[1] <= GDAL_CACHE_BYTES  # striped: every strip of a tile row
    assert striped[1] >= 8192 * 512 * 3
