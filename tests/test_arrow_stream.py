"""The Arrow C stream that feeds pyogrio's write_arrow (fastunet_core/io/arrow_stream.py): a GeoPackage written
through it holds the same table, rows and R-tree as one written feature batch by feature batch; an error raised
while making a batch comes out of the write as itself, and nothing is left behind."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely

from fastunet_core.errors import CancelledError
from fastunet_core.io.arrow_stream import BatchStream, Column
from fastunet_core.io.vector_output import FeatureBatch, open_sink

CRS = "EPSG:32633"
COLUMNS = [Column("class_id", "int32"), Column("class_name", "string"), Column("area_m2", "float64"),
           Column("perimeter_m", "float64"), Column("geom", "binary")]


def feature_batches(sizes: list[int], seed: int = 0) -> list[FeatureBatch]:
    """Batches of random boxes and rings with holes, names with non-ASCII letters, areas that vary."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        x, y = rng.uniform(500_000, 510_000, n), rng.uniform(5_590_000, 5_600_000, n)
        w = rng.uniform(1, 50, n)
        geoms = shapely.box(x, y, x + w, y + w)
        holed = rng.random(n) < 0.3
        hx, hy, hw = x[holed], y[holed], w[holed]
        geoms[holed] = shapely.difference(geoms[holed], shapely.box(hx + 0.2 * hw, hy + 0.2 * hw, hx + 0.5 * hw,
                                                                    hy + 0.5 * hw))
        ids = rng.integers(0, 4, n)
        names = np.array(["forêt", "eau", "bâti", "straße"], dtype=object)[ids]
        out.append(FeatureBatch(shapely.to_wkb(geoms), ids, names, shapely.area(geoms), shapely.length(geoms)))
    return out


def tables(path: Path) -> dict[str, object]:
    """Everything a reader sees in a GeoPackage: schema, rows, the R-tree's entries, GPKG metadata."""
    with sqlite3.connect(path) as db:
        return {
            "schema": db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
            "rows": db.execute('SELECT * FROM "polys" ORDER BY fid').fetchall(),
            "rtree": sorted(db.execute('SELECT * FROM "rtree_polys_geom"').fetchall()),
            "contents": db.execute("SELECT table_name, data_type, min_x, min_y, max_x, max_y, srs_id "
                                   "FROM gpkg_contents").fetchall(),
            "extensions": db.execute("SELECT * FROM gpkg_extensions").fetchall(),
            "version": db.execute("PRAGMA user_version").fetchone(),
        }


def test_stream_writes_what_feature_batches_write(tmp_path: Path) -> None:
    batches = feature_batches([700, 0, 1, 1300])
    by_batch = tmp_path / "by_batch" / "polys.gpkg"
    by_batch.parent.mkdir()
    for b in batches:  # what the sink did before: one pyogrio.raw.write session per batch
        if len(b):
            names, columns = b.fields(shapefile=False)
            pyogrio.raw.write(str(by_batch), b.wkb, columns, names, layer="polys", driver="GPKG",
                              geometry_type="Polygon", crs=CRS, append=by_batch.exists(),
                              dataset_options=None if by_batch.exists() else {"VERSION": "1.2"})
    with open_sink(tmp_path / "polys.gpkg", CRS, "Polygon") as sink:
        sink.write_all(iter(batches))
        assert sink.features == 2001
        sink.commit()
    assert tables(tmp_path / "polys.gpkg") == tables(by_batch)
    assert len(tables(by_batch)["rows"]) == 2001  # type: ignore[arg-type]


def test_an_empty_stream_gives_an_empty_layer(tmp_path: Path) -> None:
    with open_sink(tmp_path / "polys.gpkg", CRS, "Polygon") as sink:
        sink.write_all(iter([]))
        sink.commit()
    info = pyogrio.read_info(tmp_path / "polys.gpkg")
    assert info["features"] == 0 and list(info["fields"]) == ["class_id", "class_name", "area_m2", "perimeter_m"]


def test_an_error_while_making_a_batch_comes_out_as_itself(tmp_path: Path) -> None:
    closed = []

    def batches() -> Iterator[FeatureBatch]:
        try:
            yield from feature_batches([50])
            raise CancelledError("cancelled; no output was written")
        finally:
            closed.append(True)

    with pytest.raises(CancelledError, match="cancelled"), open_sink(tmp_path / "polys.gpkg", CRS, "Polygon") as sink:
        sink.write_all(batches())
    assert closed == [True]
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone, no output


def test_a_malformed_batch_is_reported(tmp_path: Path) -> None:
    stream = BatchStream(COLUMNS, iter([[np.array([1], np.int32)]]))  # one column of five
    with pytest.raises(ValueError, match="a batch has 1 columns, the stream 5"):
        try:
            pyogrio.raw.write_arrow(stream, str(tmp_path / "x.gpkg"), layer="x", driver="GPKG", geometry_name="geom",
                                    geometry_type="Polygon", crs=CRS)
        except RuntimeError:  # pyogrio's "Error while accessing batch from stream."
            stream.reraise()


@pytest.mark.parametrize("callback", ["_release_array", "_release_schema", "_get_next"])
def test_ctrl_c_inside_a_gdal_callback_stops_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       callback: str) -> None:
    """A Ctrl-C whose KeyboardInterrupt would land inside a ctypes callback (ctypes prints and drops it there, and
    the write went on to finish: seen in CI as vectorize exiting 0 after SIGINT) stops the write and leaves nothing."""
    import signal

    original = getattr(BatchStream, callback)
    sent = []

    def interrupted_inside(self: BatchStream, *args: object) -> object:
        if not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGINT)  # its Python handler runs before the next line of this callback
        return original(self, *args)

    monkeypatch.setattr(BatchStream, callback, interrupted_inside)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), open_sink(tmp_path / "polys.gpkg", CRS, "Polygon") as sink:
            sink.write_all(iter(feature_batches([30, 30, 30])))
            sink.commit()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent == [True]
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder
    assert signal.getsignal(signal.SIGINT) is previous  # handlers as they were
