"""The UNet presets by name (plain data: the registry reads them without importing torch)."""

from __future__ import annotations

# The paper's variants (Cai & Zhang, "Finding a Faster UNet for Satellite Image Segmentation").
SKINNY_WIDTHS = (32, 64, 128, 256, 512, 512, 512)
PRESETS: dict[str, dict[str, object]] = {
    "unet_base": {"widths": (64, 128, 256, 512, 1024), "convs": 2},
    "unet_short": {"widths": (128, 128, 256, 512), "convs": 2},
    "unet_skinny": {"widths": SKINNY_WIDTHS, "convs": 1},
    "unet_lessconv": {"widths": SKINNY_WIDTHS, "convs": (3, 3, 1, 1, 1, 1, 1)},
    # Not from the paper: a very small member for tests, demos and CPU experiments.
    "unet_tiny": {"widths": (8, 16, 32), "convs": 1},
}
