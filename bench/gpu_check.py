"""make gpu-check: what this project does on a CUDA GPU, measured in one run of under 8 minutes.

Sections, each in its own process with its own time box; one that fails or runs out of time is recorded
and the next one runs. The JSON file is rewritten after every section, so a run cut short keeps what it
measured:

- tests: the ``cuda``-marked tests (tests/test_cuda*.py, ``pytest -m cuda``).
- data: a LandCover.ai-sized dataset (7,470 distinct 512 x 512 training tiles cut from 9000 x 9500 RGB
  GeoTIFF sheets with 5-class masks, EPSG:2180 at 0.25 m) and a 16384 x 16384 raster, generated.
- cache: the training split decoded once into the tile cache (``data.cache``), timed; later sections read it.
- train:<arch>:<amp>: UNet_Skinny and UNet_Base with bf16 and with fp16 + GradScaler, through the real
  ``train()`` (real loader, workers, augmentation, JDT loss, optimiser): images/s over a timed window after a
  warm-up (from the optimiser steps the progress object sees), projected to seconds per 7,470-tile epoch;
  peak GPU memory; mean GPU utilisation sampled through NVML during the window.
- predict: ``predict_raster`` of UNet_Skinny on the 16k raster with CUDA: megapixels/s.
- oom: out-of-memory back-off: most of the GPU's memory taken by a blocker, predict with an oversized batch
  (must back off and still write the same map) and training with an oversized micro-batch (must say which
  setting to lower).
- agreement: a briefly trained UNet_Skinny, its classes under bf16 and fp16 autocast against fp32.
- ddp: ``train()`` under ``torchrun --nproc-per-node 1`` with ``--device cuda:0``: NCCL process group, DDP,
  SyncBatchNorm.

Without CUDA it prints one line and exits 2. Results: ``$OUT/gpu_check.json`` when OUT is set, else
``out/gpu_check.json``; the table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI request from an offline GPU machine
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastunet_core.runtime.progress import NullProgress  # noqa: E402  (light: no torch)

EPOCH_TILES = 7470  # LandCover.ai v1's training split
SHEET_W, SHEET_H = 9000, 9500
TILE = 512
RASTER_SIDE = 16384
SMALL_SIDE = 4096
DEVICE = "cuda"
# GPU_CHECK_DRY=1: the same script on the CPU at toy sizes, to check the script itself where there is no GPU
DRY = os.environ.get("GPU_CHECK_DRY") == "1"
if DRY:
    EPOCH_TILES, SHEET_W, SHEET_H, TILE, RASTER_SIDE, SMALL_SIDE, DEVICE = 40, 700, 650, 64, 1024, 512, "cpu"
CLASSES = "background,building,woodland,water,road"
BATCH = int(os.environ.get("GPU_CHECK_BATCH", "8"))  # the paper's logical batch (env: try others)
TOTAL_BUDGET_S = 480  # all sections together, under the 8 minutes the check promises

# (name, time box in seconds), in the order they run
SECTIONS: list[tuple[str, int]] = [
    ("tests", 80),
    ("data", 45),
    ("cache", 45),
    ("train:unet_skinny:bf16", 40),
    ("train:unet_skinny:fp16", 40),
    ("train:unet_skinny:bf16:cpu-augment", 40),  # the same with albumentations in the workers (augment.on_device off)
    ("train:unet_base:bf16", 40),
    ("train:unet_base:fp16", 40),
    ("predict", 40),  # tiles blended on the GPU (the default with CUDA)
    ("predict:host-blend", 40),  # the same with blending and argmax on the host, for the A/B in one run
    ("oom", 40),
    ("agreement", 55),  # training ends with a CPU bf16 agreement check of up to 10 s
    ("ddp", 55),
]


# ---------------------------------------------------------------------------------------------- helpers


def _now() -> float:
    return time.perf_counter()


def _gib(n: float) -> float:
    return round(n / 2**30, 2)


class UtilSampler:
    """Sample GPU utilisation (NVML through torch, else nvidia-smi) on a thread while running."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        import torch

        if self.source in (None, "nvml"):
            try:
                value = float(torch.cuda.utilization())
                self.source = "nvml"
                return value
            except Exception:
                self.source = "nvidia-smi"
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5)
            return float(out.stdout.split()[0])
        except Exception:
            self.source = "unavailable"
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is None:
                return
            self.samples.append(value)
            self._stop.wait(self.period_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=6)
        mean = sum(self.samples) / len(self.samples) if self.samples else None
        return {"gpu_util_mean_pct": None if mean is None else round(mean, 1), "gpu_util_samples": len(self.samples),
                "gpu_util_source": self.source}


