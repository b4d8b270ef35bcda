"""Model size figures: parameters, compute, and the paper's torchsummary-style memory footprint.

Everything is measured with one forward pass on PyTorch's ``meta`` device: shapes are propagated, no memory
is allocated and no arithmetic is done, so even a 512x512 UNet_Base costs milliseconds. The figures are
exact (they depend only on shapes).

**Compute.** :attr:`ModelSummary.macs` counts the multiply-accumulates of every convolution, transposed
convolution and linear layer for one image (batch 1); biases, BatchNorm, activations, pooling and
interpolation are not counted. :attr:`ModelSummary.gflops` reports FLOPs = 2 x MACs, in units of 1e9.
Beware that tools such as thop and ptflops label MACs as "FLOPs": their figures are half of ours.

**Memory footprint** (the figure Cai & Zhang publish, in MB). It reproduces the "Forward/backward pass
size (MB)" line of torchsummary's ``summary(model, (3, 512, 512))``::

    footprint_mb = 2 * 4 * sum(output elements per image of each counted module call) / 2**20

- counted modules are those torchsummary hooks: every module except the model itself and any
  ``nn.Sequential`` or ``nn.ModuleList`` (subclasses included). Leaf layers (Conv2d, BatchNorm2d, ReLU,
  MaxPool2d, ConvTranspose2d ...) count, and so do container modules written as ``nn.Module`` subclasses,
  whose output therefore counts once more; functional calls (``torch.cat``) do not count;
- a module called several times counts once per call (e.g. a shared pool or an in-place ReLU);
- 4 bytes per element (float32), x2 "for gradients", MB = 2**20 bytes;
- torchsummary's "Input size" and "Params size" lines are *not* included: the paper's figures are the
  forward/backward line alone (they come out as exact multiples of 0.25 MB, which parameter bytes do not);
- for a module returning several tensors (an smp encoder returns a list of feature maps) the elements of
  all of them are summed; torchsummary itself mis-handles such outputs, so figures of models with such
  modules (the smp ones) are ours, not torchsummary's.

With the UNet builder of :mod:`fastunet_core.models.unet`, whose ``ConvBlock`` and decoder ``UpBlock`` are
``nn.Module``s, this reproduces the paper exactly: UNet_Skinny 1292.25, UNet_LessConv 2444.25 and
UNet_Short 5842 MB at 3x512x512. The figure depends on how a model is split into modules, not only on its
computation, so compare it only between models written in the same style.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastunet_core.errors import ConfigError
from fastunet_core.models.registry import build_model

BYTES_PER_ELEMENT = 4  # float32, as torchsummary assumes
MB = 2**20


@dataclass(frozen=True)
class ModelSummary:
    """Size figures of one model for one input shape (batch 1).

    Attributes:
        name: architecture name (or any label).
        input_shape: (bands, height, width) the figures were measured at.
        params: number of parameters (trainable or not).
        macs: multiply-accumulates of conv / transposed conv / linear layers for one image.
        activation_elements: summed output elements of the counted module calls (see the module docs).

    """

    name: str
    input_shape: tuple[int, int, int]
    params: int
    macs: int
    activation_elements: int

    @property
    def gflops(self) -> float:
        """Return FLOPs (2 x MACs) per image, in units of 1e9."""
        return 2 * self.macs / 1e9

    @property
    def footprint_mb(self) -> float:
        """Return the paper's memory footprint: torchsummary's forward/backward pass size in MB."""
        return 2 * self.activation_elements * BYTES_PER_ELEMENT / MB

    @property
    def input_mb(self) -> float:
        """Return torchsummary's "Input size (MB)" (float32, one image)."""
        c, h, w = self.input_shape
        return c * h * w * BYTES_PER_ELEMENT / MB

    @property
    def params_mb(self) -> float:
        """Return torchsummary's "Params size (MB)" (float32)."""
        return self.params * BYTES_PER_ELEMENT / MB

    @property
    def total_mb(self) -> float:
        """Return torchsummary's "Estimated Total Size (MB)": input + forward/backward + params."""
        return self.input_mb + self.footprint_mb + self.params_mb


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def summarize_model(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> ModelSummary:
    """Measure parameters, MACs and the footprint of ``model`` at ``input_shape`` = (bands, H, W).

    The model runs once, in eval mode, on a batch of one zeros on the device of its parameters. Build it
    under ``with torch.device("meta"):`` (as :func:`summarize` does) to measure without computing.
    """
    counts = {"macs": 0, "elements": 0}
    hooks = [m.register_forward_hook(_make_hook(counts)) for m in model.modules()
             if m is not model and not isinstance(m, nn.Sequential | nn.ModuleList)]
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    bands, height, width = input_shape
    return ModelSummary(name, (bands, height, width), count_parameters(model), counts["macs"], counts["elements"])


def summarize(name: str, in_channels: int = 3, num_classes: int = 5, size: int | tuple[int, int] = 512,
              args: Mapping[str, Any] | None = None) -> ModelSummary:
    """Build a registered architecture on the meta device and measure it at ``in_channels`` x size.

    Raises:
        UnknownArchitectureError: if ``name`` is not registered.
        ConfigError: if the size is not positive or does not suit the architecture.

    """
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ConfigError(f"the input size must be positive, got {h}x{w}")
    model = build_on_meta(name, in_channels, num_classes, args)
    try:
        return summarize_model(model, (in_channels, h, w), name)
    except RuntimeError as exc:  # e.g. smp's own divisibility check
        raise ConfigError(f"{name} cannot run at {h}x{w}: {exc}") from exc


def architecture_parameters(name: str, in_channels: int = 3, num_classes: int = 5,
                            args: Mapping[str, Any] | None = None) -> int:
    """Return the parameter count of a registered architecture (no input size needed)."""
    return count_parameters(build_on_meta(name, in_channels, num_classes, args))


def build_on_meta(name: str, in_channels: int, num_classes: int,
                  args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a registered architecture on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"):
        model = build_model(name, in_channels, num_classes, args)
    return model.to("meta")  # a few builders create tensors on the CPU regardless (smp, for bands != 3)


def _make_hook(counts: dict[str, int]) -> Any:
    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        counts["elements"] += sum(t.numel() for t in _tensors(output))
        counts["macs"] += _macs(mod, inputs, output)

    return hook


def _tensors(output: Any) -> Iterator[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, list | tuple):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, Mapping):
        for item in output.values():
            yield from _tensors(item)


def _macs(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return inputs[0].numel() * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size)
    if isinstance(mod, nn.modules.conv._ConvNd):
        return output.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
    if isinstance(mod, nn.Linear):
        return output.numel() * mod.in_features
    return 0

