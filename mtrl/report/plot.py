"""`mtrl plot`: any training curve of one or more runs (seeds), from the CSV files beside the artifacts.

A curve is named by its CSV file relative to the run directory, without `.csv`: `sac/task_00.curve`,
`bcq/task_03.curve`, `policies/mbml.eval_curve`, `policies/mbml.losses`, `sac_init/mbml/task_00.curves`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mtrl.fsio import require_writable, translated
from mtrl.report.aggregate import align, run_labels
from mtrl.report.collect import ReportError
from mtrl.report.figures import draw_curves


def read_curve(run_dir: Path, curve: str) -> tuple[list[str], np.ndarray]:
    """(header, rows) of a run's curve CSV; ReportError naming the file and the curves the run has."""
    path = Path(run_dir) / f"{curve}.csv"
    if not path.is_file():
        names = sorted(p.relative_to(run_dir).with_suffix("").as_posix() for p in Path(run_dir).rglob("*.csv"))
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise ReportError(f"{path}: no such curve; {run_dir} has: {shown or 'none (run a training stage first)'}")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))


def plot_curve(run_dirs: list[Path], curve: str, columns: tuple[str, ...] = (), out: Path | None = None) -> Path:
    """Each column's mean over the runs (± std), on the x values all runs share; returns the PNG's path."""
    from mtrl.report.collect import RunResults

    labels = run_labels([RunResults(Path(d), None) for d in run_dirs])
    tables = {label: read_curve(Path(d), curve) for label, d in zip(labels, run_dirs, strict=True)}
    header = next(iter(tables.values()))[0]
    x, available = header[0], header[1:]
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise ReportError(f"--y {unknown[0]}: not a column of {curve}; its columns: {', '.join(available)}")
    series = {}
    for column in columns or available:
        per_run = {}
        for label, (names, rows) in tables.items():
            if column in names:
                per_run[label] = (rows[:, 0], rows[:, names.index(column)])
        series[column] = align(per_run)
    out = Path(out) if out is not None else Path(run_dirs[0]) / "plots" / f"{curve.replace('/', '_')}.png"
    require_writable(out.parent, "--out")
    with translated(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_curves(series, out, f"{curve} ({', '.join(labels)})", x)
    return out
