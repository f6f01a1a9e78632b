"""`mtrl report`: figures and results.md from the artifacts of one or more run directories (seeds).

Pure reading and plotting: `collect` reads each run directory, `aggregate` combines the runs, `figures` and
`markdown` draw and write what `aggregate` computed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mtrl.fsio import require_writable, translated, write_text
from mtrl.report.collect import ReportError


def write_report(run_dirs: list[Path], out: Path | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """Write the figures and results.md for `run_dirs` into `out` (default: <first run dir>/report); `warn` hears
    of each run with missing or unreadable artifacts (the report is made from what exists)."""
    from mtrl.report.aggregate import summarise
    from mtrl.report.collect import collect_run
    from mtrl.report.figures import draw_figures
    from mtrl.report.markdown import render

    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise ReportError("a run directory is given twice; each one is a separate run (seed)")
    runs = [collect_run(Path(d)) for d in run_dirs]
    for run_dir, run in zip(run_dirs, runs, strict=True):
        if run.missing and warn is not None:
            warn(f"{run_dir}: {run.missing_count} expected artifact(s) missing or unreadable, e.g. {run.missing[0]}; "
                 "the report lists them and uses what exists")
    out = Path(out) if out is not None else Path(run_dirs[0]) / "report"
    require_writable(out, "--out")
    summary = summarise(runs)
    with translated(out):
        out.mkdir(parents=True, exist_ok=True)
        figures = draw_figures(summary, out)
    path = out / "results.md"
    write_text(path, render(runs, summary, figures))
    return path


__all__ = ["ReportError", "write_report"]
