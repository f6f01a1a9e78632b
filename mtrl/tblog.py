"""`--log tensorboard`: every training curve also as TensorBoard scalars, written by the `tensorboard` package.

`TensorBoardCurves` is a curve sink (`mtrl.artifacts.store.CurveSink`): the units' artifact writers call it with
the same tables they write as CSV, so TensorBoard shows exactly the curves stored in the artifacts. Event files
go to `RUN_DIR/tensorboard/<artifact path without .h5>/` (e.g. `tensorboard/sac/task_00`,
`tensorboard/policies/mbml`), one tag `<curve>/<column>` per column (e.g. `eval_curve/test_score`), the curve's
x axis (steps or epochs) as the step. Rewriting an artifact replaces its event files, so a rerun with `--force`
is shown once, not twice. `tensorboard` is imported only when a curve is written with the option on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mtrl.errors import ConfigError

if TYPE_CHECKING:
    from mtrl.artifacts.store import CurveTable

LOG_CHOICES = ("tensorboard",)
INSTALL = "pip install 'mtrl-batch[tensorboard]'"


def check_available() -> None:
    """Fail before any work starts when `--log tensorboard` is asked for but the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"--log tensorboard needs the tensorboard package: {INSTALL}") from None


class TensorBoardCurves:
    """Writes an artifact's curves as TensorBoard event files under `<run_dir>/tensorboard/`."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def log_dir(self, artifact_path: Path) -> Path:
        return self.run_dir / "tensorboard" / Path(artifact_path).relative_to(self.run_dir).with_suffix("")

    def __call__(self, artifact_path: Path, curves: Mapping[str, CurveTable]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        target = self.log_dir(artifact_path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")  # a killed writer leaves no partial run
        shutil.rmtree(tmp, ignore_errors=True)
        writer = SummaryWriter(log_dir=str(tmp))
        try:
            for name, (header, rows) in curves.items():
                for column, values in zip(header[1:], rows[:, 1:].T, strict=True):
                    for x, y in zip(rows[:, 0], values, strict=True):
                        writer.add_scalar(f"{name}/{column}", float(y), int(round(x)))
        finally:
            writer.close()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
