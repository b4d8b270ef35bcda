"""Inference-only rewrites of a model that keep its outputs (up to float rounding) and run faster on CPUs.

- BatchNorm folded into the preceding convolution (eval mode: BN is an affine map per channel), removing one
  full pass over every activation.
- channels_last memory format, which oneDNN's CPU convolutions prefer.

The rewrite works on a copy; the original model (and its checkpoint weights) stay untouched.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """Return an eval-mode copy with every Conv2d -> BatchNorm2d pair inside a Sequential fused; and the count."""
    folded = copy.deepcopy(model).eval()
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


def optimize_for_cpu(model: nn.Module) -> nn.Module:
    """Fold BatchNorm and switch to channels_last: the default CPU inference path."""
    folded, _ = fold_batchnorm(model)
    return folded.to(memory_format=torch.channels_last)
