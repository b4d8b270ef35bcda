"""Map coordinates, areas and perimeters in metres for polygons built in pixel space, in any CRS.

One of two methods is chosen per raster:

- ``planar``: a projected CRS whose area scale is nearly true over the raster (within 1 %: UTM, national
  grids, equal-area projections). Area and length in the CRS's own units, converted to metres, as GIS
  tools report them.
- ``ellipsoidal``: a geographic CRS (degrees), or a projection that distorts areas (Web Mercator...).
  Areas are taken on a cylindrical equal-area projection of the CRS's own ellipsoid (EPSG:6933's kind),
  which is exact for area; north-up pixels in degrees or Mercator map to axis-aligned rectangles there, so
  straight edges add no chord error either. Perimeters are true lengths on the ellipsoid: edges along a
  parallel as arcs of that parallel, other edges as geodesics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
import shapely
from affine import Affine
from pyproj.crs import GeographicCRS, ProjectedCRS
from pyproj.crs.coordinate_operation import LambertCylindricalEqualAreaConversion

MAX_AREA_DISTORTION = 0.01  # planar areas are used while the CRS's area scale stays within 1 % of true


@dataclass(frozen=True)
class Measurer:
    """Turn pixel-space polygons into map coordinates and measure them in metres."""

    transform: Affine
    method: str  # "planar" or "ellipsoidal"
    unit_m: float  # metres per CRS unit (planar)
    pixel_size_m: float  # square root of one pixel's area at the raster's centre
    to_lonlat: pyproj.Transformer | None = None
    to_equal_area: pyproj.Transformer | None = None
    ellipsoid: tuple[float, float] = (6378137.0, 0.0066943799901413165)  # semi-major axis, e**2

    @classmethod
    def for_raster(cls, crs_wkt: str, transform: Affine, width: int, height: int) -> Measurer:
        """Choose the method for a raster's CRS and grid (see the module docstring)."""
        crs = pyproj.CRS.from_wkt(crs_wkt)
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        geodetic = crs.geodetic_crs
        if geodetic is None:  # a local engineering CRS: nothing to project to
            return cls(transform, "planar", unit, abs(transform.determinant) ** 0.5 * unit)
        lonlat_crs = GeographicCRS(datum=geodetic.datum)  # longitude, latitude in degrees, whatever the CRS's unit
        to_lonlat = pyproj.Transformer.from_crs(crs, lonlat_crs, always_xy=True)
        corners = np.array([(width / 2, height / 2), (0, 0), (width, 0), (0, height), (width, height)], float)
        lon, lat = to_lonlat.transform(*_apply(transform, corners).T)
        if crs.is_projected and _area_scale_ok(crs, lon, lat):
            return cls(transform, "planar", unit, abs(transform.determinant) ** 0.5 * unit)
        ell = geodetic.ellipsoid
        if ell is None:  # a geographic CRS always has one
            raise RuntimeError(f"the CRS {crs.name!r} has no ellipsoid")
        a = ell.semi_major_metre
        e2 = 1.0 - (ell.semi_minor_metre / a) ** 2
        equal_area = ProjectedCRS(LambertCylindricalEqualAreaConversion(0.0, float(lon[0])), geodetic_crs=geodetic)
        centre = np.array([(width / 2, height / 2), (width / 2 + 1, height / 2), (width / 2, height / 2 + 1)])
        lon, lat = to_lonlat.transform(*_apply(transform, centre).T)
        geod = pyproj.Geod(a=a, es=e2)
        dx = geod.inv(lon[0], lat[0], lon[1], lat[1])[2]
        dy = geod.inv(lon[0], lat[0], lon[2], lat[2])[2]
        return cls(transform, "ellipsoidal", 1.0, float(np.sqrt(dx * dy)), to_lonlat,
                   pyproj.Transformer.from_crs(crs, equal_area, always_xy=True), (a, e2))

    @property
    def geod(self) -> pyproj.Geod:
        """The ellipsoid, for geodesic lengths."""
        a, e2 = self.ellipsoid
        return pyproj.Geod(a=a, es=e2)

    def describe(self) -> str:
        """Say in a few words how areas are computed."""
        if self.method == "planar":
            return "planar, in the raster's projected CRS"
        return "on an equal-area projection of the CRS's ellipsoid (cylindrical equal-area); geodesic perimeters"

    def to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Return ``geoms`` (pixel coordinates) in the raster's CRS."""
        return shapely.transform(geoms, self.apply)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Return (column, row) coordinates, an (n, 2) array, in the raster's CRS."""
        return _apply(self.transform, xy)

    def area_m2(self, geoms: np.ndarray) -> np.ndarray:
        """Return the areas in square metres of polygons in the raster's CRS."""
        if self.method == "planar" or len(geoms) == 0:
            return shapely.area(geoms) * self.unit_m**2
        proj = self.to_equal_area
        if proj is None:
            raise RuntimeError("an ellipsoidal Measurer needs its equal-area transformer")
        return shapely.area(shapely.transform(geoms, lambda xy: np.column_stack(proj.transform(xy[:, 0], xy[:, 1]))))

    def perimeter_m(self, geoms: np.ndarray) -> np.ndarray:
        """Return the perimeters in metres (all rings: outline and holes) of polygons in the raster's CRS."""
        if self.method == "planar" or len(geoms) == 0:
            return shapely.length(geoms) * self.unit_m
        if self.to_lonlat is None:
            raise RuntimeError("an ellipsoidal Measurer needs its geographic transformer")
        rings, poly_of_ring = shapely.get_rings(geoms, return_index=True)
        xy, ring_of = shapely.get_coordinates(rings, return_index=True)
        lon, lat = self.to_lonlat.transform(xy[:, 0], xy[:, 1])
        seg = np.flatnonzero(ring_of[:-1] == ring_of[1:])
        lengths = self._edge_lengths(lon[seg], lat[seg], lon[seg + 1], lat[seg + 1])
        per_ring = np.bincount(ring_of[seg], weights=lengths, minlength=len(rings))
        return np.bincount(poly_of_ring, weights=per_ring, minlength=len(geoms))

    def _edge_lengths(self, lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
        """Return true edge lengths: arcs of a parallel where both ends share a latitude, else geodesics."""
        a, e2 = self.ellipsoid
        out = np.empty(len(lon1))
        parallel = lat1 == lat2
        phi = np.radians(lat1[parallel])
        radius = a * np.cos(phi) / np.sqrt(1.0 - e2 * np.sin(phi) ** 2)  # of the parallel
        out[parallel] = radius * np.abs(np.radians(lon2[parallel] - lon1[parallel]))
        other = ~parallel
        if other.any():
            out[other] = self.geod.inv(lon1[other], lat1[other], lon2[other], lat2[other])[2]
        return out


def _apply(t: Affine, xy: np.ndarray) -> np.ndarray:
    """Apply an affine transform to an (n, 2) array of (column, row) or (x, y)."""
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])


def _area_scale_ok(crs: pyproj.CRS, lon: np.ndarray, lat: np.ndarray) -> bool:
    """Return True when the projection's area scale is within 1 % of true at all the given points."""
    try:
        scale = np.asarray(pyproj.Proj(crs).get_factors(lon, lat, errcheck=True).areal_scale, dtype=float)
    except (pyproj.exceptions.ProjError, ValueError):
        return False
    return bool(np.all(np.isfinite(scale)) and np.all(np.abs(scale - 1.0) <= MAX_AREA_DISTORTION))
