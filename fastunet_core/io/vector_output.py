"""Vector outputs: GeoPackage, Shapefile or GeoJSON written in batches through pyogrio, plus a QGIS style.

Everything is written into a temporary folder beside the target and moved into place when complete, the
Shapefile's sidecars (.shx .dbf .prj .cpg) and the ``.qml`` style included; an existing output is replaced
only when overwriting is allowed. Formats:

- GeoPackage (default): version 1.2 (``VERSION=1.2``), which older QGIS/GDAL read without a warning. The
  style goes inside, into the ``layer_styles`` table (:func:`fastunet_core.io.styles.embed_style`), not
  beside: QGIS applies it wherever the file goes, and it never competes with a class raster's ``X.qml``.
  :meth:`VectorSink.write_all` writes all batches in one session (pyogrio's Arrow path), so GDAL builds the
  R-tree once at the end rather than row by row as it does for batches appended in later sessions.
- Shapefile: field names cut to 10 characters (``perimeter_m`` -> ``perim_m``), UTF-8 ``.cpg``; refused,
  with a hint to use a GeoPackage, when a file would pass 2 GB or a class name 254 bytes.
- GeoJSON: RFC 7946, so reprojected to WGS84 lon/lat, right-hand rule, no ``crs`` member. Batches go to
  GeoJSON-sequence parts that are joined at the end, so memory stays bounded here too.

A Shapefile's or GeoJSON's style goes to ``X.qml``, where QGIS finds it, unless that holds another output's
style: then to ``X.<ext>.qml`` with a warning (:mod:`fastunet_core.io.styles`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from xml.etree import ElementTree as ET

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import shapely

from fastunet_core.errors import KeptStyleWarning, OutputLimitError, OutputWriteError
from fastunet_core.hints import setting
from fastunet_core.io.arrow_stream import BatchStream, Column
from fastunet_core.io.atomic import check_writable
from fastunet_core.io.output_files import output_paths, vector_format
from fastunet_core.io.styles import embed_style, plan_style
from fastunet_core.io.targets import Role
from fastunet_core.io.vector_fields import SHAPEFILE_STRING_BYTES, field_names
from fastunet_core.io.write_errors import converted, describe, describe_os_error
from fastunet_core.runtime.signals import signals_held

SHAPEFILE_MAX_BYTES = 2**31 - 1
RTREE_RAM_BYTES = 16 << 20  # 1,037,487 polygons: peak 394 MiB instead of 420 MiB, no slower (README, vectorize)
_ARROW_COLUMNS = (Column("class_id", "int32"), Column("class_name", "string"), Column("area_m2", "float64"),
                  Column("perimeter_m", "float64"), Column("geom", "binary"))  # FeatureBatch.fields, then the WKB


def output_roles(target: Path, label: str = "vector output") -> list[Role]:
    """Return every file an output writes (main file, sidecars, ``.qml`` style), labelled for clash checks."""
    return ([Role(label, target)] + [Role(f"{label}'s {p.suffix} sidecar", p) for p in output_paths(target)[1:]]
            + [Role(f"{label}'s style", target.with_suffix(".qml"))])


def check_outputs(target: Path, overwrite: bool) -> None:
    """Raise before any work if an output file exists (without ``overwrite``) or cannot be written.

    The ``.qml`` style is not checked: it is shared by outputs of the same name in other formats, so an
    existing one is kept (with a warning) rather than blocking the data.
    """
    for path in output_paths(target):
        check_writable(path, overwrite)


class StyledClass(Protocol):
    """A class to style: a model's ClassInfo, or a class a raster holds without naming it (any pixel value)."""

    @property
    def id(self) -> int: ...  # noqa: D102
    @property
    def name(self) -> str: ...  # noqa: D102
    @property
    def color(self) -> tuple[int, int, int]: ...  # noqa: D102


@dataclass
class FeatureBatch:
    """Features to write: polygons (WKB) in the raster's CRS and their attributes, one entry per feature."""

    wkb: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray
    area_m2: np.ndarray
    perimeter_m: np.ndarray

    def __len__(self) -> int:
        return len(self.wkb)

    def fields(self, shapefile: bool) -> tuple[list[str], list[np.ndarray]]:
        """Return field names and columns (Shapefile names fit its 10 characters)."""
        return field_names(shapefile), [self.class_id.astype(np.int32), self.class_name.astype(object),
                       self.area_m2.astype(np.float64), self.perimeter_m.astype(np.float64)]


