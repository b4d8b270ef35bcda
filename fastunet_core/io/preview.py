"""Quick-look pictures: the input image beside its class map, with a legend of class colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from fastunet_core.io.atomic import atomic_output
from fastunet_core.io.class_tag import classes_from_tags
from fastunet_core.models.metadata import OUTPUT_NODATA


def _read_small(path: Path, max_side: int, resampling: Resampling, bands: list[int] | None = None) -> np.ndarray:
    with rasterio.open(path) as ds:
        scale = min(1.0, max_side / max(ds.width, ds.height))
        shape = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        idx = bands or list(range(1, min(ds.count, 3) + 1))
        return ds.read(idx, out_shape=(len(idx), *shape), resampling=resampling)


def _stretch(img: np.ndarray) -> np.ndarray:
    out = np.zeros(img.shape, dtype=np.float32)
    for i, band in enumerate(img.astype(np.float32)):
        lo, hi = np.percentile(band, (2, 98)) if band.size else (0, 1)
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def render_preview(image: str | Path, classes: str | Path, png: str | Path, max_side: int = 1024,
                   title: str | None = None, outlines: str | Path | None = None,
                   outlines_label: str = "reference polygons") -> Path:
    """Write a PNG showing ``image`` (RGB or grey) beside the class raster ``classes`` in its colours.

    ``outlines`` (any vector file) are drawn on both panels, e.g. reference labels to compare with.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's mpl_toolkits (system site packages) beside the venv's matplotlib
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    rgb = _stretch(_read_small(Path(image), max_side, Resampling.average))
    rgb = np.repeat(rgb, 3, axis=0) if rgb.shape[0] == 1 else rgb[:3]
    cls = _read_small(Path(classes), max_side, Resampling.mode, [1])[0]
    with rasterio.open(classes) as ds:
        cmap = ds.colormap(1)
        info = classes_from_tags(ds.tags())
    lut = np.zeros((256, 4), dtype=np.float32)
    for value, rgba in cmap.items():
        lut[value] = np.asarray(rgba, dtype=np.float32) / 255.0
    lut[OUTPUT_NODATA] = (0, 0, 0, 0)
    with rasterio.open(classes) as ds:
        b = ds.bounds
        extent = (b.left, b.right, b.bottom, b.top)
        crs = ds.crs
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4), dpi=100)
    axes[0].imshow(np.moveaxis(rgb, 0, -1), extent=extent)
    axes[0].set_title("input")
    axes[1].imshow(lut[cls], extent=extent, interpolation="nearest")
    axes[1].set_title("classes")
    handles = [Patch(color=(c.color[0] / 255, c.color[1] / 255, c.color[2] / 255),
                     label=f"{c.id} {c.name}") for c in info]
    if outlines is not None:
        import geopandas as gpd
        import pyogrio

        # the first layer, as geopandas reads by default, named: a GeoPackage we wrote also holds layer_styles
        shapes = gpd.read_file(outlines, layer=pyogrio.list_layers(outlines)[0][0])
        if crs is not None and shapes.crs is not None:
            shapes = shapes.to_crs(crs)
        for ax in axes:
            shapes.boundary.plot(ax=ax, color="#ffff00", linewidth=0.8)
        handles.append(Patch(facecolor="none", edgecolor="#ffff00", label=outlines_label))
    for ax in axes:
        ax.set_axis_off()
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    target = Path(png)
    with atomic_output(target, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return target
