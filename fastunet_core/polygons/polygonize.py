"""Polygonise a class raster window by window, merging the polygons that cross window seams.

All geometry here is in the raster's global pixel coordinates (column, row). There every vertex of GDAL's
polygoniser is an integer, exactly representable as a double, so the pieces of one region found in two
neighbouring windows meet exactly on their seam and their union is exact. Map coordinates come from one
affine transform applied afterwards, never from per-window origins that could differ in the last bit.

Seam merge: a region cut by seams is found as one piece per window it reaches. A piece touches a seam when
its exterior ring runs along the window's edge there (holes never reach a window edge: what a hole holds
is surrounded by the piece). Two pieces on either side of a seam are one region exactly when some pixel
along the seam lies in both and they have the same class, which is 4-connectivity across the seam. Pieces
are linked with a union-find; a group is complete once none of its pieces lies on the seam below the window
row just processed, and is then unioned into one polygon. Polygons that touch no seam, nearly all of them,
pass through untouched. The result equals whole-raster polygonisation: same polygons, same count.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

CONNECTIVITY = 4  # like gdal_polygonize: pixels touching only at a corner are separate polygons


def window_rows(width: int, height: int, size: int) -> list[list[Window]]:
    """Partition a ``width`` x ``height`` raster into windows of at most ``size`` pixels square, as rows."""
    cols = [(c, min(size, width - c)) for c in range(0, width, size)]
    rows = [(r, min(size, height - r)) for r in range(0, height, size)]
    return [[Window(c, r, w, h) for c, w in cols] for r, h in rows]


@dataclass(frozen=True)
class PixelPolygons:
    """Polygons as flat coordinate arrays (global pixel coordinates), before any shapely object is built.

    ``xy`` holds every ring's vertices one after the other (each ring closed), ``ring_len`` the vertex
    count of each ring, ``rings_per_poly`` the ring count of each polygon (its exterior ring first).
    """

    xy: np.ndarray
    ring_len: np.ndarray
    rings_per_poly: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> PixelPolygons:
        """No polygon."""
        none = np.empty(0, dtype=np.int64)
        return cls(np.empty((0, 2)), none, none, none)

    @classmethod
    def concat(cls, parts: list[PixelPolygons]) -> PixelPolygons:
        """Join several sets into one."""
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("xy", "ring_len", "rings_per_poly",
                                                                              "ids")))

    def points_per_poly(self) -> np.ndarray:
        """Return each polygon's vertex count (all its rings)."""
        if len(self) == 0:
            return np.empty(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self.rings_per_poly)[:-1]])
        return np.add.reduceat(self.ring_len, starts)

    def bounds(self) -> np.ndarray:
        """Return each polygon's (xmin, ymin, xmax, ymax), as :func:`shapely.bounds` would."""
        if len(self) == 0:
            return np.empty((0, 4))
        per_poly = self.points_per_poly()
        starts = np.concatenate([[0], np.cumsum(per_poly)[:-1]])
        lo = np.minimum.reduceat(self.xy, starts, axis=0)
        hi = np.maximum.reduceat(self.xy, starts, axis=0)
        return np.column_stack([lo, hi])

    def select(self, keep: np.ndarray) -> PixelPolygons:
        """Return the polygons where ``keep`` is True."""
        return PixelPolygons(self.xy[np.repeat(keep, self.points_per_poly())],
                             self.ring_len[np.repeat(keep, self.rings_per_poly)], self.rings_per_poly[keep],
                             self.ids[keep])

    def geoms(self, xy: np.ndarray | None = None) -> np.ndarray:
        """Build the shapely polygons, from ``xy`` (the same vertices in other coordinates) if given."""
        if len(self) == 0:
            return np.empty(0, dtype=object)
        coords = self.xy if xy is None else xy
        linear = shapely.linearrings(coords, indices=np.repeat(np.arange(len(self.ring_len)), self.ring_len))
        return shapely.polygons(linear, indices=np.repeat(np.arange(len(self)), self.rings_per_poly))


def polygonize(values: np.ndarray, mask: np.ndarray | None, col_off: int, row_off: int,
               chunk: int = 128) -> PixelPolygons:
    """Return the polygons of ``values``'s 4-connected regions and their values, in global pixel coordinates.

    GDAL's output is turned into flat arrays ``chunk`` polygons at a time, so that rasterio's GeoJSON-like
    dicts (about 100 bytes per vertex) never exist for a whole window at once; a small chunk is read back
    while its dicts are still in the CPU's cache (128 rather than 4096: about 10 % less time in this step).

    Args:
        values: 2-D integer array (a window of the class raster).
        mask: True where pixels are to be polygonised, or None for all.
        col_off: Column of ``values[0, 0]`` in the raster.
        row_off: Row of ``values[0, 0]`` in the raster.
        chunk: Polygons converted per step.

    """
    found = rasterio.features.shapes(values, mask=mask, connectivity=CONNECTIVITY,
                                     transform=Affine.translation(col_off, row_off))
    parts = []
    while batch := list(itertools.islice(found, chunk)):
        ids = np.fromiter((v for _, v in batch), dtype=np.int64, count=len(batch))
        parts.append(rings_to_arrays([g["coordinates"] for g, _ in batch], ids))
    return PixelPolygons.concat(parts)


