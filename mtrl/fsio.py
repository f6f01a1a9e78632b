"""Writing files safely: atomic replacement, and disk failures (full, read-only, no permission) as one-line errors.

Every file mtrl writes goes to a temporary name beside its target and is renamed into place when complete, so
a failure or a kill never leaves a half-written file under the real name, and the temporary one is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mtrl.errors import DiskError

# errno -> what to do about it; the problems the user can fix, as opposed to bugs
_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space (or use another --run-dir), then rerun; finished "
                  "artifacts are intact and the stage resumes",
    errno.EDQUOT: "disk quota exceeded: free some space (or use another --run-dir), then rerun; finished artifacts "
                  "are intact and the stage resumes",
    errno.EROFS: "the file system is read-only: remount it read-write, or copy the run directory somewhere writable",
    errno.EACCES: "permission denied: make it writable by this user (chmod/chown), or use another directory",
    errno.EPERM: "operation not permitted: make it writable by this user (chmod/chown), or use another directory",
}


def error_number(error: BaseException) -> int | None:
    """The errno behind `error`: an OSError's own, or the one h5py writes into its message (its flush and
    close failures are RuntimeErrors carrying "errno = 28")."""
    if isinstance(error, OSError) and error.errno:
        return error.errno
    if isinstance(error, (OSError, RuntimeError)):
        match = re.search(r"errno = (\d+)", str(error))
        return int(match.group(1)) if match else None
    return None


def disk_error(error: BaseException, path: str | Path | None = None) -> DiskError | None:
    """`error` as a one-line DiskError naming the file and the fix when it is a disk problem; else None."""
    number = error_number(error)
    if number not in _FIXES:
        return None
    where = path if path is not None else getattr(error, "filename", None)
    return DiskError(f"cannot write {where}: {_FIXES[number]}" if where else _FIXES[number])


def temporary_path(path: Path) -> Path:
    """Where `path` is built before it is renamed into place: hidden, beside it, named after this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def translated(path: str | Path | None = None) -> Iterator[None]:
    """Raise disk failures inside the block as a DiskError naming `path` (other errors pass unchanged)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if (error := disk_error(e, path)) is None:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; it replaces `path` when the block succeeds and is
    deleted when it fails. Disk failures become a DiskError naming `path`."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with translated(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, translated(path):
        tmp.write_text(text)


def writable(directory: Path) -> bool:
    """Whether files can be made in `directory`, or in the nearest existing parent it would be made in."""
    return os.access(_nearest_existing(Path(directory)), os.W_OK | os.X_OK)


def require_writable(directory: Path, option: str) -> None:
    """A DiskError before any work when `directory` (or the nearest existing parent it would be made in) cannot
    be written: a command fails at once, not after hours, and `option` names where to write instead."""
    if writable(directory):
        return
    number = errno.EROFS if _read_only(_nearest_existing(Path(directory))) else errno.EACCES
    raise DiskError(f"cannot write {directory}: {_FIXES[number].split(':')[0]}; make it writable or choose "
                    f"another directory with {option}")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
