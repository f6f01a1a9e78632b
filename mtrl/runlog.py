"""Run logging: one log file per run directory plus concise console lines that do not break progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import tqdm

from mtrl.fsio import translated

LOGGER_NAME = "mtrl"
log = logging.getLogger(LOGGER_NAME)


class _TqdmHandler(logging.Handler):
    """Console handler that prints through tqdm so active progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)  # stdout stays free for command output
        except Exception:  # a broken console must not kill a stage
            self.handleError(record)


class _RunLogHandler(logging.FileHandler):
    """The run's log file. When it cannot be written (a full disk) it says so once and stops, instead of
    printing a traceback for every later line; the console keeps logging."""

    def handleError(self, record: logging.LogRecord) -> None:
        if self.level > logging.CRITICAL:
            return
        self.setLevel(logging.CRITICAL + 1)
        reason = sys.exc_info()[1]
        tqdm.tqdm.write(f"warning: cannot write {self.baseFilename} ({reason}); logging to the console only",
                        file=sys.stderr)


QUIET, NORMAL, VERBOSE = -1, 0, 1  # console verbosity: `mtrl --quiet`, the default, `mtrl -v`
CONSOLE_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


def setup_logging(run_dir: Path | None, verbosity: int = NORMAL) -> None:
    """Log to `<run_dir>/logs/mtrl.log` (everything, with timestamps, whatever the verbosity) and to the console:
    warnings and errors only (QUIET), INFO and up (NORMAL), or debug detail too (VERBOSE)."""
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        with contextlib.suppress(OSError):  # a log file on a full disk cannot flush its last lines
            handler.close()
    console = _TqdmHandler()
    console.setLevel(CONSOLE_LEVELS[verbosity])
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if run_dir is not None:
        path = Path(run_dir) / "logs" / "mtrl.log"
        with translated(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            file = _RunLogHandler(path, mode="a")
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(levelname)s %(message)s"))
        log.addHandler(file)


class LogProgress:
    """Progress of a long loop as a log line every `every` seconds, for output that is not a terminal (Slurm,
    nohup, a log file), where a tqdm bar prints nothing: unit, step/total, rate, ETA and the latest postfix (an
    evaluation return, a loss). The same `update`/`set_postfix`/`close` as the tqdm bar it stands in for."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, every: float, logger: logging.Logger,
                 clock=time.monotonic):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.log, self.clock = logger, clock
        self.postfix = ""
        self._start_n, self._start = initial, clock()
        self._last = self._start

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.log.info(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        text = (f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f}%), "
                f"{rate:.3g} {self.unit}s/s, ETA {_duration(eta)}")
        return f"{text}, {self.postfix}" if self.postfix else text

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        pass


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_bar(total: int, desc: str, unit: str, initial: int, position: int, log_every: float,
                 logger: logging.Logger = log, quiet: bool = False):
    """A tqdm bar on a terminal; otherwise `LogProgress` lines every `log_every` seconds (none if 0). `quiet`
    (`mtrl --quiet`): no bar, and the lines, at INFO, reach the log file but not the console."""
    if log_every > 0 and (quiet or not sys.stderr.isatty()):
        return LogProgress(total, desc, unit, initial, log_every, logger)
    return tqdm.tqdm(total=total, initial=initial, unit=unit, desc=desc, position=position, leave=False,
                     dynamic_ncols=True, disable=True if quiet else None, mininterval=0.5)