def touches_seam(bounds: np.ndarray, window: Window, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Return which polygons (by their bounds) reach an inner edge of ``window`` (a seam), and which its bottom."""
    x0, y0 = int(window.col_off), int(window.row_off)
    x1, y1 = x0 + int(window.width), y0 + int(window.height)
    on_bottom = (bounds[:, 3] == y1) & (y1 < height)
    touch = (((bounds[:, 0] == x0) & (x0 > 0)) | ((bounds[:, 2] == x1) & (x1 < width))
             | ((bounds[:, 1] == y0) & (y0 > 0)) | on_bottom)
    return touch, on_bottom


def rings_to_arrays(polys: list[list[list[tuple[float, float]]]], ids: np.ndarray) -> PixelPolygons:
    """Turn GeoJSON-style ring lists into flat arrays in a few vectorised calls (no per-polygon objects)."""
    if not polys:
        return PixelPolygons.empty()
    rings_per_poly = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
    rings = list(itertools.chain.from_iterable(polys))
    ring_len = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(rings))
    xy = np.fromiter(flat, dtype=np.float64, count=2 * int(ring_len.sum())).reshape(-1, 2)
    return PixelPolygons(xy, ring_len, rings_per_poly, ids)


def densify_unit(polys: np.ndarray) -> np.ndarray:
    """Put a vertex on every pixel corner along the boundaries of axis-aligned, integer-vertex polygons.

    Neighbouring polygons then share identical vertices along every shared edge (a valid coverage, which
    coverage simplification needs). Exact, unlike ``shapely.segmentize``, whose interpolation can land a
    hair off the integer.
    """
    if len(polys) == 0:
        return polys
    rings, poly_of_ring = shapely.get_rings(polys, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    step = np.zeros_like(xy)
    steps = np.ones(len(xy), dtype=np.int64)  # the closing vertex of each ring is kept once
    inner = np.flatnonzero(ring_of[:-1] == ring_of[1:])
    delta = xy[inner + 1] - xy[inner]
    length = np.abs(delta).sum(axis=1)
    steps[inner] = length.astype(np.int64)
    nonzero = length > 0
    step[inner[nonzero]] = delta[nonzero] / length[nonzero, None]
    k = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    dense = np.repeat(xy, steps, axis=0) + k[:, None] * np.repeat(step, steps, axis=0)
    new_rings = shapely.linearrings(dense, indices=np.repeat(ring_of, steps))
    return shapely.polygons(new_rings, indices=poly_of_ring)


@dataclass(frozen=True)
class _Side:
    """The stretches of one window side that pieces run along: piece ids, class values, [lo, hi) in pixels."""

    piece: np.ndarray
    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def paint(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Return, per pixel along the seam from ``start``, the piece id there (-1: none) and its class."""
        piece = np.full(length, -1, dtype=np.int64)
        value = np.full(length, -1, dtype=np.int64)
        n = (self.hi - self.lo).astype(np.int64)
        total = int(n.sum())
        pos = np.repeat(self.lo.astype(np.int64) - start, n) + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))
        piece[pos] = np.repeat(self.piece, n)
        value[pos] = np.repeat(self.value, n)
        return piece, value


def _sides(pieces: np.ndarray, ids: np.ndarray, values: np.ndarray, window: Window) -> dict[str, _Side]:
    """Find where each piece's exterior ring runs along each of the window's four edges."""
    x0, y0 = int(window.col_off), int(window.row_off)
    x1, y1 = x0 + int(window.width), y0 + int(window.height)
    xy, owner = shapely.get_coordinates(shapely.get_exterior_ring(pieces), return_index=True)
    same = np.flatnonzero(owner[:-1] == owner[1:])
    a, b, who = xy[same], xy[same + 1], owner[same]
    vertical = a[:, 0] == b[:, 0]
    horizontal = a[:, 1] == b[:, 1]
    out = {}
    for name, on_line, axis, coord in (("left", vertical, 0, x0), ("right", vertical, 0, x1),
                                       ("top", horizontal, 1, y0), ("bottom", horizontal, 1, y1)):
        sel = on_line & (a[:, axis] == coord)
        along = 1 - axis
        lo = np.minimum(a[sel, along], b[sel, along])
        hi = np.maximum(a[sel, along], b[sel, along])
        out[name] = _Side(ids[who[sel]], values[who[sel]], lo, hi)
    return out


