"""The `mtrl` command: one subcommand per stage plus `status`, `verify`, `inspect`, `config`, `report` and
`export-dataset`."""

from mtrl.cli import launch, stages, tools  # noqa: F401  (importing them registers their commands on `main`)
from mtrl.cli.group import main

__all__ = ["main"]
