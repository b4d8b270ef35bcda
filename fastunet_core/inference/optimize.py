"""Inference-only rewrites of a model that keep its outputs (up to float rounding) and run faster on CPUs.

- BatchNorm folded into the preceding convolution (eval mode: BN is an affine map per channel), removing one
  full pass over every activation.
- channels_last memory format, which oneDNN's CPU convolutions prefer.
- bf16 (:func:`bf16_model`): weights and activations in bfloat16, except the layers a measured plan keeps in
  fp32 (see :mod:`.precision`); measuring and predicting both build the model with that one function.

The rewrite works on a copy; the original model (and its checkpoint weights) stay untouched, unless the
caller hands the model over (``copy=False``: a model loaded for the engine alone, whose fp32 weights would
otherwise stay in memory beside the rewritten ones; each layer's old tensors are freed as it is rewritten).
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fastunet_core.errors import CheckpointError
from fastunet_core.hints import hint


def fold_batchnorm(model: nn.Module, copy_model: bool = True) -> tuple[nn.Module, int]:
    """Return an eval-mode copy with every Conv2d -> BatchNorm2d pair inside a Sequential fused; and the count.

    ``copy_model=False``: fold ``model`` itself (no copy of its weights is made).
    """
    folded = (copy.deepcopy(model) if copy_model else model).eval()
    count = 0
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
                count += 1
    return folded, count


def optimize_for_cpu(model: nn.Module, copy_model: bool = True) -> nn.Module:
    """Fold BatchNorm and switch to channels_last: the default CPU inference path (``copy_model``: as above)."""
    folded, _ = fold_batchnorm(model, copy_model)
    return folded.to(memory_format=torch.channels_last)


def weighted_layers(model: nn.Module) -> list[str]:
    """Return the names of the modules that hold parameters of their own (convolutions ...), in model order."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def _inputs_to(dtype: torch.dtype, _module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
    """Forward pre-hook: cast a layer's floating-point inputs to its own dtype."""
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _output_to_bf16(_module: nn.Module, _args: tuple[object, ...], out: torch.Tensor) -> torch.Tensor:
    """Forward hook: hand an fp32 layer's output on in bf16, as every other layer's."""
    return out.to(torch.bfloat16)


def bf16_model(model: nn.Module, fp32_layers: Iterable[str] = (), copy_model: bool = True) -> nn.Module:
    """Return the CPU bf16 path of ``model``: :func:`optimize_for_cpu`, then every layer in bf16 but ``fp32_layers``.

    Each layer with weights gets its input cast to its own dtype, so the model takes float32 input; a layer
    kept in fp32 reads the fp32 input or the bf16 activations, computes in fp32 and hands its output on in
    bf16 (pools and skip concatenations stay in bf16, as fast as the all-bf16 model), except the model's last
    layer, whose fp32 output is the logits. ``fp32_layers``: names from :func:`weighted_layers` (the
    checkpoint's recorded plan); one the model does not have is a :class:`CheckpointError`. ``copy_model=False``:
    rewrite ``model`` itself (handed over: no fp32 copy of the bf16 layers' weights is left).
    """
    fast = optimize_for_cpu(model, copy_model)
    names = weighted_layers(fast)
    keep = set(fp32_layers)
    if unknown := sorted(keep - set(names)):
        raise CheckpointError(f"the recorded bf16 plan keeps layers in fp32 that the model does not have "
                              f"({', '.join(unknown)}); measure it again" + hint(" ({})", "agreement_tiles"))
    modules = dict(fast.named_modules())
    for name in names:
        module = modules[name]
        if name not in keep:  # this layer's own tensors only: a child may be kept in fp32
            module._apply(lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t, recurse=False)
        elif name != names[-1]:
            module.register_forward_hook(_output_to_bf16)
        dtype = torch.float32 if name in keep else torch.bfloat16
        module.register_forward_pre_hook(functools.partial(_inputs_to, dtype))
    return fast
