"""The click group `mtrl` and its error handling; the commands register on it (mtrl.cli.stages, .tools)."""

from __future__ import annotations

import click

from mtrl import __version__
from mtrl.errors import ConfigError, MtrlError
from mtrl.fsio import disk_error
from mtrl.runlog import NORMAL, QUIET, VERBOSE, setup_logging


class MtrlGroup(click.Group):
    """Turns user-facing errors, and full, read-only or forbidden disks, into one line on stderr and exit status 2,
    without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (MtrlError, OSError, RuntimeError) as e:  # OS errors: a disk failure is the user's to fix
            error = e if isinstance(e, MtrlError) else disk_error(e)
            if error is None:
                raise
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=MtrlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mtrl")
@click.option("-v", "--verbose", is_flag=True,
              help="Debug detail on the console: why each unit runs or is skipped (its fingerprint and outputs' "
                   "states), workers and threads, per-unit timings, tracebacks of failed units.")
@click.option("-q", "--quiet", is_flag=True,
              help="Only warnings, errors and results on the console: no progress bars or progress lines, no info "
                   "lines (RUN_DIR/logs/mtrl.log still gets everything).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Multi-task batch RL pipeline: MBML and its baselines on MuJoCo task distributions.

    Every stage reads and writes HDF5 artifacts under one run directory and is skipped when its outputs are
    up to date. Typical use:

    \b
      mtrl collect --config configs/point_goal_arc.yaml --profile smoke --run-dir runs/demo
      mtrl status runs/demo
    """
    if verbose and quiet:
        raise ConfigError("-v and --quiet contradict each other; pass one of them")
    ctx.obj = QUIET if quiet else VERBOSE if verbose else NORMAL  # the commands read it: `verbosity()`
    setup_logging(None, ctx.obj)  # the console from the first line on; a stage adds its run's log file


def verbosity() -> int:
    """The console verbosity the top-level options chose (NORMAL outside a command line, e.g. in tests)."""
    ctx = click.get_current_context(silent=True)
    return NORMAL if ctx is None or ctx.obj is None else ctx.obj