class VectorSink:
    """Write feature batches into a temporary folder; :meth:`commit` moves the finished files into place."""

    def __init__(self, target: Path, crs_wkt: str, geometry_type: str, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.fmt = vector_format(self.target)
        self.layer = self.target.stem
        self.crs_wkt = crs_wkt
        self.geometry_type = geometry_type
        self.overwrite = overwrite
        check_outputs(self.target, overwrite)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.target.stem}.", suffix=".tmp", dir=self.target.parent))
        self.features = 0
        self._parts: list[Path] = []
        self._embedded_style: str | None = None
        self._to_wgs84 = (pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(crs_wkt), "EPSG:4326", always_xy=True)
                          if self.fmt.driver == "GeoJSON" else None)

    @property
    def _file(self) -> Path:
        return self.folder / self.target.name

    def write(self, batch: FeatureBatch) -> None:
        """Append a batch of features."""
        if len(batch) == 0:
            return
        if self.fmt.driver == "GeoJSON":
            self._write_geojson_part(batch)
        elif self.fmt.driver == "ESRI Shapefile":
            self._check_shapefile_room(batch)
            self._write(self._file, batch, shapefile=True)
        else:
            self._write(self._file, batch, dataset_options={"VERSION": "1.2"} if self.features == 0 else None)
        self.features += len(batch)

    def write_all(self, batches: Iterator[FeatureBatch]) -> None:
        """Write every batch ``batches`` yields (pulled one at a time, so memory holds one batch).

        A GeoPackage is written in one session through pyogrio's Arrow path (:mod:`fastunet_core.io.arrow_stream`):
        GDAL then builds the R-tree once at the end instead of row by row, with the same rows in the file.
        An exception raised by ``batches`` comes out of here as it was raised.
        """
        try:
            if self.fmt.driver != "GPKG":
                for batch in batches:
                    self.write(batch)
                return
            stream = BatchStream(_ARROW_COLUMNS, self._arrow_batches(batches))
            try:
                # the temp file is fsynced once, at the end; GDAL's in-memory R-tree (default cap: 10 % of the
                # RAM) kept to RTREE_RAM_BYTES, past which GDAL builds it on disk, so memory stays flat
                with (_gdal_config(OGR_SQLITE_SYNCHRONOUS="OFF", OGR_GPKG_MAX_RAM_USAGE_RTREE=str(RTREE_RAM_BYTES)),
                      signals_held() as held):
                    stream.hand_on_signals(held)
                    pyogrio.raw.write_arrow(stream, str(self._file), layer=self.layer, driver=self.fmt.driver,
                                            geometry_name="geom", geometry_type=self.geometry_type, crs=self.crs_wkt,
                                            append=self._file.exists(),
                                            dataset_options=None if self._file.exists() else {"VERSION": "1.2"})
            except Exception:
                stream.reraise()  # the batches' own error (a cancel, a bad window) rather than GDAL's echo of it
                raise
            stream.reraise()
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # a generator left early: run its clean-up (e.g. stop worker processes) now
                close()

    def _arrow_batches(self, batches: Iterator[FeatureBatch]) -> Iterator[list[np.ndarray]]:
        for batch in batches:
            if len(batch):
                _, columns = batch.fields(shapefile=False)
                self.features += len(batch)
                yield [*columns, batch.wkb]

    def _write(self, path: Path, batch: FeatureBatch, shapefile: bool = False, driver: str | None = None,
               crs: str | None = None, **options: Any) -> None:
        names, columns = batch.fields(shapefile)
        append = path.exists()
        with _gdal_config(OGR_SQLITE_SYNCHRONOUS="OFF"):  # the temp file is fsynced once, at the end
            pyogrio.raw.write(str(path), batch.wkb, columns, names, layer=self.layer, driver=driver or self.fmt.driver,
                              geometry_type=self.geometry_type, crs=crs or self.crs_wkt, append=append,
                              encoding="UTF-8" if shapefile else None, **options)

    def _write_geojson_part(self, batch: FeatureBatch) -> None:
        """Write a batch, in WGS84 with RFC 7946 conventions, as its own GeoJSON-sequence part."""
        proj = self._to_wgs84
        if proj is None:
            raise RuntimeError("a GeoJSON sink needs its WGS84 transformer")
        lonlat = shapely.transform(shapely.from_wkb(batch.wkb),
                                   lambda xy: np.column_stack(proj.transform(xy[:, 0], xy[:, 1])))
        part = self.folder / f"part{len(self._parts):05d}.geojsons"
        wgs84 = FeatureBatch(shapely.to_wkb(lonlat), batch.class_id, batch.class_name, batch.area_m2,
                             batch.perimeter_m)
        self._write(part, wgs84, driver="GeoJSONSeq", crs="EPSG:4326")
        self._parts.append(part)

    def _check_shapefile_room(self, batch: FeatureBatch) -> None:
        """Refuse (before writing) a batch that would push the .shp or .dbf past 2 GB, or too long a name."""
        long = [n for n in set(batch.class_name.tolist()) if len(str(n).encode()) > SHAPEFILE_STRING_BYTES]
        if long:
            raise OutputLimitError(f"class name {long[0][:40]!r}... is longer than a Shapefile field can hold "
                                   f"({SHAPEFILE_STRING_BYTES} bytes); write a GeoPackage instead (-o "
                                   f"{self.target.with_suffix('.gpkg').name})")
        shp, dbf = self._file, self._file.with_suffix(".dbf")
        shp_size = shp.stat().st_size if shp.exists() else 100
        dbf_size, record = _dbf_size_and_record(dbf)
        # a .shp polygon record is 8 + 44 + 4 per ring + 16 per vertex bytes; its WKB, 9 + 4 per ring + 16 per
        # vertex (a multipolygon's WKB is a little longer): so WKB length + 43 bounds the record
        shp_after = shp_size + sum(len(w) + 43 for w in batch.wkb.tolist())
        dbf_after = dbf_size + record * len(batch)
        if max(shp_after, dbf_after) > SHAPEFILE_MAX_BYTES:
            raise OutputLimitError(
                f"{self.target.name} would pass the Shapefile's 2 GB limit (after {self.features:,} features); "
                f"write a GeoPackage instead (-o {self.target.with_suffix('.gpkg').name}), or simplify / drop "
                f"small polygons ({setting('simplify')}, {setting('min_area')})")

    def write_style(self, classes: Sequence[StyledClass]) -> None:
        """Write the QML style where QGIS finds it when it opens the layer: inside a GeoPackage, else beside."""
        qml = qml_style(classes)
        if self.fmt.driver == "GPKG":
            self._embedded_style = qml  # stored when the file is complete (see commit)
            return
        (self.folder / self.target.with_suffix(".qml").name).write_text(qml, encoding="utf-8")

    def _ensure_layer(self) -> None:
        """Create the (empty) layer if no feature was written, so the output always opens."""
        if self.fmt.driver == "GeoJSON" or self._file.exists():
            return
        empty = FeatureBatch(np.empty(0, dtype=object), np.empty(0, np.int32), np.empty(0, object),
                             np.empty(0), np.empty(0))
        options: dict[str, Any] = {"dataset_options": {"VERSION": "1.2"}} if self.fmt.driver == "GPKG" else {}
        self._write(self._file, empty, shapefile=self.fmt.driver == "ESRI Shapefile", **options)

    def commit(self) -> list[Path]:
        """Finish the files and move them into place; return the paths written."""
        self._ensure_layer()
        if self.fmt.driver == "GeoJSON":
            _join_geojson_parts(self._parts, self._file, self.layer)
        self._check_complete()
        if self._embedded_style is not None:
            embed_style(self._file, self.layer, self._embedded_style)
        written = []
        for path in [*output_paths(self.target)[1:], self.target]:  # the main file last: it is what readers open
            tmp = self.folder / path.name
            if tmp.exists():
                _fsync(tmp)
                written.append(path)
        check_outputs(self.target, self.overwrite)  # again: something may have appeared meanwhile
        written += self._place_style()
        if self.overwrite:
            for suffix in self.fmt.stale:
                with contextlib.suppress(FileNotFoundError):
                    self.target.with_suffix(suffix).unlink()
        for path in written:
            os.replace(self.folder / path.name, path)
        self.discard()
        return sorted(written, key=lambda p: p != self.target)  # the main file first

    def _check_complete(self) -> None:
        """Raise if the finished file does not hold every feature written (a write that failed unreported)."""
        if self.fmt.driver == "GeoJSON":  # written by Python's own file calls, whose errors raise
            return
        try:
            found = pyogrio.read_info(str(self._file), layer=self.layer)["features"]
        except Exception as exc:  # unreadable: the file is damaged
            raise OutputWriteError(describe(self.target, f"the written file cannot be read back ({exc})")) from exc
        if found != self.features:
            raise OutputWriteError(describe(self.target, f"{found:,} of {self.features:,} features reached the file"))

    def _place_style(self) -> list[Path]:
        """Decide where the style goes (:mod:`fastunet_core.io.styles`); return it if it is to be moved in place."""
        tmp = self.folder / self.target.with_suffix(".qml").name
        if not tmp.exists():
            return []
        plan = plan_style(self.target, tmp.read_text(encoding="utf-8"), self.overwrite)
        if plan.warning:
            warnings.warn(plan.warning, KeptStyleWarning, stacklevel=3)
        if plan.path is None:
            return []
        if plan.path.name != tmp.name:
            os.replace(tmp, self.folder / plan.path.name)
        return [plan.path]

    def discard(self) -> None:
        """Delete the temporary folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def open_sink(target: Path, crs_wkt: str, geometry_type: str, overwrite: bool = False) -> Iterator[VectorSink]:
    """Yield a :class:`VectorSink`; if the block raises, nothing is left behind (the target is untouched)."""
    try:
        sink = VectorSink(target, crs_wkt, geometry_type, overwrite)
    except OSError as exc:
        raise OutputWriteError(describe_os_error(exc, target.parent, "cannot write in the folder")) from exc
    try:
        with converted(target):  # a full disk, a read-only folder: one line naming the output and the cause
            yield sink
    except BaseException:
        sink.discard()
        raise


@contextlib.contextmanager
def _gdal_config(**options: str) -> Iterator[None]:
    """Set GDAL config options in pyogrio's GDAL for the duration of a block, then restore them."""
    old = {k: pyogrio.get_gdal_config_option(k) for k in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(old)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _dbf_size_and_record(dbf: Path) -> tuple[int, int]:
    """Return a .dbf's size and record length (an upper bound for our fields before the file exists)."""
    if not dbf.exists():
        return 32 + 32 * 4 + 1, 1 + 11 + SHAPEFILE_STRING_BYTES + 24 + 24
    with open(dbf, "rb") as f:
        header = f.read(12)
    return dbf.stat().st_size, int.from_bytes(header[10:12], "little")


def _join_geojson_parts(parts: Sequence[Path], target: Path, name: str) -> None:
    """Write one RFC 7946 FeatureCollection from GeoJSON-sequence parts (one feature per line), streaming."""
    first = True
    try:
        with open(target, "w", encoding="utf-8") as out:
            out.write('{\n"type": "FeatureCollection",\n"name": ' + _json_string(name) + ',\n"features": [\n')
            for part in parts:
                with open(part, encoding="utf-8") as f:
                    for line in f:
                        line = line.strip().lstrip("\x1e")
                        if not line:
                            continue
                        out.write(line if first else ",\n" + line)
                        first = False
                part.unlink()
            out.write("\n]\n}\n")
    except OSError as exc:
        raise OutputWriteError(f"could not write {target.name}: {exc}") from exc


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def qml_style(classes: Sequence[StyledClass], field: str = "class_id") -> str:
    """Return a QGIS style (QML) that colours polygons by ``field`` with each class's colour and name."""
    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=field, forceraster="0",
                             symbollevels="0", enableorderby="0", referencescale="-1")
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(categories, "category", value=str(c.id), symbol=str(i), label=c.name, render="true",
                      type="long")
        symbols.append(_fill_symbol(str(i), c.color))
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygon
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


FILL_ALPHA = 90  # of 255: the imagery under the polygons stays visible; the outline carries the class colour


def _fill_symbol(name: str, color: tuple[int, int, int]) -> ET.Element:
    """Return a QGIS simple-fill symbol: a see-through fill and a solid outline, both in the class's colour."""
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in (("color", _rgba(color, FILL_ALPHA)), ("outline_color", _rgba(color)),
                       ("outline_style", "solid"), ("outline_width", "0.46"), ("outline_width_unit", "MM"),
                       ("style", "solid"), ("joinstyle", "bevel")):
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    return symbol


def _rgba(color: Sequence[int], alpha: int = 255) -> str:
    return ",".join(str(int(v)) for v in (*color[:3], alpha))
