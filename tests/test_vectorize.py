"""vectorize_raster and ``fastunet-geo vectorize``: exact polygons across window seams, areas in m2 in any CRS,
GeoPackage / Shapefile / GeoJSON outputs with a QGIS style, atomic and never overwriting by surprise."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from xml.etree import ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
from cli_helpers import polygon_info
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.transform import from_origin

from fastunet_core.cli import cli
from fastunet_core.cli.vectorize_cmd import vectorize
from fastunet_core.errors import (
    CancelledError,
    ConfigError,
    FastUNetWarning,
    InputRasterError,
    OutputExistsError,
    OutputLimitError,
)
from fastunet_core.io import vector_output
from fastunet_core.io.styles import embedded_style
from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster
from fastunet_core.runtime.progress import NullProgress

CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [227, 26, 28]},
           {"id": 2, "name": "water", "color": [31, 120, 180]}, {"id": 3, "name": "woodland", "color": [51, 160, 44]}]


def write_mask(path: Path, data: np.ndarray, crs: str, transform: rasterio.Affine, classes: list | None = CLASSES,
               nodata: int | None = 255) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if classes is not None:
            dst.update_tags(CLASSES=json.dumps(classes))
    return path


def read_layer(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=pyogrio.list_layers(path)[0][0])


def blobs(height: int, width: int, n_classes: int, period: float = 40.0, seed: int = 0) -> np.ndarray:
    """Smooth random class regions: the argmax of sums of plane waves (deterministic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fields = []
    for _ in range(n_classes):
        f = np.zeros((height, width))
        for _ in range(6):
            a, p, ph = rng.uniform(0, np.pi), rng.uniform(0.6 * period, 1.6 * period), rng.uniform(0, 2 * np.pi)
            f += np.sin((np.cos(a) * x + np.sin(a) * y) * 2 * np.pi / p + ph)
        fields.append(f)
    return np.argmax(fields, axis=0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def spacenet(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, gpd.GeoDataFrame]:
    """The real SpaceNet building labels rasterised on sample_geotiff.tif's grid (0.5 m, EPSG:32616)."""
    folder = shared_data / "solaris-spacenet"
    labels = gpd.read_file(folder / "geotiff_labels.geojson")
    with rasterio.open(folder / "sample_geotiff.tif") as src:
        grid = src.transform, src.crs, src.shape
        assert labels.crs == src.crs
    data = rasterize(((g, 1) for g in labels.geometry), out_shape=grid[2], transform=grid[0], dtype="uint8")
    path = write_mask(tmp_path_factory.mktemp("spacenet") / "buildings.tif", data, grid[1], grid[0])
    return path, labels


@pytest.fixture(scope="module")
def seams_raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An odd-sized class raster, many times a 64 px window: blobs, rings whose holes straddle seams, nodata."""
    h, w = 530, 700
    data = blobs(h, w, 4)
    y, x = np.mgrid[0:h, 0:w]
    for cy, cx, r0, r1 in ((128, 128, 22, 40), (288, 416, 50, 80), (64, 600, 10, 25)):  # holes on seams
        d = np.hypot(y - cy + 0.5, x - cx + 0.5)
        data[(d >= r0) & (d < r1)] = 2
        data[d < r0 - 6] = 3
    data[400:450, 100:190] = 255  # nodata
    data[200:203, 250:253] = 1  # a small square and a one-pixel diagonal neighbour
    data[203, 253] = 1
    return write_mask(tmp_path_factory.mktemp("seams") / "seams.tif", data, "EPSG:32633",
                      from_origin(500_000.0, 5_600_000.0, 2.0, 2.0))


# ----------------------------------------------------------------------------------------- what it must show


def test_round_trip_on_real_labels(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, labels = spacenet
    out = tmp_path / "buildings.gpkg"
    # one building rasterises with a detached single pixel (0.25 m2): --min-area drops such slivers
    result = vectorize_raster(mask, out, VectorizeOptions(min_area_m2=2.0, window_px=128))
    got = read_layer(out)
    assert len(got) == len(labels) == 43 == result.features
    assert set(got.class_name) == {"building"} and set(got.class_id) == {1}
    truth, ours = shapely.union_all(labels.geometry.values), shapely.union_all(got.geometry.values)
    assert ours.intersection(truth).area / ours.union(truth).area > 0.95
    hits = shapely.STRtree(got.geometry.values).query(labels.geometry.values, predicate="intersects")
    assert len(hits[0]) == len(labels) and len(set(hits[0])) == len(labels)  # one polygon per building
    np.testing.assert_allclose(got.area_m2, got.area, rtol=1e-9)  # UTM: planar areas
    np.testing.assert_allclose(got.perimeter_m, got.length, rtol=1e-9)
    assert got.crs.to_epsg() == 32616


@pytest.mark.parametrize("workers", [1, 2])
def test_windowed_equals_whole_raster(seams_raster: Path, tmp_path: Path, workers: int) -> None:
    whole = vectorize_raster(seams_raster, tmp_path / "whole.gpkg", VectorizeOptions(window_px=4096))
    windowed = vectorize_raster(seams_raster, tmp_path / "win.gpkg", VectorizeOptions(window_px=64, workers=workers))
    assert windowed.windows == 99 and whole.windows == 1
    assert [(c.id, c.polygons) for c in windowed.classes] == [(c.id, c.polygons) for c in whole.classes]
    for a, b in zip(windowed.classes, whole.classes, strict=True):
        assert a.area_m2 == pytest.approx(b.area_m2, rel=1e-12)
    a, b = read_layer(tmp_path / "win.gpkg"), read_layer(tmp_path / "whole.gpkg")
    assert len(a) == len(b) > 300
    # the same polygons, one to one: each windowed polygon's inner point lies in an equal whole-raster one
    pairs = shapely.STRtree(b.geometry.values).query(shapely.point_on_surface(a.geometry.values), predicate="within")
    assert len(pairs[0]) == len(a) and len(set(pairs[1])) == len(b)
    assert shapely.equals(a.geometry.values[pairs[0]], b.geometry.values[pairs[1]]).all()
    assert (a.class_id.values[pairs[0]] == b.class_id.values[pairs[1]]).all()
    assert shapely.get_num_coordinates(a.geometry.values).sum() == shapely.get_num_coordinates(b.geometry.values).sum()
    # what makes it a real test: holes, and polygons that needed pieces from several windows
    assert (shapely.get_num_interior_rings(a.geometry.values) > 0).sum() >= 3
    px = (a.geometry.bounds.values - [500_000, 5_599_000, 500_000, 5_599_000]) / 2.0  # pixel units (y flipped)
    windows_across = np.floor((px[:, 2] - 1e-9) / 64) - np.floor(px[:, 0] / 64) + 1
    windows_down = np.floor((px[:, 3] - 1e-9) / 64) - np.floor(px[:, 1] / 64) + 1
    assert ((windows_across > 1) | (windows_down > 1)).sum() > 150  # merged across a seam
    assert ((windows_across > 2) & (windows_down > 2)).sum() >= 3  # pieces from at least 9 windows
    # nodata is never covered; background is left out
    assert not shapely.intersects(a.geometry.values, shapely.box(500_202, 5_599_102, 500_378, 5_599_198)).any()
    assert 0 not in set(a.class_id)


def gdal_polygons(raster: Path) -> tuple[np.ndarray, np.ndarray]:
    """Polygonise a whole class raster with GDAL's own polygoniser (Debian's GDAL through osgeo, the one QGIS
    and gdal_polygonize use: another GDAL than rasterio's), 4-connected, nodata masked; return polygons, values."""
    from osgeo import gdal, ogr

    gdal.UseExceptions()
    src = gdal.Open(str(raster))
    band = src.GetRasterBand(1)
    out = ogr.GetDriverByName("Memory").CreateDataSource("")  # kept: its layer dies with it
    layer = out.CreateLayer("p", geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [])
    found = [(bytes(f.GetGeometryRef().ExportToIsoWkb()), f.GetField(0)) for f in layer]
    return shapely.from_wkb([w for w, _ in found]), np.array([v for _, v in found])


def test_same_polygons_and_areas_as_gdal_polygonize(seams_raster: Path, tmp_path: Path) -> None:
    geoms, values = gdal_polygons(seams_raster)
    keep = values != 0  # ours leaves out "background"
    geoms, values = geoms[keep], values[keep]
    result = vectorize_raster(seams_raster, tmp_path / "ours.gpkg", VectorizeOptions(window_px=64))
    ours = read_layer(tmp_path / "ours.gpkg")
    assert result.windows == 99 and len(ours) == len(geoms) > 300
    # one to one: each of our polygons' inner point lies in exactly one of GDAL's, equal to it, same class
    pairs = shapely.STRtree(geoms).query(shapely.point_on_surface(ours.geometry.values), predicate="within")
    assert len(pairs[0]) == len(ours) and len(set(pairs[1])) == len(geoms)
    assert shapely.equals(ours.geometry.values[pairs[0]], geoms[pairs[1]]).all()
    assert (ours.class_id.values[pairs[0]] == values[pairs[1]]).all()
    assert shapely.get_num_coordinates(ours.geometry.values).sum() == shapely.get_num_coordinates(geoms).sum()
    # UTM: the areas and perimeters are GEOS's planar ones of GDAL's polygons
    np.testing.assert_allclose(ours.area_m2.values[pairs[0]], shapely.area(geoms[pairs[1]]), rtol=1e-12)
    np.testing.assert_allclose(ours.perimeter_m.values[pairs[0]], shapely.length(geoms[pairs[1]]), rtol=1e-12)


def test_geographic_crs_areas_agree_with_equal_area_computation(rio_data: Path, tmp_path: Path) -> None:
    with rasterio.open(rio_data / "world.rgb.tif") as src:
        transform, crs, (h, w) = src.transform, src.crs, src.shape
    assert crs.is_geographic and (h, w) == (256, 512)
    data = blobs(h, w, 2, period=60.0)  # classes 0 (background) and 1, across the whole globe
    data[40:80, 200:260] = 2  # a lon/lat rectangle: 61.875N..33.75N, 39.375W..2.8125E
    mask = write_mask(tmp_path / "world.tif", data, crs.to_string(), transform)
    out = tmp_path / "world.gpkg"
    result = vectorize_raster(mask, out, VectorizeOptions(window_px=100))
    assert "equal-area" in result.area_method
    got = read_layer(out)

    # independent: the area of each pixel row is an ellipsoidal zone between two parallels
    ell = pyproj.CRS("EPSG:4326").ellipsoid
    a, b = ell.semi_major_metre, ell.semi_minor_metre
    e = math.sqrt(1 - (b / a) ** 2)

    def zone(lat_deg: np.ndarray) -> np.ndarray:  # area from the equator to lat, per radian of longitude
        s = np.sin(np.radians(lat_deg))
        return b**2 / 2 * (s / (1 - e**2 * s**2) + np.log((1 + e * s) / (1 - e * s)) / (2 * e))

    lat_edges = transform.f + transform.e * np.arange(h + 1)
    row_area = np.abs(zone(lat_edges[:-1]) - zone(lat_edges[1:])) * math.radians(transform.a)
    assert row_area.sum() * w == pytest.approx(510_065_621.7e6, rel=1e-6)  # WGS84's surface
    for cid in (1, 2):
        expected = float((data == cid).sum(axis=1) @ row_area)
        assert got.area_m2[got.class_id == cid].sum() == pytest.approx(expected, rel=1e-7)

    rect = got[got.class_id == 2]
    assert len(rect) == 1
    geod = pyproj.Geod(ellps="WGS84")
    north, south, west, east = 61.875, 33.75, -39.375, 2.8125
    meridian = geod.inv(west, south, west, north)[2]
    parallels = sum(geod.line_length(np.linspace(west, east, 4001), np.full(4001, lat)) for lat in (north, south))
    assert rect.perimeter_m.iloc[0] == pytest.approx(2 * meridian + parallels, rel=1e-6)


def test_web_mercator_areas_are_true_areas() -> None:
    from fastunet_core.polygons.measure import Measurer

    transform = rasterio.Affine(10.0, 0.0, 1_000_000.0, 0.0, -10.0, 8_399_737.0)  # about 60N: scale 2
    meter = Measurer.for_raster(pyproj.CRS("EPSG:3857").to_wkt(), transform, 1000, 1000)
    assert meter.method == "ellipsoidal"
    box = meter.to_map(np.array([shapely.box(0, 0, 100, 100)]))
    to_lonlat = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    ring = shapely.segmentize(box[0], 1.0).exterior  # densified: Mercator edges are rhumb lines
    lon, lat = to_lonlat.transform(*np.asarray(ring.coords).T)
    area, perimeter = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    assert shapely.area(box)[0] == pytest.approx(1e6)  # planar, about 4x too big at 60N
    assert meter.area_m2(box)[0] == pytest.approx(abs(area), rel=1e-5)
    assert meter.perimeter_m(box)[0] == pytest.approx(perimeter, rel=1e-5)


def test_geojson_is_rfc7946_wgs84(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, _ = spacenet
    vectorize_raster(mask, tmp_path / "b.gpkg", VectorizeOptions(window_px=256))
    assert not (tmp_path / "b.qml").exists()  # the GeoPackage holds its style inside
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastUNetWarning)
        result = vectorize_raster(mask, tmp_path / "b.geojson", VectorizeOptions(window_px=256))
    assert result.files == [tmp_path / "b.geojson", tmp_path / "b.qml"]
    assert (tmp_path / "b.qml").read_text() == embedded_style(tmp_path / "b.gpkg", "b")  # the same classes
    doc = json.loads((tmp_path / "b.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == result.features == 44
    lonlat = np.concatenate([np.asarray(f["geometry"]["coordinates"][0]) for f in doc["features"]])
    assert (lonlat[:, 0] > -85).all() and (lonlat[:, 0] < -84).all()
    assert (lonlat[:, 1] > 33).all() and (lonlat[:, 1] < 34).all()
    geoms = shapely.from_geojson([json.dumps(f["geometry"]) for f in doc["features"]])
    assert shapely.is_ccw(shapely.get_exterior_ring(geoms)).all()  # right-hand rule
    gj, gp = gpd.read_file(tmp_path / "b.geojson"), read_layer(tmp_path / "b.gpkg")
    assert gj.crs.to_epsg() == 4326
    assert sorted(gj.area_m2) == pytest.approx(sorted(gp.area_m2))  # attributes stay in metres
    back = shapely.union_all(gj.to_crs(gp.crs).geometry.values)
    assert shapely.hausdorff_distance(back, shapely.union_all(gp.geometry.values)) < 0.02  # 7 decimals: ~1 cm


def test_geopackage_is_version_1_2_with_style(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, _ = spacenet
    out = tmp_path / "b.gpkg"
    result = vectorize_raster(mask, out, VectorizeOptions())
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
    # the style inside, in QGIS's own layer_styles table (a non-spatial table, listed as such)
    assert pyogrio.list_layers(out).tolist() == [["b", "Polygon"], ["layer_styles", None]]
    assert result.files == [out] and not out.with_suffix(".qml").exists()
    text = embedded_style(out, "b")
    assert text is not None
    qml = ET.fromstring(text)
    renderer = qml.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    cats = {c.get("value"): (c.get("label"), c.get("symbol")) for c in renderer.iter("category")}
    assert cats == {"1": ("building", "0"), "2": ("water", "1"), "3": ("woodland", "2")}  # not background
    options = {o.get("name"): o.get("value") for o in next(renderer.iter("symbol")).iter("Option")}
    assert options["color"] == "227,26,28,90"  # a see-through fill, the imagery shows under it
    assert options["outline_color"] == "227,26,28,255"  # the outline carries the class colour


@pytest.mark.qgis
def test_qgis_opens_the_output_styled(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    pytest.importorskip("qgis.core", reason="QGIS's Python bindings are not installed")
    mask, _ = spacenet
    for name in ("b.gpkg", "s/b.shp"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        vectorize_raster(mask, tmp_path / name, VectorizeOptions(classes=("building",)))
    script = textwrap.dedent("""
        import json, sys
        from qgis.core import QgsApplication, QgsVectorLayer
        app = QgsApplication([], False); app.initQgis()
        out = []
        for path in sys.argv[1:]:
            layer = QgsVectorLayer(path, "x", "ogr")
            r = layer.renderer()
            out.append([layer.isValid(), layer.featureCount(), r.type(),
                        [(c.value(), c.label(), c.symbol().color().name()) for c in r.categories()]])
            del layer
        app.exitQgis()
        print(json.dumps(out))
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "b.gpkg"), str(tmp_path / "s/b.shp")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    for valid, n, kind, cats in json.loads(done.stdout.strip().splitlines()[-1]):
        assert valid and n == 44 and kind == "categorizedSymbol"
        assert cats == [[1, "building", "#e31a1c"]]


def test_shapefile_sidecars_and_field_names(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, _ = spacenet
    out = tmp_path / "b.shp"
    vectorize_raster(mask, out, VectorizeOptions(window_px=300))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.cpg", "b.dbf", "b.prj", "b.qml", "b.shp", "b.shx"]
    info = pyogrio.read_info(out)
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2", "perim_m"]
    assert all(len(f) <= 10 for f in info["fields"]) and info["features"] == 44
    assert (tmp_path / "b.cpg").read_text().strip().upper() in {"UTF-8", "UTF8"}
    assert pyproj.CRS.from_wkt((tmp_path / "b.prj").read_text()).equals(pyproj.CRS("EPSG:32616"),
                                                                        ignore_axis_order=True)


def test_shapefile_limits_are_refused(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mask, _ = spacenet
    monkeypatch.setattr(vector_output, "SHAPEFILE_MAX_BYTES", 20_000)  # stands in for 2 GB
    with pytest.raises(OutputLimitError, match=r"2 GB limit.*GeoPackage.*b\.gpkg"):
        vectorize_raster(mask, tmp_path / "b.shp", VectorizeOptions())
    assert list(tmp_path.iterdir()) == []  # no partial files, no temporary folder

    long_name = [{"id": 1, "name": "b" * 300, "color": [1, 2, 3]}]
    with rasterio.open(mask) as src:
        data, profile = src.read(1), src.profile
    write_mask(tmp_path / "long.tif", data, profile["crs"], profile["transform"], long_name)
    with pytest.raises(OutputLimitError, match=r"254 bytes.*GeoPackage"):
        vectorize_raster(tmp_path / "long.tif", tmp_path / "long.shp", VectorizeOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.tif"]
    vectorize_raster(tmp_path / "long.tif", tmp_path / "long.gpkg", VectorizeOptions())  # fine there
    assert read_layer(tmp_path / "long.gpkg").class_name.iloc[0] == "b" * 300


def test_no_overwrite_without_the_flag(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, _ = spacenet
    out = tmp_path / "b.gpkg"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"exists$"):  # neutral: each caller adds its hint
        vectorize_raster(mask, out, VectorizeOptions())
    assert out.read_bytes() == b"precious"
    vectorize_raster(mask, out, VectorizeOptions(overwrite=True))
    assert polygon_info(out)["features"] == 44

    stray = tmp_path / "s.dbf"  # one sidecar of a shapefile is enough to refuse
    stray.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"s\.dbf"):
        vectorize_raster(mask, tmp_path / "s.shp", VectorizeOptions())
    assert not (tmp_path / "s.shp").exists() and stray.read_bytes() == b"x"
    (tmp_path / "s.qix").write_bytes(b"stale index")
    vectorize_raster(mask, tmp_path / "s.shp", VectorizeOptions(overwrite=True))
    assert not (tmp_path / "s.qix").exists() and pyogrio.read_info(tmp_path / "s.shp")["features"] == 44


def test_cancel_leaves_nothing(seams_raster: Path, tmp_path: Path) -> None:
    class CancelSoon(NullProgress):
        def __init__(self) -> None:
            self.done = 0

        def start(self, total: int, label: str) -> None:
            self.total = total

        def advance(self, n: int = 1) -> None:
            self.done += n

        def is_cancelled(self) -> bool:
            return self.done >= 30

        def message(self, text: str) -> None:
            pass

    with pytest.raises(CancelledError):
        vectorize_raster(seams_raster, tmp_path / "c.gpkg", VectorizeOptions(window_px=64), CancelSoon())
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- options


def test_class_selection(spacenet: tuple[Path, gpd.GeoDataFrame], seams_raster: Path, tmp_path: Path) -> None:
    by_name = vectorize_raster(seams_raster, tmp_path / "a.gpkg", VectorizeOptions(classes=("Water", "3")))
    assert [c.name for c in by_name.classes] == ["water", "woodland"]
    with_bg = vectorize_raster(seams_raster, tmp_path / "b.gpkg", VectorizeOptions(classes=("background",)))
    assert [c.id for c in with_bg.classes] == [0]
    with pytest.raises(ConfigError, match=r"unknown class 'roads'.*background \(0\), building \(1\)"):
        vectorize_raster(seams_raster, tmp_path / "c.gpkg", VectorizeOptions(classes=("roads",)))
    # FINDINGS4 L4: an id the raster does not name wrote an empty file with exit 0; refused as a name is
    for unknown in ("7", "255", "-1"):
        with pytest.raises(ConfigError, match=rf"unknown class id {unknown};.*background \(0\), building \(1\)"):
            vectorize_raster(seams_raster, tmp_path / "c.gpkg", VectorizeOptions(classes=("1", unknown)))
    assert not (tmp_path / "c.gpkg").exists()
    # no CLASSES tag: names come from the id, colours from the colour table
    with rasterio.open(seams_raster) as src:
        data, profile = src.read(1), src.profile
    plain = write_mask(tmp_path / "plain.tif", data, profile["crs"], profile["transform"], classes=None)
    with rasterio.open(plain, "r+") as dst:
        dst.write_colormap(1, {2: (10, 20, 30, 255)})
    res = vectorize_raster(plain, tmp_path / "d.gpkg", VectorizeOptions(classes=("2",)))
    assert [c.name for c in res.classes] == ["class_2"]
    assert 'value="10,20,30,255"' in (embedded_style(tmp_path / "d.gpkg", "d") or "")


def test_min_area_drops_small_polygons_and_fills_small_holes(tmp_path: Path) -> None:
    data = np.zeros((60, 60), dtype=np.uint8)
    data[5:45, 5:45] = 1
    data[20, 20] = 0  # a 1 m2 hole
    data[10:20, 30:40] = 0  # a 100 m2 hole
    data[50:52, 50:52] = 1  # a 4 m2 polygon
    mask = write_mask(tmp_path / "m.tif", data, "EPSG:32633", from_origin(400_000, 5_000_000, 1.0, 1.0))
    plain = vectorize_raster(mask, tmp_path / "a.gpkg", VectorizeOptions(window_px=16))
    assert plain.polygons == 2 and plain.classes[0].area_m2 == 1600 - 1 - 100 + 4
    kept = vectorize_raster(mask, tmp_path / "b.gpkg", VectorizeOptions(min_area_m2=5.0, window_px=16))
    got = read_layer(tmp_path / "b.gpkg")
    assert len(got) == 1 and got.area_m2.iloc[0] == 1600 - 100
    assert shapely.get_num_interior_rings(got.geometry.values).tolist() == [1]
    assert kept.classes[0].polygons == 1


def test_dissolve_writes_one_multipolygon_per_class(seams_raster: Path, tmp_path: Path) -> None:
    single = vectorize_raster(seams_raster, tmp_path / "a.gpkg", VectorizeOptions(window_px=64))
    merged = vectorize_raster(seams_raster, tmp_path / "b.gpkg", VectorizeOptions(window_px=64, dissolve=True))
    got = read_layer(tmp_path / "b.gpkg")
    assert sorted(got.class_id) == [1, 2, 3] and merged.features == 3
    assert set(got.geom_type) == {"MultiPolygon"} and shapely.is_valid(got.geometry.values).all()
    per_class = {c.id: c for c in single.classes}
    for _, row in got.iterrows():
        assert len(row.geometry.geoms) == per_class[row.class_id].polygons
        assert row.area_m2 == pytest.approx(per_class[row.class_id].area_m2)


def test_simplify_keeps_neighbours_gap_free_across_seams(seams_raster: Path, tmp_path: Path) -> None:
    every = ("background", "building", "water", "woodland")
    exact = vectorize_raster(seams_raster, tmp_path / "a.gpkg", VectorizeOptions(classes=every, window_px=64))
    simple = vectorize_raster(seams_raster, tmp_path / "b.gpkg",
                              VectorizeOptions(classes=every, window_px=64, simplify_m=3.0))
    a, b = read_layer(tmp_path / "a.gpkg").geometry.values, read_layer(tmp_path / "b.gpkg").geometry.values
    assert simple.polygons == exact.polygons and shapely.is_valid(b).all()
    assert shapely.get_num_coordinates(b).sum() < 0.6 * shapely.get_num_coordinates(a).sum()
    covered = shapely.area(a).sum()  # every class: the raster minus nodata
    assert covered == pytest.approx(530 * 700 * 4.0 - 50 * 90 * 4.0)
    assert shapely.area(b).sum() == pytest.approx(covered, rel=1e-9)  # no overlaps...
    assert shapely.union_all(b).area == pytest.approx(covered, rel=1e-9)  # ...and no gaps
    assert shapely.coverage_is_valid(b)  # shared edges identical vertex for vertex, seams included
    default = vectorize_raster(seams_raster, tmp_path / "c.gpkg", VectorizeOptions(window_px=64, simplify_m=3.0))
    assert [c.id for c in default.classes] == [1, 2, 3]  # neither background nor nodata


def test_bad_inputs_are_refused(rio_data: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="3 bands"):
        vectorize_raster(rio_data / "RGB.byte.tif", tmp_path / "a.gpkg")
    with pytest.raises(Exception, match="integer class ids"):
        vectorize_raster(rio_data / "float.tif", tmp_path / "a.gpkg")
    with pytest.raises(ConfigError, match=r"\.gpkg"):
        vectorize_raster(rio_data / "byte.tif", tmp_path / "a.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson"])
def test_no_polygon_gives_an_empty_layer_and_a_warning(tmp_path: Path, suffix: str) -> None:
    data = np.full((40, 50), 255, dtype=np.uint8)
    data[:10] = 0  # background only
    mask = write_mask(tmp_path / "m.tif", data, "EPSG:32633", from_origin(400_000, 5_000_000, 1.0, 1.0))
    with pytest.warns(FastUNetWarning, match="no polygon of the selected classes"):
        result = vectorize_raster(mask, tmp_path / f"out{suffix}", VectorizeOptions(window_px=16))
    assert result.features == 0 and result.classes == ()
    assert polygon_info(tmp_path / f"out{suffix}")["features"] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_in_a_window_reach_the_caller(tmp_path: Path, workers: int) -> None:
    data = np.ones((40, 120), dtype=np.uint32)
    data[30, 100] = 2**31 + 5  # not a class id GDAL's polygoniser can hold
    profile = {"driver": "GTiff", "width": 120, "height": 40, "count": 1, "dtype": "uint32", "crs": "EPSG:32633",
               "transform": from_origin(400_000, 5_000_000, 1.0, 1.0)}
    with rasterio.open(tmp_path / "big.tif", "w", **profile) as dst:
        dst.write(data, 1)
    with pytest.raises(InputRasterError, match="int32 range near column 96, row 16"):
        vectorize_raster(tmp_path / "big.tif", tmp_path / "o.gpkg", VectorizeOptions(window_px=16, workers=workers))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_vectorize(spacenet: tuple[Path, gpd.GeoDataFrame], tmp_path: Path) -> None:
    mask, _ = spacenet
    runner = CliRunner()
    help_text = runner.invoke(vectorize, ["--help"]).output
    assert "Example:" in help_text and "fastunet-geo vectorize classes.tif -o" in help_text
    out = tmp_path / "b.gpkg"
    res = runner.invoke(vectorize, [str(mask), "-o", str(out), "--classes", "building", "--min-area", "2",
                                    "--simplify", "0.25", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "43 polygons" in res.output and "building: 43 polygons" in res.output
    assert polygon_info(out)["features"] == 43

    from fastunet_core.cli import _Group  # the group turns our errors into one line and exit code 1

    group = _Group(name="fastunet-geo", commands=[vectorize])
    again = runner.invoke(group, ["vectorize", str(mask), "-o", str(out)], obj={})
    assert again.exit_code == 1 and again.output.strip().splitlines() == [
        f"error: {out} exists; pass --overwrite to replace it"]
    bad = runner.invoke(group, ["vectorize", str(mask), "-o", str(tmp_path / "c.gpkg"), "--classes", "roads"],
                        obj={})
    assert bad.exit_code == 1 and len(bad.output.strip().splitlines()) == 1 and "unknown class 'roads'" in bad.output


def test_a_dead_worker_is_a_core_error() -> None:
    import subprocess
    import sys

    from fastunet_core.errors import FastUNetError, WorkerError
    from fastunet_core.polygons import vector_windows

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    with pytest.raises(WorkerError, match="exit code 3") as info:
        vector_windows._receive(proc)
    assert isinstance(info.value, FastUNetError)  # the CLI prints it as one line; the plugin as a message


def test_help_says_where_the_style_goes_and_how_to_read_the_polygons() -> None:
    text = CliRunner().invoke(vectorize, ["--help"]).output
    flat = " ".join(text.split())
    assert "written beside the output" not in flat  # a GeoPackage holds its style inside
    assert "inside a GeoPackage (its layer_styles table" in flat and "layer='b'" in flat, flat
    predict_help = " ".join(CliRunner().invoke(cli, ["predict", "--help"]).output.split())
    assert "read it with layer=" in predict_help and "(layer NAME_classes)" in predict_help


def test_preview_draws_the_polygons_of_one_of_our_geopackages(tmp_path: Path) -> None:
    from fastunet_core.io.preview import render_preview

    data = np.zeros((40, 50), dtype=np.uint8)
    data[10:30, 5:20], data[5:15, 30:45] = 1, 2
    mask = write_mask(tmp_path / "m.tif", data, "EPSG:32633", from_origin(400_000, 5_000_000, 1.0, 1.0))
    with rasterio.open(mask, "r+") as dst:  # the preview paints the classes in the raster's colour table
        dst.write_colormap(1, {c["id"]: (*c["color"], 255) for c in CLASSES})
    vectorize_raster(mask, tmp_path / "p.gpkg", VectorizeOptions())
    assert pyogrio.list_layers(tmp_path / "p.gpkg").tolist() == [["p", "Polygon"], ["layer_styles", None]]
    png = render_preview(mask, mask, tmp_path / "preview.png", outlines=tmp_path / "p.gpkg")  # no layer warning
    assert png.stat().st_size > 1000


def test_a_multiband_raster_given_to_vectorize_says_where_class_rasters_come_from_in_each_front_end(
        tmp_path: Path, rio_data: Path) -> None:
    from fastunet_core.errors import InputRasterError
    from fastunet_core.hints import speaking
    from fastunet_core.polygons.vectorize import vectorize_raster
    from qgis_plugin.words import QGIS

    with pytest.raises(InputRasterError, match="the output of 'fastunet-geo predict'"):
        vectorize_raster(rio_data / "rgb1.tif", tmp_path / "a.gpkg")
    with speaking(QGIS), pytest.raises(InputRasterError) as err:
        vectorize_raster(rio_data / "rgb1.tif", tmp_path / "b.gpkg")
    assert "the output of 'Segment raster' or the dock's Run" in str(err.value) and "fastunet-geo" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
