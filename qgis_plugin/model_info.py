"""Describe a checkpoint's metadata for the dock: architecture, classes with colour swatches, bands, tile."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastunet_core.models.metadata import ModelMeta


def model_summary_html(meta: ModelMeta) -> str:
    """Return a short rich-text description of a model (Qt's HTML subset)."""
    inp = meta.input
    lo, hi = inp.value_range
    rows = [
        ("Architecture", html.escape(meta.architecture)),
        ("Bands", f"{', '.join(str(b) for b in inp.bands)} ({html.escape(inp.dtype)}, {lo:g}..{hi:g})"),
        ("Tile", f"{meta.tile_size_px} px, overlap {meta.overlap_px} px"),
    ]
    if meta.resolution_m:
        rows.append(("Resolution", f"{meta.resolution_m:g} m"))
    miou = meta.metrics.get("val_miou") if meta.metrics else None
    if isinstance(miou, float) and miou == miou:
        rows.append(("Validation mIoU", f"{miou:.3f}"))
    lines = "<br>".join(f"<b>{k}</b>: {v}" for k, v in rows)  # plain lines wrap in a narrow dock; tables do not
    swatches = "<br>".join(
        f'<span style="background-color:#{r:02x}{g:02x}{b:02x}">&nbsp;&nbsp;&nbsp;&nbsp;</span> '
        f"{c.id} {html.escape(c.name)}"
        for c in meta.classes for r, g, b in [c.color]
    )
    return f"{lines}<br><b>Classes</b><br>{swatches}"
