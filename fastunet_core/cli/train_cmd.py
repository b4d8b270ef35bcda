"""``fastunet-geo train`` and ``fastunet-geo evaluate``."""

from __future__ import annotations

from pathlib import Path

import click

from fastunet_core.cli._common import BarProgress, stop_on_sigterm


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML run configuration (see training/).")
@click.argument("overrides", nargs=-1)
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (LoveDA, LandCover.ai or image/mask pairs; recognised by its layout) instead "
                   "of the config's data.kind and data.root. Image/mask pairs also need "
                   "data.class_names=[...] (and data.label_values=[...] if the mask codes are not 0..n-1).")
@click.option("--output", default=None, help="Run folder (checkpoints, history, curves) [default: the config's].")
@click.option("--device", default=None, help="auto, cuda, cuda:N or cpu [default: the config's].")
@click.option("--fresh", is_flag=True, help="Start over even if the run folder holds a run to resume.")
@click.pass_context
def train(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...], data_root: Path | None,
          output: str | None, device: str | None, fresh: bool) -> None:
    """Train a model; an interrupted run resumes where it stopped.

    OVERRIDES change config values: section.key=value (the value is YAML).

    \b
    Example:
      fastunet-geo train --config training/landcoverai/unet_skinny.yaml data.root=/data/landcover.ai
      fastunet-geo train -c run.yaml optim.epochs=3 optim.micro_batch=2 --device cpu
      fastunet-geo train --data /data/LoveDA model.architecture=unet_skinny data.tile_size=512
      fastunet-geo train --data /data/tiles data.class_names=[background,building]
      torchrun --nproc-per-node 4 -m fastunet_core.cli train -c run.yaml
    """
    from fastunet_core.runtime import distributed
    from fastunet_core.train.config import load_config
    from fastunet_core.train.datasets.layouts import data_section_for
    from fastunet_core.train.loop import train as run_training

    stop_on_sigterm()  # a job scheduler's time limit stops it like Ctrl-C: the finished epochs are kept
    extra = list(overrides)
    if output:
        extra.append(f"output={output}")
    if device:
        extra.append(f"device={device}")
    cfg = load_config(config_path, extra, data=data_section_for(data_root) if data_root is not None else None)
    with BarProgress(enabled=not ctx.obj.get("quiet", False), cancel_after_sigterm=True) as bar:
        result = run_training(cfg, bar, fresh=fresh)
    if result.history and not ctx.obj.get("quiet", False):
        best = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
        saved = [p for p in (result.best_checkpoint, result.last_checkpoint) if p.is_file()]
        where = f"checkpoint {saved[0]}" if saved else "no checkpoint was written"
        curves = result.output_dir / "curves.png"
        click.echo(f"best epoch {result.best_epoch}: val loss {best.val_loss:.4f}, val mIoU {best.val_miou:.4f}; "
                   f"{where}" + (f"; curves {curves}" if curves.is_file() else ""), err=True)
    distributed.end_process(distributed.context_from_env(), 0)


@click.command()
@click.option("-m", "--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Checkpoint to evaluate.")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config whose data section names the dataset.")
@click.argument("overrides", nargs=-1)
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (LoveDA, LandCover.ai or image/mask pairs; recognised by its layout) instead "
                   "of --config.")
@click.option("--split", default="val", show_default=True, help="Dataset split: train, val or test.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per batch [default: the run's validation batch (its micro-batch), so the JDT loss, "
                   "which sums over a batch, is the run's validation loss; 4 for a model not trained here]. "
                   "The IoUs do not depend on it.")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", default="auto", show_default=True,
              help="Loader processes reading the samples (auto: usable cores minus one; 0: none).")
@click.pass_context
def evaluate(ctx: click.Context, model_path: Path, config_path: Path | None, overrides: tuple[str, ...],
             data_root: Path | None, split: str, batch_size: int | None, device: str, workers: str) -> None:
    """Print a checkpoint's per-class IoU on a dataset split (dataset-level and the paper's metric).

    \b
    Example:
      fastunet-geo evaluate -m runs/skinny/best.safetensors -c training/loveda/unet_skinny.yaml --split val
      fastunet-geo evaluate -m best.safetensors --data /data/LoveDA --split val
      fastunet-geo evaluate -m best.safetensors data.kind=folder data.root=/data/tiles
    """
    from fastunet_core.train.evaluate import evaluate_checkpoint
    from fastunet_core.train.metrics import format_table

    stop_on_sigterm()
    num_workers: int | str = int(workers) if workers.isdigit() else workers
    result = evaluate_checkpoint(model_path, config_path, list(overrides), split, batch_size, device, data_root,
                                 num_workers)
    click.echo(format_table(result.report, result.class_names))
    batches = {"the run's": "as in the run's validation", "given": "as given", "default": "the default"}
    click.echo(f"{result.images} images, loss {result.loss:.4f} (JDT loss with {result.loss_settings} settings, "
               f"batches of {result.batch_size}, {batches[result.batch_source]}), device {result.device}")
