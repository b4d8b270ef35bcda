"""Architecture registry: a name maps to a builder ``(in_channels, num_classes, **args) -> nn.Module``.

Checkpoints store the name and the constructor arguments, never a pickled model, so every model that can
be loaded is built here. An unknown name raises an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastunet_core.errors import ConfigError, UnknownArchitectureError
from fastunet_core.hints import setting_any
from fastunet_core.models.presets import PRESETS

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class Architecture:
    """A registered architecture."""

    name: str
    build: Builder
    description: str
    size_divisor: Callable[[Mapping[str, Any]], int]
    defaults: Mapping[str, Any]


REGISTRY: dict[str, Architecture] = {}


def register(name: str, build: Builder, description: str, size_divisor: Callable[[Mapping[str, Any]], int],
             defaults: Mapping[str, Any] | None = None) -> None:
    """Add an architecture to the registry."""
    REGISTRY[name] = Architecture(name, build, description, size_divisor, dict(defaults or {}))


# every segmentation_models_pytorch architecture, as ``smp.<Name>`` (built on demand, not listed in REGISTRY)
SMP_ARCHITECTURES = ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus",
                     "PAN", "UPerNet", "Segformer", "DPT")
SMP_PREFIX = "smp."
# arguments used when training starts (smp downloads pretrained encoder weights then), never stored in a
# checkpoint and never used when one is loaded: loading never downloads anything
TRAINING_ONLY_ARGS = ("encoder_weights",)


def get_architecture(name: str) -> Architecture:
    """Return the registered architecture, or raise an error listing the valid names.

    ``smp.<Name>`` (any name in :data:`SMP_ARCHITECTURES`, any case) is an smp architecture with its own
    constructor arguments (``encoder_name``, ``encoder_depth``, ``decoder_channels`` ...).
    """
    if name in REGISTRY:
        return REGISTRY[name]
    if name.lower().startswith(SMP_PREFIX):
        wanted = name[len(SMP_PREFIX):].lower()
        for cls_name in SMP_ARCHITECTURES:
            if cls_name.lower() == wanted:
                divisor = _deeplab_divisor if cls_name.startswith("DeepLab") else _smp_divisor
                return Architecture(SMP_PREFIX + cls_name, _smp_builder(cls_name),
                                    f"segmentation_models_pytorch {cls_name}", divisor, {"encoder_name": "resnet34"})
    smp_names = ", ".join(SMP_PREFIX + n for n in SMP_ARCHITECTURES)
    ours = ", ".join(sorted(n for n in REGISTRY if not n.startswith("test_")))  # stand-ins for tests stay unlisted
    raise UnknownArchitectureError(f"unknown architecture {name!r}; valid names: {ours}, and {smp_names}") from None


def build_model(
    name: str, in_channels: int, num_classes: int, args: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build an untrained model from its registry name and constructor arguments."""
    arch = get_architecture(name)
    kwargs = {**arch.defaults, **(args or {})}
    try:
        return arch.build(in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for architecture {name!r}: {exc}") from exc


def size_divisor(name: str, args: Mapping[str, Any] | None = None) -> int:
    """Return the number the input's height and width must be a multiple of."""
    arch = get_architecture(name)
    return arch.size_divisor({**arch.defaults, **(args or {})})


def check_tile_multiple(tile: int, name: str, args: Mapping[str, Any] | None = None, key: str = "tile") -> None:
    """Refuse a tile side that architecture ``name`` cannot take: one that is not a multiple of its size divisor.

    The one rule for every place a tile size is chosen (predict, init, training), so a model trained or
    written with a tile size can also run with it. The error names the nearest valid sizes below and above,
    through the setting ``key`` of :data:`fastunet_core.hints.SETTINGS` (``tile``: predict's and init's
    ``--tile``; ``data.tile_size``: training's).
    """
    divisor = size_divisor(name, args)
    if tile % divisor == 0:
        return
    below = tile // divisor * divisor
    nearest = [size for size in (below, below + divisor) if size > 0]
    raise ConfigError(f"tile size {tile} px is not a multiple of {divisor}, which {name} needs (one halving per "
                      f"level); use {setting_any(key, nearest)}")


def _unet_divisor(args: Mapping[str, Any]) -> int:
    return 2 ** (len(args["widths"]) - 1)


def _make_unet_builder(preset: Mapping[str, Any] | None) -> Builder:
    def build(in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from fastunet_core.models.unet import UNet  # torch: only when a model is built

        merged = {**(preset or {}), **kwargs}
        return UNet(in_channels, num_classes, merged["widths"], merged.get("convs", 2))

    return build


def _smp_builder(cls_name: str) -> Builder:
    def build(in_channels: int, num_classes: int, encoder_name: str = "resnet34",
              encoder_weights: str | None = None, **kwargs: Any) -> nn.Module:
        import segmentation_models_pytorch as smp  # heavy import: only when an smp model is built

        cls = getattr(smp, cls_name)
        try:  # encoder_weights only reaches here when training starts (see TRAINING_ONLY_ARGS)
            return cls(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
                       classes=num_classes, **kwargs)
        except (KeyError, ValueError, AssertionError) as exc:  # smp's errors for a bad encoder or argument
            raise ConfigError(f"smp.{cls_name}: {exc}") from exc

    return build


def _smp_divisor(args: Mapping[str, Any]) -> int:
    return 2 ** int(args.get("encoder_depth", 5))


def _deeplab_divisor(args: Mapping[str, Any]) -> int:
    # the encoder stops downsampling at its output stride (dilated convolutions below it)
    return min(_smp_divisor(args), int(args.get("encoder_output_stride", 16)))


register("unet", _make_unet_builder(None), "UNet with your own widths and convolutions per level",
         _unet_divisor, {"widths": (64, 128, 256, 512, 1024), "convs": 2})
_DESCRIPTIONS = {
    "unet_base": "paper: UNet Base, widths 64..1024, 2 convs per block",
    "unet_short": "paper: UNet Short, widths 128,128,256,512, 2 convs per block",
    "unet_skinny": "paper: UNet Skinny, 7 levels 32..512, 1 conv per block",
    "unet_lessconv": "paper: UNet Less-Conv, Skinny widths, 3 convs in the top two levels",
    "unet_tiny": "not in the paper: a tiny UNet for tests, demos and quick CPU runs",
}
for _name, _preset in PRESETS.items():
    register(_name, _make_unet_builder(_preset), _DESCRIPTIONS[_name], _unet_divisor, _preset)
register("unetplusplus", _smp_builder("UnetPlusPlus"), "smp UNet++ (baseline in the paper), resnet34 encoder",
         _smp_divisor, {"encoder_name": "resnet34"})
register("deeplabv3plus", _smp_builder("DeepLabV3Plus"),
         "smp DeepLabV3+ (baseline in the paper), resnet34 encoder", _deeplab_divisor,
         {"encoder_name": "resnet34"})
def _pixel_colour(in_channels: int, num_classes: int) -> nn.Module:
    from fastunet_core.models.pixel_colour import PixelColour  # torch: only when the model is built

    return PixelColour(in_channels, num_classes)


register("test_pixel_colour", _pixel_colour, "not a trained model: a fixed 1x1 convolution, classes follow the "
         "pixel brightness (deterministic stand-in for tests)", lambda _args: 1)


def check_arch_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Return JSON-friendly constructor arguments to store (tuples become lists; no training-only ones)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in TRAINING_ONLY_ARGS:
            continue  # never stored: a checkpoint carries its own weights, loading never downloads
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