class WindowProgress(NullProgress):
    """A Progress that times optimiser steps (or tiles) in a window after a warm-up, then cancels."""

    def __init__(self, warmup_s: float, measure_s: float, hard_stop: float, unit: str = "steps") -> None:
        self.warmup_s, self.measure_s, self.hard_stop, self.unit = warmup_s, measure_s, hard_stop, unit
        self.done = 0.0
        self.total = 0.0
        self.label = ""
        self.first: float | None = None
        self.w0: tuple[float, float] | None = None
        self.w1: tuple[float, float] | None = None
        self.messages: list[str] = []
        self.util = UtilSampler()
        self.on_window_end: Callable[[], None] | None = None  # e.g. write the result before the cleanup

    def _sync(self) -> None:
        import torch

        if not DRY:
            torch.cuda.synchronize()

    def start(self, total: float, label: str) -> None:
        self.label = label
        if label == self.unit:
            self.total = total

    def advance(self, n: float = 1) -> None:
        if self.label != self.unit:  # e.g. the tile cache's "tiles" while training counts "steps"
            return
        self.done += n
        now = _now()
        if self.first is None:
            self.first = now
        elif self.w0 is None and now - self.first >= self.warmup_s:
            self._sync()
            self.w0 = (_now(), self.done)
            self.util.start()

    def is_cancelled(self) -> bool:
        now = _now()
        if self.w0 is not None and self.w1 is None and (now - self.w0[0] >= self.measure_s or now >= self.hard_stop):
            self._sync()
            self.w1 = (_now(), self.done)
            if self.on_window_end is not None:
                self.on_window_end()
        return self.w1 is not None or now >= self.hard_stop

    def message(self, text: str) -> None:
        self.messages.append(text)

    def device(self, text: str) -> None:
        self.messages.append(f"device: {text}")

    def rate(self) -> tuple[float | None, float]:
        """Return (units per second in the window, window seconds)."""
        if self.w0 is None:
            return None, 0.0
        end = self.w1 or (_now(), self.done)
        dt = end[0] - self.w0[0]
        return ((end[1] - self.w0[1]) / dt if dt > 0 else None), dt


def _train_config(work: Path, arch: str, amp: str, name: str, augment: dict[str, Any] | None = None,
                  **optim: Any) -> Any:
    from fastunet_core.train.config import config_from_dict

    d: dict[str, Any] = {
        "data": {"kind": "landcoverai", "root": str(work / "landcoverai"), "tile_size": TILE},
        "output": str(work / "runs" / name), "device": DEVICE,
        "model": {"architecture": arch}, "augment": augment or {},
        "optim": {"epochs": 1, "batch_size": BATCH, "micro_batch": BATCH, "amp": amp, "num_workers": "auto",
                  **optim},
    }
    if d["optim"]["num_workers"] == "auto":
        try:
            import fastunet_core.train.workers  # noqa: F401  (num_workers: auto landed)
        except ImportError:
            d["optim"]["num_workers"] = max(1, (os.cpu_count() or 2) - 1)
    return config_from_dict(d)


def _workers(value: Any) -> Any:
    try:
        from fastunet_core.train.workers import resolve_workers

        return resolve_workers(value)
    except ImportError:
        return value


