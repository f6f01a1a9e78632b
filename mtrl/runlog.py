"""Run logging: one log file per run directory plus concise console lines that do not break progress bars."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import tqdm

LOGGER_NAME = "mtrl"
log = logging.getLogger(LOGGER_NAME)


class _TqdmHandler(logging.Handler):
    """Console handler that prints through tqdm so active progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)  # stdout stays free for command output
        except Exception:  # a broken console must not kill a stage
            self.handleError(record)


def setup_logging(run_dir: Path | None, verbose: bool = False) -> None:
    """Log to `<run_dir>/logs/mtrl.log` (everything, with timestamps) and to the console (INFO and up)."""
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = _TqdmHandler()
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if run_dir is not None:
        path = Path(run_dir) / "logs" / "mtrl.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(path, mode="a")
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(levelname)s %(message)s"))
        log.addHandler(file)
