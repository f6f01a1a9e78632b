"""Unit locks: two commands, or two cluster jobs, on one run directory never compute the same unit at once.

A unit's lock is held by the process computing it, from its start to its last artifact. Whoever comes second
says that it waits, waits, and then finds the unit up to date and skips it (or, if the first one failed or
ran with another config, computes it); of a group of units that one command computes together, it skips those
up to date and computes the rest. Units are locked, not the run directory, so the array jobs of a
cluster launch fill one run directory side by side. The locks are `flock` locks (the `filelock` package): the
kernel releases them when their process dies, even by SIGKILL, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from mtrl.fsio import translated

LOCK_DIR = ".locks"


def unit_lock_path(run_dir: Path, stage: str, unit_key: str) -> Path:
    """`RUN_DIR/.locks/<stage>/<unit key>.lock` (a key's `/` becomes `--`: sac-init's `mbml/task_00`)."""
    return Path(run_dir) / LOCK_DIR / stage / f"{unit_key.replace('/', '--')}.lock"


@contextlib.contextmanager
def holding(paths: Sequence[Path], log: logging.Logger, what: str) -> Iterator[None]:
    """Hold the locks at `paths` for the block, waiting (and saying so once) while another process holds one.
    Taken in sorted order, so two commands locking overlapping groups of units cannot deadlock."""
    with contextlib.ExitStack() as held:
        for path in sorted(paths):
            with translated(path):
                path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info(f"{what}: another mtrl command or job is computing it; waiting for it to finish "
                         f"(lock {path})")
                lock.acquire()
            held.callback(lock.release)
        yield
