"""``fastunet-geo predict``: one raster to one output, or many rasters into a folder (also under torchrun)."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fastunet_core.cli._common import BarProgress, default_workers, parse_int_list, stop_on_sigterm
from fastunet_core.hints import counted

if TYPE_CHECKING:  # heavy modules are imported inside the functions, so --help stays instant
    from fastunet_core.inference.predict import PredictOptions
    from fastunet_core.io.sources import RasterSource
    from fastunet_core.polygons.options import VectorizeOptions
    from fastunet_core.runtime.distributed import DistContext

EXIT_SOME_FAILED = 4


@click.command()
@click.argument("rasters", nargs=-1, required=True)
@click.option("-m", "--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Checkpoint (.safetensors) written by 'fastunet-geo init' or 'train', or a Deepness-format "
              "ONNX model (.onnx).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Class raster to write (GeoTIFF), for a single input.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="Folder for many inputs: writes NAME_classes.tif per input and a summary.")
@click.option("--tile", "tile_size", type=int, default=None,
              help="Tile size in the model's pixels [default: the model's].")
@click.option("--overlap", type=int, default=None,
              help="Overlap between tiles in the model's pixels, 0 to tile - 1, also when tiles are read resampled "
              "[default: the model's].")
@click.option("--batch-size", type=int, default=None, help="Tiles per model call [default: 1 on CPUs, 4 on CUDA].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:N or cpu.")
@click.option("--blend", type=click.Choice(["cosine", "core"]), default="cosine", show_default=True,
              help="cosine: blend overlaps smoothly (no seams); core: keep each tile's centre only (faster).")
@click.option("--bands", default=None, help="Raster bands to use, in model order, e.g. 3,2,1 [default: the model's].")
@click.option("--probs", "probs_path", type=click.Path(path_type=Path), default=None,
              help="Single input: also write per-class probabilities (percent) to this GeoTIFF.")
@click.option("--with-probs", is_flag=True, help="Many inputs: also write NAME_probs.tif per input.")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Many inputs: summary file, .csv or .json [default: OUT_DIR/summary.csv].")
@click.option("--skip-existing", is_flag=True, help="Many inputs: keep finished outputs (resume a stopped run).")
@click.option("--vector", "vector_path", type=click.Path(path_type=Path), default=None,
              help="Single input: also write class polygons (.gpkg, .shp or .geojson; a GeoPackage also holds "
              "its style, so read it with layer=, the file's name without .gpkg).")
@click.option("--with-vector", is_flag=True,
              help="Many inputs: also write NAME_classes.gpkg per input (layer NAME_classes).")
@click.option("--simplify", type=float, default=0.0, show_default=True, help="Polygons: simplify tolerance (m).")
@click.option("--min-area", type=float, default=0.0, show_default=True, help="Polygons: drop smaller ones (m2).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: on CPUs bf16 where the CPU has native bf16 (AVX512-BF16 or AMX) and the model's "
              "recorded bf16-vs-fp32 class agreement is at least 99.9 %, else fp32; on CUDA autocast, in bf16 "
              "where the GPU has it natively, else fp16. fp16 is for CUDA only. CPU bf16 keeps in fp32 the "
              "few layers the agreement measurement chose (recorded with it). The run says which and why.")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="auto: ONNX Runtime for fp32 on CPUs when installed (about 2x PyTorch fp32), else PyTorch "
              "(also for bf16, which --precision auto may choose, and on CUDA).")
@click.option("--resolution", default="auto", show_default=True,
              help="Ground resolution to run the model at: auto (the model's own when the raster's differs by "
              "more than 10 %), native (the raster's pixels), or metres, e.g. 0.3. Tiles are read resampled "
              "(bilinear); the class map stays on the raster's grid.")
@click.option("--output-grid", type=click.Choice(["source", "model"]), default="source", show_default=True,
              help="Grid of the class map when resampling: the source raster's, or the one the model ran on.")
@click.option("--head", type=int, default=None,
              help="ONNX models with several outputs: run only this one (0-based) [default: all, one class "
              "raster OUT_headK.tif each, and polygons VECTOR_headK.gpkg with --vector].")
@click.option("--model-classes", default=None,
              help="Class names for a model file without them (ONNX), e.g. background,tree=#00ff00.")
@click.option("--model-resolution", type=float, default=None,
              help="Ground resolution (m/px) the model was trained at, for a model file without it (ONNX).")
@click.option("--seg-thresh", type=float, default=None,
              help="ONNX models: probability threshold (sigmoid outputs: class where p >= it; softmax: weaker "
              "probabilities ignored) [default: the model's seg_thresh, else 0.5 for sigmoid outputs].")
@click.option("--allow-no-crs", is_flag=True,
              help="Segment a raster that has a geotransform but no CRS (refused by default: its class map "
              "could not be placed on a map; gdal_edit.py -a_srs EPSG:N assigns one).")
@click.option("--no-prefetch", is_flag=True, help="Do not read tiles ahead on a background thread.")
@click.option("--cog", is_flag=True,
              help="Write class rasters as Cloud Optimized GeoTIFFs (default: tiled GeoTIFFs with overviews).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--no-resume", is_flag=True,
              help="Start over instead of continuing an interrupted run's finished rows, and keep nothing when "
                   "interrupted.")
@click.pass_context
def predict(ctx: click.Context, rasters: tuple[str, ...], model_path: Path, output: Path | None,
            out_dir: Path | None, tile_size: int | None, overlap: int | None, batch_size: int | None, device: str,
            blend: str, bands: str | None, probs_path: Path | None, with_probs: bool, summary_path: Path | None,
            skip_existing: bool, vector_path: Path | None, with_vector: bool, simplify: float, min_area: float,
            precision: str, engine: str, resolution: str, output_grid: str, head: int | None, model_classes: str | None,
            model_resolution: float | None, seg_thresh: float | None, allow_no_crs: bool, no_prefetch: bool, cog: bool,
            overwrite: bool, no_resume: bool) -> None:
    """Segment RASTERS into georeferenced class maps.

    RASTERS are files (GeoTIFF, VRT ...), folders, glob patterns or .txt lists with one path per line.
    Several GPUs or machines: start the same command with torchrun; each process takes a share.
    An interrupted run (Ctrl-C, SIGTERM) keeps the rows it finished; the same command continues from there.

    \b
    Example:
      fastunet-geo predict ortho.tif -m model.safetensors -o classes.tif --probs probs.tif
      fastunet-geo predict ortho.tif -m model.safetensors -o classes.tif --vector landcover.gpkg --min-area 20
      fastunet-geo predict sheets/ -m model.safetensors --out-dir out/ --skip-existing
      torchrun --nproc-per-node 4 -m fastunet_core.cli predict 'campaign/*.tif' -m model.safetensors --out-dir out/
    """
    from fastunet_core.errors import ConfigError
    from fastunet_core.inference.batch import expand_inputs
    from fastunet_core.inference.predict import PredictOptions
    from fastunet_core.models.deepness import ModelOverrides
    from fastunet_core.polygons.options import VectorizeOptions
    from fastunet_core.runtime import distributed

    # before torch is loaded (if at all): its OpenMP threads then sleep between layers instead of spinning,
    # which halved the CPU time of the bf16 path on a shared 2-core machine (README, "the CPU paths")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet = ctx.obj.get("quiet", False)
    stop_on_sigterm()
    inputs = expand_inputs(rasters)
    dist_ctx = distributed.context_from_env()
    batch = out_dir is not None or len(inputs) > 1 or dist_ctx.enabled
    opts = PredictOptions(tile_size_px=tile_size, overlap_px=overlap, batch_size=batch_size,
                          device=distributed.rank_device(device, dist_ctx), blend=blend,
                          bands=parse_int_list(bands, "--bands"), probs_path=probs_path, overwrite=overwrite,
                          prefetch=not no_prefetch, precision=precision, engine=engine, resume=not no_resume, cog=cog,
                          resolution=resolution, output_grid=output_grid, allow_no_crs=allow_no_crs,
                          model=ModelOverrides(classes=model_classes, resolution_m=model_resolution,
                                               seg_thresh=seg_thresh, head=head))
    vec = VectorizeOptions(simplify_m=simplify, min_area_m2=min_area, overwrite=overwrite, workers=default_workers())
    if not batch:
        if output is None:
            raise ConfigError("give the output with -o OUT.tif (or --out-dir DIR for many inputs)")
        with _single_targets(inputs[0], model_path, output, probs_path, vector_path):
            _segment_one(inputs[0], model_path, output, opts, vector_path, vec, quiet)
        return
    given = "/".join(flag for flag, value in (("-o", output), ("--probs", probs_path), ("--vector", vector_path))
                     if value is not None)
    if given and len(inputs) == 1 and out_dir is not None:
        raise ConfigError(f"--out-dir writes NAME_classes.tif (and NAME_probs.tif with --with-probs, "
                          f"NAME_classes.gpkg with --with-vector), not {given}; for one input either drop --out-dir "
                          f"or use --with-probs/--with-vector instead of --probs/--vector")
    if given:
        raise ConfigError(f"with several inputs use --out-dir DIR (with --with-probs, --with-vector) instead of "
                          f"{given}")
    if out_dir is None:
        raise ConfigError("several inputs need --out-dir DIR")
    code = _predict_batch(inputs, model_path, out_dir, opts, with_probs, summary_path, skip_existing, quiet, dist_ctx,
                          vec if with_vector else None)
    distributed.end_process(dist_ctx, code)
    ctx.exit(code)


def _single_targets(raster: RasterSource, model_path: Path, output: Path, probs_path: Path | None,
                    vector_path: Path | None) -> AbstractContextManager[None]:
    """Refuse outputs that are an input or each other; return the locks of every output, for the whole run."""
    from fastunet_core.io.targets import Role, check_distinct, check_raster_suffix, target_locks

    outputs = [Role("output (-o)", output)]
    if probs_path is not None:
        outputs.append(Role("--probs output", probs_path))
    if vector_path is not None:
        from fastunet_core.io.vector_output import output_roles  # pyogrio: only with polygons

        outputs += output_roles(vector_path, "--vector output")
    check_distinct([Role("input raster", raster), Role("model", model_path)], outputs)
    # after the clash check, whose refusal matters more: an input would be destroyed
    check_raster_suffix(output, "output (-o)")
    if probs_path is not None:
        check_raster_suffix(probs_path, "--probs output")
    return target_locks([output, probs_path, vector_path])


def _segment_one(raster: RasterSource, model_path: Path, output: Path, opts: PredictOptions, vector_path: Path | None,
                 vec: VectorizeOptions, quiet: bool) -> None:
    from fastunet_core.inference.segment import segment_raster

    with BarProgress(enabled=not quiet) as bar:  # one bar, started again for each stage
        done = segment_raster(raster, model_path, output, opts, vector_output=vector_path, vectorize=vec,
                              progress=lambda _stage: bar)
    result = done.prediction
    if not quiet:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        names = ", ".join(str(p) for p in result.outputs) if len(result.outputs) > 1 else str(result.output)
        this_run = f" ({result.tiles_total - result.tiles_resumed} in this run)" if result.tiles_resumed else ""
        click.echo(
            f"wrote {names} ({result.megapixels:.1f} Mpx, {counted(result.tiles_total, 'tile')}{this_run}, "
            f"{result.tiles_skipped} without data) in {result.seconds:.1f} s on {result.device.name}",
            err=True,
        )
        for vectorized in done.vectorized_heads:
            click.echo(f"wrote {vectorized.output} ({counted(vectorized.polygons, 'polygon')})", err=True)
    # those about the input came before the progress bar (not with -q: the bar's messages are not shown then)
    for w in done.warnings if quiet else done.warnings_not_shown:
        click.echo(f"warning: {w}", err=True)


def _predict_batch(inputs: list[RasterSource], model_path: Path, out_dir: Path, opts: PredictOptions, with_probs: bool,
                   summary_path: Path | None, skip_existing: bool, quiet: bool, dist_ctx: DistContext,
                   vec: VectorizeOptions | None) -> int:
    from fastunet_core.inference.batch import run_batch

    with BarProgress(enabled=not quiet and dist_ctx.is_main) as bar:
        run = run_batch(inputs, model_path, out_dir, opts, with_probs, summary_path, skip_existing, vec, bar, dist_ctx)
    if run.is_main:
        n_ok = sum(1 for i in run.result.items if i.status != "failed")
        if not quiet:
            click.echo(f"{n_ok} of {len(run.result.items)} rasters done; summary: {run.summary}", err=True)
        for item in run.result.failed:
            click.echo(f"failed: {item.input}: {item.message}", err=True)
        if any(item.error == "OutputExistsError" for item in run.result.failed):
            click.echo("pass --overwrite to replace existing outputs, or --skip-existing to keep them", err=True)
    return 0 if run.result.all_succeeded else EXIT_SOME_FAILED