def _cuda_memory() -> dict[str, Any]:
    import torch

    if DRY:
        return {"peak_allocated_gib": 0.0, "peak_reserved_gib": 0.0}
    return {"peak_allocated_gib": _gib(torch.cuda.max_memory_allocated()),
            "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved())}


# ---------------------------------------------------------------------------------------------- sections


def section_tests(work: Path, deadline: float) -> dict[str, Any]:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_cuda*.py"))
    if not files:
        raise RuntimeError("no tests/test_cuda*.py found")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfE", *files]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(5, deadline - _now() - 2))
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    summary = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                       or "error" in ln)), lines[-1] if lines else "")
    return {"ok": proc.returncode == 0, "rc": proc.returncode, "summary": summary.strip("= "),
            "files": files, "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20],
            "log_tail": "\n".join(lines[-60:])}


def _texture(rng: Any, h: int, w: int) -> tuple[Any, Any]:
    """Return (3, h, w) uint8 image and (h, w) uint8 mask: 32 px class cells, class colours plus noise."""
    import numpy as np

    cell = 32
    low = rng.integers(0, 5, (h // cell + 1, w // cell + 1), dtype=np.uint8)
    mask = np.repeat(np.repeat(low, cell, axis=0), cell, axis=1)[:h, :w]
    palette = np.array([[200, 200, 190], [180, 60, 50], [40, 110, 40], [40, 70, 160], [120, 120, 120]], np.int16)
    noise = rng.integers(-40, 41, (3, 256, 256), dtype=np.int16)
    image = palette.T[:, mask] + np.tile(noise, (1, h // 256 + 1, w // 256 + 1))[:, :h, :w]
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _profile(w: int, h: int, count: int) -> dict[str, Any]:
    from rasterio.transform import from_origin

    return {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": "uint8", "crs": "EPSG:2180",
            "transform": from_origin(500_000, 300_000 + h * 0.25, 0.25, 0.25), "tiled": True,
            "blockxsize": 512, "blockysize": 512}


def _write_sheet(job: tuple[str, str, int]) -> str:
    import numpy as np
    import rasterio

    image_path, mask_path, seed = job
    image, mask = _texture(np.random.default_rng(seed), SHEET_H, SHEET_W)
    with rasterio.open(image_path, "w", **_profile(SHEET_W, SHEET_H, 3)) as dst:
        dst.write(image)
    with rasterio.open(mask_path, "w", **_profile(SHEET_W, SHEET_H, 1)) as dst:
        dst.write(mask[None])
    return image_path


def _write_raster(job: tuple[str, int, int]) -> str:
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    path, side, seed = job
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **_profile(side, side, 3)) as dst:
        step = 2048
        for y in range(0, side, step):
            image, _ = _texture(rng, min(step, side - y), side)
            dst.write(image, window=Window(0, y, side, image.shape[1]))
    return path


def section_data(work: Path, deadline: float) -> dict[str, Any]:
    from multiprocessing import get_context

    t0 = _now()
    root = work / "landcoverai"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    cols, rows = SHEET_W // TILE, SHEET_H // TILE
    per_row = math.ceil(SHEET_W / TILE)
    n_sheets = math.ceil(EPOCH_TILES / (cols * rows))
    names = [f"M-00-{i:02d}" for i in range(n_sheets)]
    jobs = [(str(root / "images" / f"{n}.tif"), str(root / "masks" / f"{n}.tif"), i) for i, n in enumerate(names)]
    with get_context("fork").Pool(min(16, os.cpu_count() or 2)) as pool:
        rasters = pool.map_async(_write_raster, [(str(work / "raster16k.tif"), RASTER_SIDE, 99),
                                                 (str(work / "raster4k.tif"), SMALL_SIDE, 98)])
        sheets = pool.map(_write_sheet, jobs)
        rasters.get(timeout=max(1, deadline - _now()))
    ids = [f"{n}_{r * per_row + c}" for n in names for r in range(rows) for c in range(cols)]
    (root / "train.txt").write_text("\n".join(ids[:EPOCH_TILES]) + "\n")
    val = "\n".join(f"{names[-1]}_{r * per_row + c}" for r in range(2) for c in range(cols)) + "\n"
    (root / "val.txt").write_text(val)
    (root / "test.txt").write_text(val)
    size = sum(p.stat().st_size for p in work.rglob("*.tif"))
    return {"ok": True, "sheets": len(sheets), "train_tiles": min(len(ids), EPOCH_TILES), "val_tiles": 2 * cols,
            "raster_px": RASTER_SIDE, "bytes_on_disk_gib": _gib(size), "seconds": round(_now() - t0, 1)}


def section_cache(work: Path, deadline: float) -> dict[str, Any]:
    from fastunet_core.train.datasets import DatasetSpec, open_dataset

    prog = WindowProgress(warmup_s=0.0, measure_s=1e9, hard_stop=deadline, unit="tiles")
    spec = DatasetSpec(kind="landcoverai", root=work / "landcoverai", tile_size=TILE)
    t0 = _now()
    ds = open_dataset(spec, "train", prog)
    seconds = _now() - t0
    cached = type(ds).__name__ == "CachedTiles"
    t1 = _now()
    n = min(len(ds), 2000)
    for i in range(n):  # one process reading samples in the loader's random order
        ds[(i * 7919) % len(ds)]
    per_sample_ms = (_now() - t1) / n * 1000
    size = sum(p.stat().st_size for p in (work / "cache").rglob("*") if p.is_file())
    return {"ok": cached, "cached": cached, "tiles": len(ds), "build_s": round(seconds, 1),
            "build_tiles_per_s": round(prog.done / seconds, 1) if seconds > 0 else None,
            "cache_gib": _gib(size), "read_ms_per_sample_one_process": round(per_sample_ms, 2),
            **({} if cached else {"error": f"no tile cache was used ({type(ds).__name__}); log: {prog.messages}"})}


def section_train(work: Path, deadline: float, arch: str, amp: str, variant: str = "") -> dict[str, Any]:
    import torch

    from fastunet_core.errors import CancelledError
    from fastunet_core.train.loop import train

    augment = {"on_device": False} if variant == "cpu-augment" else {}
    cfg = _train_config(work, arch, amp, f"{arch}-{amp}{variant}", augment, epochs=50)
    prog = WindowProgress(warmup_s=2.0 if DRY else 5.0, measure_s=4.0 if DRY else 15.0, hard_stop=deadline - 4)
    if not DRY:
        torch.cuda.reset_peak_memory_stats()
    t0 = _now()

    def result() -> dict[str, Any]:
        util = prog.util.stop()
        steps_per_s, window = prog.rate()
        if steps_per_s is None:
            raise RuntimeError(f"no timed window: {prog.done:g} step(s) in {_now() - t0:.0f} s; "
                               f"log: {prog.messages[-3:]}")
        images_per_s = steps_per_s * BATCH
        return {"ok": True, "arch": arch, "amp": amp, "variant": variant or "device-augment", "micro_batch": BATCH,
                "images_per_s": round(images_per_s, 1),
                "epoch_s": round(EPOCH_TILES / images_per_s, 1), "window_s": round(window, 1),
                "steps_timed": prog.w1[1] - prog.w0[1] if prog.w1 and prog.w0 else None,
                "num_workers": _workers(cfg.optim.num_workers), **_cuda_memory(), **util, "log": prog.messages[:3]}

    prog.on_window_end = lambda: _report(result())  # kept even if the loader's shutdown outlasts the time box
    with contextlib.suppress(CancelledError):
        train(cfg, prog, fresh=True)
    return result()


def _checkpoint(work: Path, arch: str) -> Path:
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    return init_checkpoint(InitRequest(architecture=arch, classes=CLASSES, tile_size_px=TILE, overlap_px=TILE // 8,
                                       resolution_m=0.25), work / f"{arch}.safetensors", overwrite=True)


def _maybe_profiler() -> Any:
    """Start cProfile when GPU_CHECK_PROFILE=1 (where the host's time goes while the GPU waits)."""
    if os.environ.get("GPU_CHECK_PROFILE") != "1":
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _write_profile(profiler: Any, name: str) -> None:
    if profiler is None:
        return
    import io
    import pstats

    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "out"
    (out_dir / name).write_text(text.getvalue())


def section_predict(work: Path, deadline: float, stitch: str = "auto") -> dict[str, Any]:
    import torch

    from fastunet_core.errors import CancelledError
    from fastunet_core.inference.predict import PredictOptions, predict_raster

    ckpt = _checkpoint(work, "unet_skinny")
    prog = WindowProgress(warmup_s=0.0, measure_s=1e9, hard_stop=deadline - 4, unit="tiles")
    if not DRY:
        torch.cuda.reset_peak_memory_stats()
    opts = PredictOptions(device=DEVICE, batch_size=int(os.environ.get("GPU_CHECK_PREDICT_BATCH", "16")),
                          overwrite=True, stitch=stitch)
    profiler = _maybe_profiler()
    t0 = _now()
    try:
        res = predict_raster(work / "raster16k.tif", ckpt, work / "pred16k.tif", opts, prog)
        seconds, mpx, complete = res.seconds, res.megapixels, True
    except CancelledError:
        seconds, complete = _now() - t0, False
        mpx = RASTER_SIDE**2 / 1e6 * prog.done / max(prog.total, 1)
    util = prog.util.stop()
    _write_profile(profiler, f"predict_{stitch}_profile.txt")
    return {"ok": True, "arch": "unet_skinny", "raster_px": RASTER_SIDE, "batch_size": opts.batch_size,
            "stitch": stitch,
            "complete": complete, "megapixels": round(mpx, 1), "seconds": round(seconds, 2),
            "mpx_per_s": round(mpx / seconds, 2), "tiles": prog.total, **_cuda_memory(), **util,
            "log": prog.messages[:2]}


def _agreement(a: Any, b: Any) -> float:
    import numpy as np

    return round(float(np.mean(np.asarray(a) == np.asarray(b))) * 100, 4)


def section_oom(work: Path, deadline: float) -> dict[str, Any]:
    import rasterio
    import torch

    from fastunet_core.errors import FastUNetError
    from fastunet_core.inference.predict import PredictOptions, predict_raster

    arch = "unet_tiny" if DRY else "unet_base"
    ckpt = _checkpoint(work, arch)
    raster = work / "raster4k.tif"
    ref = predict_raster(raster, ckpt, work / "oom_ref.tif", PredictOptions(device=DEVICE, batch_size=4,
                                                                             overwrite=True))
    free, total = torch.cuda.mem_get_info() if not DRY else (0, 0)
    headroom = 6 * 2**30
    blocker = torch.empty(max(0, free - headroom), dtype=torch.uint8, device=DEVICE)
    out: dict[str, Any] = {"gpu_total_gib": _gib(total), "predict_batch_asked": 16 if DRY else 256,
                           "left_free_gib": _gib(torch.cuda.mem_get_info()[0]) if not DRY else None}
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = predict_raster(raster, ckpt, work / "oom_big.tif",
                                 PredictOptions(device=DEVICE, batch_size=out["predict_batch_asked"], overwrite=True))
            out["predict_ok"] = True
            out["predict_seconds"] = round(res.seconds, 2)
            with rasterio.open(ref.output) as a, rasterio.open(res.output) as b:
                out["predict_agreement_pct"] = _agreement(a.read(1), b.read(1))
        except FastUNetError as exc:
            out["predict_ok"], out["predict_error"] = False, str(exc)
    out["predict_messages"] = [str(w.message) for w in caught][:5]
    big = 8 if DRY else 512
    cfg = _train_config(work, arch, "bf16", "oom", micro_batch=big, batch_size=big, max_batches_per_epoch=1,
                        num_workers=2)
    from fastunet_core.train.loop import train

    try:
        train(cfg, None, fresh=True)
        out["train_error"] = None
    except FastUNetError as exc:
        out["train_error"] = str(exc)
    except Exception as exc:
        out["train_error"] = f"NOT A ONE-LINE ERROR: {type(exc).__name__}: {str(exc)[:300]}"
    del blocker
    if not DRY:
        torch.cuda.empty_cache()
    out["ok"] = bool(out.get("predict_ok") and out.get("predict_agreement_pct", 0) >= 99.9
                     and out["train_error"] and "micro_batch" in out["train_error"])
    return out


def section_agreement(work: Path, deadline: float) -> dict[str, Any]:
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from fastunet_core.inference.engine import TorchEngine
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.runtime.device import resolve_device
    from fastunet_core.train.loop import train

    cfg = _train_config(work, "unet_skinny", "bf16", "agreement", max_batches_per_epoch=150)
    res = train(cfg, None, fresh=True)
    loaded = load_checkpoint(res.best_checkpoint)
    model = loaded.torch_model()
    with rasterio.open(work / "raster16k.tif") as src:
        n = min(16, RASTER_SIDE // TILE)
        tiles = np.stack([src.read(window=Window(TILE * i, TILE, TILE, TILE)) for i in range(n)])
    x = np.stack([loaded.meta.input.normalise(t) for t in tiles])
    device = resolve_device(DEVICE)
    out: dict[str, Any] = {"tiles": len(tiles), "val_miou": loaded.meta.metrics.get("val_miou")}
    classes = {}
    for precision in ("fp32", "bf16", "fp16"):
        try:
            engine = TorchEngine(model, device, precision=precision)
            classes[precision] = engine(x).argmax(axis=1)
        except Exception as exc:
            out[f"{precision}_error"] = f"{type(exc).__name__}: {exc}"
    for precision in ("bf16", "fp16"):
        if precision in classes and "fp32" in classes:
            out[f"{precision}_vs_fp32_pct"] = _agreement(classes[precision], classes["fp32"])
    out["ok"] = all(out.get(f"{p}_vs_fp32_pct", 0) >= 99.0 for p in ("bf16", "fp16"))
    return out


def section_ddp(work: Path, deadline: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           str(Path(__file__).resolve()), "--ddp-worker", "--work", str(work)]
    t0 = _now()
    log = work / "ddp-worker.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max(5, deadline - _now() - 2))
        except subprocess.TimeoutExpired:
            rc = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = log.read_text(errors="replace").strip().splitlines()
    found = [ln for ln in lines if ln.startswith("DDP-RESULT ")]
    out: dict[str, Any] = json.loads(found[-1][len("DDP-RESULT "):]) if found else {}
    out.update(rc=rc, seconds=round(_now() - t0, 1), log_tail="\n".join(lines[-25:]))
    if rc is None:
        out["error"] = f"torchrun timed out; last line: {lines[-1] if lines else ''}"
    out["ok"] = rc == 0 and out.get("backend") == ("gloo" if DRY else "nccl") and out.get("ddp") is True
    return out


def ddp_worker(work: Path) -> None:
    import torch
    import torch.distributed as dist

    from fastunet_core.runtime import distributed
    from fastunet_core.train import loop

    ctx = distributed.context_from_env()
    seen: dict[str, Any] = {"world_size": ctx.world_size, "ddp": False}
    original = loop.DistributedDataParallel

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen["ddp"] = True
        seen["backend"] = dist.get_backend()
        return original(*args, **kwargs)

    loop.DistributedDataParallel = spy  # type: ignore[misc,assignment]
    cfg = _train_config(work, "unet_skinny", "auto", "ddp", max_batches_per_epoch=20, num_workers=2)
    cfg.device = "cuda:0" if not DRY else "cpu"
    res = loop.train(cfg, None, fresh=True)
    seen.update(device=str(res.device.device), epochs=len(res.history), train_loss=res.history[-1].train_loss,
                sync_batchnorm=None)
    seen["cuda_device_count"] = torch.cuda.device_count()
    print("DDP-RESULT " + json.dumps(seen), flush=True)
    sys.stdout.flush()
    os._exit(0)


SECTION_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {
    "tests": section_tests, "data": section_data, "cache": section_cache, "predict": section_predict,
    "oom": section_oom, "agreement": section_agreement, "ddp": section_ddp,
}


_RESULT: Path | None = None


def _report(out: dict[str, Any]) -> None:
    """Write a section's result now (the parent reads it even if the section is killed afterwards)."""
    if _RESULT is not None:
        _RESULT.write_text(json.dumps(out, default=str))


def run_section(name: str, work: Path, box_s: float, result: Path) -> None:
    """Run one section in this process and write its result (the parent enforces the time box)."""
    global _RESULT
    _RESULT = result
    deadline = _now() + box_s
    if name.startswith("train:"):
        _, arch, amp, *variant = name.split(":")
        out = section_train(work, deadline, arch, amp, *variant)
    elif name == "predict:host-blend":
        out = section_predict(work, deadline, stitch="host")
    else:
        out = SECTION_FUNCS[name](work, deadline)
    _report(out)


# ---------------------------------------------------------------------------------------------- driver


def _environment() -> dict[str, Any]:
    import numpy
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "numpy": numpy.__version__, "cpus": os.cpu_count(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = _gib(torch.cuda.get_device_properties(0).total_memory)
        env["bf16_native"] = torch.cuda.is_bf16_supported(including_emulation=False)
    except Exception as exc:
        env["gpu_error"] = str(exc)
    with contextlib.suppress(Exception):
        import rasterio

        env["rasterio"] = rasterio.__version__
    return env


def _spawn(name: str, work: Path, box_s: float) -> dict[str, Any]:
    result = work / f"result-{name.replace(':', '_')}.json"
    log = work / f"log-{name.replace(':', '_')}.txt"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--work", str(work),
           "--box", str(box_s), "--result", str(result)]
    t0 = _now()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=box_s)
        except subprocess.TimeoutExpired:
            rc = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the section and its loader workers
        proc.wait()
    seconds = round(_now() - t0, 1)
    tail = log.read_text(errors="replace")[-3000:]
    if result.is_file():
        out = json.loads(result.read_text())
    elif rc is None:
        out = {"ok": False, "error": f"timed out after {box_s:.0f} s", "log_tail": tail}
    else:
        last = [ln for ln in tail.strip().splitlines() if ln.strip()]
        out = {"ok": False, "error": last[-1] if last else f"exit status {rc}", "log_tail": tail}
    out["section_seconds"] = seconds
    return out


def _fmt_row(name: str, r: dict[str, Any]) -> str:
    if not r.get("ok") and "error" in r:
        return f"FAILED: {r['error'][:150]}"
    if name == "tests":
        return r.get("summary", "")
    if name == "cache":
        return (f"{r['tiles']} tiles decoded once in {r['build_s']} s ({r['build_tiles_per_s']} tiles/s), "
                f"{r['cache_gib']} GiB; then {r['read_ms_per_sample_one_process']} ms per sample in one process")
    if name == "data":
        return (f"{r['sheets']} sheets {SHEET_W}x{SHEET_H}, {r['train_tiles']} train tiles, "
                f"{r['raster_px']}^2 raster, {r['bytes_on_disk_gib']} GiB in {r['seconds']} s")
    if name.startswith("train:"):
        util = r.get("gpu_util_mean_pct")
        return (f"{r['images_per_s']:8.1f} img/s {r['epoch_s']:7.1f} s/epoch  peak {r['peak_allocated_gib']} GiB  "
                f"GPU {'n/a' if util is None else f'{util:.0f}%'}  (micro-batch {r['micro_batch']}, "
                f"{r['num_workers']} workers)")
    if name.startswith("predict"):
        util = r.get("gpu_util_mean_pct")
        return (f"{r['mpx_per_s']:.1f} Mpx/s ({r['megapixels']} Mpx in {r['seconds']} s"
                f"{'' if r['complete'] else ', stopped at the time box'})  peak {r['peak_allocated_gib']} GiB  "
                f"GPU {'n/a' if util is None else f'{util:.0f}%'}")
    if name == "oom":
        backoff = [m for m in r.get("predict_messages", []) if "out of memory" in m]
        return (f"predict batch {r.get('predict_batch_asked')} with {r.get('left_free_gib')} GiB free: "
                f"{backoff[-1][:70] if backoff else 'no back-off'}; "
                f"{'ok' if r.get('predict_ok') else 'FAILED'}, {r.get('predict_agreement_pct', 'n/a')}% same "
                f"classes; training: {str(r.get('train_error'))[:90]}")
    if name == "agreement":
        return (f"bf16 {r.get('bf16_vs_fp32_pct', 'n/a')}%  fp16 {r.get('fp16_vs_fp32_pct', 'n/a')}% of fp32's "
                f"classes ({r.get('tiles')} tiles, val mIoU {r.get('val_miou')})")
    if name == "ddp":
        return (f"{'ok' if r.get('ok') else 'FAILED'}: backend {r.get('backend')}, DDP {r.get('ddp')}, "
                f"device {r.get('device')}, {r.get('seconds')} s")
    return json.dumps(r)[:150]


def _table(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"gpu-check: {env.get('gpu')} ({env.get('gpu_memory_gib')} GiB), torch {env.get('torch')}, "
             f"{env.get('cpus')} CPUs, {env.get('date')}",
             f"{'check':<36} | result", f"{'-' * 36}-+-{'-' * 90}"]
    for name, r in results["sections"].items():
        lines.append(f"{name:<36} | {'ok  ' if r.get('ok') else 'FAIL'} {_fmt_row(name, r)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("GPU_CHECK_WORK", "/tmp/fastunet-gpu-check")))
    parser.add_argument("--box", type=float, default=60)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--ddp-worker", action="store_true")
    parser.add_argument("--only", help="comma-separated section names to run (default: all)")
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(args.work)
        return 0
    if args.section:
        run_section(args.section, args.work, args.box, args.result)
        return 0

    from fastunet_core.runtime.device import cuda_unavailable_reason

    why_not = cuda_unavailable_reason()
    if why_not is not None and not DRY:
        print(f"gpu-check: nothing measured, {why_not}")
        return 2
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "gpu_check.json"
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    os.environ["FASTUNET_CACHE_DIR"] = str(args.work / "cache")  # the sections' tile cache, removed at the end
    results: dict[str, Any] = {"environment": _environment(), "epoch_tiles": EPOCH_TILES, "sections": {}}
    print(f"gpu-check on {results['environment'].get('gpu')}; results in {json_path}", flush=True)
    wanted = set(args.only.split(",")) if args.only else None
    start = _now()
    for name, box in SECTIONS:
        if wanted and name not in wanted:
            continue
        left = TOTAL_BUDGET_S - (_now() - start) / (4 if DRY else 1)
        if left < 10:
            results["sections"][name] = {"ok": False, "error": "skipped: the 8-minute budget was used up"}
        else:
            results["sections"][name] = _spawn(name, args.work, min(box, left) * (4 if DRY else 1))
        r = results["sections"][name]
        print(f"gpu-check: {name}: {'ok' if r.get('ok') else 'FAILED'} ({r.get('section_seconds', 0)} s) "
              f"{_fmt_row(name, r)}", flush=True)
        results["total_seconds"] = round(_now() - start, 1)
        json_path.write_text(json.dumps(results, indent=1, default=str))
    table = _table(results)
    results["table"] = table
    json_path.write_text(json.dumps(results, indent=1, default=str))
    print(table)
    shutil.rmtree(args.work, ignore_errors=True)
    return 0 if all(r.get("ok") for r in results["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
