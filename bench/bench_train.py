"""Training throughput: images per second of one training step (forward, JDT loss, backward, Adam) per model.

Runs the paper's models on random 512 x 512 batches (what the data loader would hand over), so the figure
is the compute cost of training, comparable with the paper's (UNet Skinny: 312 s per LandCover.ai epoch
of 7,470 training tiles on an RTX 4060 Ti, i.e. about 24 images/s).

    .venv/bin/python bench/bench_train.py                  # all paper models, batch 2, CPU or GPU
    .venv/bin/python bench/bench_train.py --models unet_skinny --batch 8 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from fastunet_core.models.registry import build_model
from fastunet_core.runtime.device import resolve_device
from fastunet_core.train.loss import JDTLoss

PAPER_MODELS = ["unet_base", "unet_short", "unet_skinny", "unet_lessconv", "unetplusplus", "deeplabv3plus"]
PAPER_SKINNY_IMAGES_PER_S = 7470 / 312  # LandCover.ai train tiles per epoch / seconds per epoch (RTX 4060 Ti)


def images_per_second(arch: str, batch: int, size: int, steps: int, device: torch.device,
                      amp: torch.dtype | None) -> float:
    """Time ``steps`` training steps after one warm-up step; return images per second."""
    torch.manual_seed(0)
    model = build_model(arch, 3, 5).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = JDTLoss()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 5, (batch, size, size), device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        scaler.scale(loss_fn(logits, y)).backward()
        scaler.step(opt)
        scaler.update()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PAPER_MODELS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    amp = dev.autocast_dtype if dev.is_cuda else None
    print(f"device: {dev.describe()}; torch threads {torch.get_num_threads()}; batch {args.batch}, "
          f"{args.size} x {args.size}, {args.steps} timed steps")
    print("| model | images/s | s per LandCover.ai epoch (7,470 tiles) |\n|---|---:|---:|")
    for arch in args.models.split(","):
        ips = images_per_second(arch, args.batch, args.size, args.steps, dev.device, amp)
        print(f"| {arch} | {ips:.2f} | {7470 / ips:,.0f} |", flush=True)
    print(f"| paper, unet_skinny on an RTX 4060 Ti | {PAPER_SKINNY_IMAGES_PER_S:.1f} | 312 |")


if __name__ == "__main__":
    main()
