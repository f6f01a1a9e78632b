"""The click group `mtrl` and its error handling; the commands register on it (mtrl.cli.stages, .tools)."""

from __future__ import annotations

import click

from mtrl import __version__
from mtrl.errors import MtrlError
from mtrl.fsio import disk_error


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
def main() -> None:
    """Multi-task batch RL pipeline: MBML and its baselines on MuJoCo task distributions.

    Every stage reads and writes HDF5 artifacts under one run directory and is skipped when its outputs are
    up to date. Typical use:

    \b
      mtrl collect --config configs/point_goal_arc.yaml --profile smoke --run-dir runs/demo
      mtrl status runs/demo
    """
