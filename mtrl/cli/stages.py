"""One command per pipeline stage. Each resolves the config, then runs its stage(s) through the runner."""

from __future__ import annotations

import click

from mtrl.cli import main
from mtrl.cli.options import resolve, stage_options


def run_stages(names: list[str], extra: tuple[str, ...] = (), **opts) -> None:
    """Resolve the config (plus stage-specific overrides `extra`) and bring the named stages up to date."""
    from mtrl.stages.registry import get_stage
    from mtrl.stages.runner import run_stage

    config, options = resolve(extra=extra, **opts)
    for name in names:
        run_stage(get_stage(name), config, options)
    click.echo(f"done: {', '.join(names)} up to date in {options.run_dir}", err=True)
