"""BatchNorm and batches of one: a layer that sees one value per channel cannot compute batch statistics.

A UNet's bottleneck is ``tile / size_divisor`` pixels wide: at a 64 px tile, unet_skinny's is 1 x 1, and a
micro-batch of one tile gives its BatchNorm layers a single value per channel (PyTorch raises "Expected more
than 1 value per channel when training"). A run configured that way can never train those layers: it is
refused before training (:func:`check_single_value_batches`). The same happens now and then in a run that is
fine otherwise: the last micro-batch of an epoch holding one tile, or images smaller than the tile (padded
only to the size divisor). For such a forward pass, a layer that would see one value per channel normalises
with its running statistics instead, as in evaluation, and leaves them unchanged
(:func:`running_stats_for_single_values`); every other pass trains as usual.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from fastunet_core.errors import ConfigError
from fastunet_core.hints import hint, setting

_BN = nn.modules.batchnorm._BatchNorm


def has_batch_norm(model: nn.Module) -> bool:
    """Return True when ``model`` holds a BatchNorm layer."""
    return any(isinstance(m, _BN) for m in model.modules())


def check_single_value_batches(model: nn.Module, architecture: str, tile: int, divisor: int, micro: int) -> None:
    """Refuse a run whose every micro-batch gives the bottleneck's BatchNorm one value per channel."""
    if micro > 1 or tile // divisor > 1 or not has_batch_norm(model):
        return
    raise ConfigError(f"{architecture} has a 1 x 1 px bottleneck at {tile} px tiles, and its BatchNorm layers "
                      f"cannot learn from one tile at a time (micro-batches of 1); use "
                      f"{setting('data.tile_size', 2 * divisor)} (or more), or {setting('optim.micro_batch', 2)} "
                      f"(or more{hint(', with {} a multiple of it', 'optim.batch_size')})")


def running_stats_for_single_values(model: nn.Module) -> list[RemovableHandle]:
    """Make each BatchNorm layer of ``model`` use its running statistics for an input of one value per channel.

    Returns the hooks' handles (``handle.remove()`` undoes it).
    """
    handles: list[RemovableHandle] = []

    def before(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0]
        if module.training and x.shape[1] and x.numel() // x.shape[1] == 1:
            module.train(False)
            module._single_value_pass = True  # type: ignore[assignment]

    def after(module: nn.Module, _inputs: tuple[Any, ...], _output: Any) -> None:
        if getattr(module, "_single_value_pass", False):
            module._single_value_pass = False  # type: ignore[assignment]
            module.train(True)

    for m in model.modules():
        if isinstance(m, _BN):
            handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
    return handles