def _links(first: _Side, second: _Side, start: int, length: int) -> np.ndarray:
    """Return the (piece, piece) pairs facing each other across a seam with the same class, as rows."""
    pa, va = first.paint(start, length)
    pb, vb = second.paint(start, length)
    joined = (pa >= 0) & (pb >= 0) & (va == vb)
    if not joined.any():
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.stack([pa[joined], pb[joined]], axis=1), axis=0)


class SeamMerger:
    """Take each window's seam pieces in row-major order; hand back finished polygons, merged across seams.

    Memory holds only pieces that touch a seam and whose region is not complete yet: those of the current
    window row, plus regions still growing downwards.
    """

    def __init__(self, width: int, height: int, drop_collinear: bool = True) -> None:
        """Merge pieces of a ``width`` x ``height`` raster.

        Args:
            width: Raster width in pixels.
            height: Raster height in pixels.
            drop_collinear: Remove the vertices a union leaves on straight edges, as whole-raster
                polygonisation has none there. Keep them for coverage-simplified pieces: their seam edges
                hold a vertex at every pixel corner, and so do their neighbours', which keeps the shared
                edges vertex for vertex identical (a valid coverage).

        """
        self.width = width
        self.height = height
        self.drop_collinear = drop_collinear
        self._geom: dict[int, shapely.Polygon] = {}
        self._value: dict[int, int] = {}
        self._parent: dict[int, int] = {}
        self._right: dict[int, _Side] = {}  # right side of the previous window in this row, by its column
        self._bottom_above: dict[int, _Side] = {}  # bottom sides of the row above, by column
        self._bottom_here: dict[int, _Side] = {}
        self._open: list[np.ndarray] = []  # pieces on the bottom seam of the current row
        self._next_id = 0

    def add(self, col: int, window: Window, pieces: np.ndarray, values: np.ndarray) -> None:
        """Hold the seam pieces (see :func:`touches_seam`) of the window in column ``col`` of the current row."""
        if len(pieces) == 0:
            return
        _, on_bottom = touches_seam(shapely.bounds(pieces), window, self.width, self.height)
        self._keep(col, window, pieces, values, on_bottom)

    def _keep(self, col: int, window: Window, pieces: np.ndarray, values: np.ndarray, on_bottom: np.ndarray) -> None:
        ids = np.arange(self._next_id, self._next_id + len(pieces))
        self._next_id += len(pieces)
        for i, g, v in zip(ids.tolist(), pieces, values.tolist(), strict=True):
            self._geom[i] = g
            self._value[i] = v
            self._parent[i] = i
        sides = _sides(pieces, ids, values, window)
        left = self._right.pop(col - 1, None)
        if left is not None:
            self._union_pairs(_links(left, sides["left"], int(window.row_off), int(window.height)))
        above = self._bottom_above.pop(col, None)
        if above is not None:
            self._union_pairs(_links(above, sides["top"], int(window.col_off), int(window.width)))
        self._right[col] = sides["right"]
        self._bottom_here[col] = sides["bottom"]
        self._open.append(ids[on_bottom])

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    def _union_pairs(self, pairs: np.ndarray) -> None:
        for a, b in pairs.tolist():
            ra, rb = self._find(a), self._find(b)
            if ra != rb:
                self._parent[max(ra, rb)] = min(ra, rb)

    def finish_row(self) -> tuple[np.ndarray, np.ndarray]:
        """Close the window row just added; return the merged polygons of regions that can grow no more."""
        open_roots = {self._find(i) for i in np.concatenate(self._open).tolist()} if self._open else set()
        groups: dict[int, list[int]] = defaultdict(list)
        for i in list(self._geom):
            root = self._find(i)
            if root not in open_roots:
                groups[root].append(i)
        geoms: list[shapely.Geometry] = []
        values: list[int] = []
        merged: list[int] = []  # positions of polygons unioned from several pieces
        for members in groups.values():
            value = self._value[members[0]]
            if len(members) > 1:
                parts = shapely.get_parts(shapely.union_all([self._geom[i] for i in members]))
                merged.extend(range(len(geoms), len(geoms) + len(parts)))
            else:
                parts = [self._geom[members[0]]]
            geoms.extend(parts)
            values.extend([value] * len(parts))
            for i in members:
                del self._geom[i], self._value[i]
        for members in groups.values():  # parents only after every find above
            for i in members:
                del self._parent[i]
        self._right.clear()
        self._bottom_above, self._bottom_here = self._bottom_here, {}
        self._open = []
        out = np.array(geoms, dtype=object)
        if self.drop_collinear:  # a union keeps the vertices the seams left on straight edges
            out[merged] = shapely.simplify(out[merged], 0.0, preserve_topology=True)
        return out, np.array(values, dtype=np.int64)

