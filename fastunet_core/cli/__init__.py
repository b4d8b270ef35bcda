"""The ``fastunet-geo`` command line: a thin caller of the core's tool functions.

Heavy libraries (torch, rasterio) are imported inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from typing import Any

import click

from fastunet_core import __version__
from fastunet_core.cli import export_cmd, info_cmd, init_cmd, models_cmd, predict_cmd, train_cmd, vectorize_cmd
from fastunet_core.errors import CancelledError, FastUNetError, FastUNetWarning, OutputExistsError
from fastunet_core.io.gdal_log import GdalWarningsToDebug
from fastunet_core.io.write_errors import CAUSES, describe_os_error


class _Group(click.Group):
    """A group that turns our errors into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FastUNetError as exc:
            hint = "; pass --overwrite to replace it" if isinstance(exc, OutputExistsError) else ""
            click.echo(f"error: {exc}{hint}", err=True)
            ctx.exit(130 if isinstance(exc, CancelledError) else 1)
        except KeyboardInterrupt:
            click.echo("interrupted; no output was written", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            raise  # the reader of our output is gone (``| head``): click's main ends quietly
        except OSError as exc:
            if exc.errno not in CAUSES:
                self._internal(ctx, exc)
            click.echo(f"error: {describe_os_error(exc, exc.filename or 'a file')}", err=True)
            ctx.exit(1)
        except Exception as exc:
            self._internal(ctx, exc)

    @staticmethod
    def _internal(ctx: click.Context, exc: Exception) -> None:
        """Report a bug: say so in one line, traceback only with -v."""
        if ctx.obj and ctx.obj.get("verbose", 0) > 0:
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for details, and please "
                   "report it)", err=True)
        ctx.exit(3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fastunet-geo")
@click.option("-v", "--verbose", count=True, help="More output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Fast UNet segmentation of orthophotos and satellite images.

    \b
    Example:
      fastunet-geo init unet_tiny --classes background,building -o model.safetensors
      fastunet-geo predict ortho.tif --model model.safetensors -o classes.tif
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(GdalWarningsToDebug(show_debug=level <= logging.DEBUG))  # GDAL's remarks: with -vv only
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", handlers=[handler])
    logging.captureWarnings(True)
    warnings.simplefilter("ignore", FastUNetWarning)  # commands print these from their results


cli.add_command(predict_cmd.predict)
cli.add_command(init_cmd.init)
cli.add_command(info_cmd.info)
cli.add_command(models_cmd.models)
cli.add_command(train_cmd.train)
cli.add_command(train_cmd.evaluate)
cli.add_command(vectorize_cmd.vectorize)
cli.add_command(export_cmd.export)


def main() -> None:
    """Console-script entry point.

    Output read by a program that stops early (``fastunet-geo models | head -3``) ends the command quietly,
    as Unix tools end on SIGPIPE: also when the pipe breaks only as the buffered output is flushed at exit.
    """
    try:
        try:
            cli(prog_name="fastunet-geo")
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's own flush at exit fails no more
        sys.exit(1)
