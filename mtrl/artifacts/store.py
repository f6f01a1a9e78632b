"""Atomic, self-describing HDF5 artifacts.

Every artifact records what produced it (kind, schema version, stage, stage config, input fingerprints, its own
fingerprint, package versions, seed, creation time) and a completion flag written last. Writes go to a
temporary file in the target's directory that is renamed into place only when complete, so a killed writer
never leaves a half-written artifact at the target path.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mtrl.artifacts.schemas import Schema, schema_for
from mtrl.artifacts.tree import checksummed, read_tree, write_tree
from mtrl.errors import ArtifactError
from mtrl.fsio import atomic_path

CurveTable = tuple[list[str], np.ndarray]  # column names (the x axis first) and rows of float64 values
# Called with the artifact's path and its curves once it is complete, before it is renamed into place.
CurveSink = Callable[[Path, Mapping[str, CurveTable]], None]


class SchemaVersionError(ArtifactError):
    """An artifact of another schema version: the runner reports it stale, and rewrites it, instead of reading it."""


VERSIONED_PACKAGES = ("mtrl-batch", "torch", "mujoco", "gymnasium", "numpy", "h5py")
COMPLETE_ATTR = "complete"


def package_versions() -> dict[str, str]:
    """Versions of the packages whose changes alter results (trajectories differ across MuJoCo versions), and
    of mtrl itself down to the git commit."""
    versions = {"python": platform.python_version(), "mtrl": code_version(Path(__file__).resolve().parents[2])}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def code_version(source_dir: Path) -> str:
    """mtrl's version, plus `+g<commit>` when `source_dir` is a git checkout and `.dirty` when tracked files
    there have uncommitted changes: which code made an artifact, beyond the release number."""
    from mtrl import __version__

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != source_dir.resolve():
            return __version__  # installed into a virtualenv that happens to sit inside some git checkout
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an installed wheel)
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if dirty else "")


def fingerprint(stage: str, schema_version: int, config: Any, inputs: dict[str, str], params: Any = None) -> str:
    """Hash of everything that determines an artifact's content: stage, config, inputs, schema, unit params."""
    payload = {"stage": stage, "schema": schema_version, "config": config, "inputs": inputs, "params": params}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class ArtifactMeta:
    """Provenance attributes carried by every artifact."""

    kind: str
    stage: str
    config: Any = None
    inputs: dict[str, str] = field(default_factory=dict)
    params: Any = None
    seed: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # extra attributes, not fingerprinted (e.g. wall time)

    @property
    def schema(self) -> Schema:
        return schema_for(self.kind)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.stage, self.schema.version, self.config, self.inputs, self.params)


class ArtifactWriter:
    """Context manager that builds an artifact in memory and writes it into place on success.

    >>> with ArtifactWriter(path, ArtifactMeta("dataset", "collect", cfg)) as w:
    ...     w.array("observations", obs)

    The HDF5 file is built in memory (HDF5's core driver) and written to disk in one piece at the end, through a
    temporary file renamed into place: HDF5's own writes on a full disk fail in object destructors and can crash
    the interpreter, a plain file write fails with one clean error.
    """

    def __init__(self, path: str | Path, meta: ArtifactMeta, curve_sinks: Sequence[CurveSink] = (),
                 keep: bool = True):
        self.path = Path(path)
        self.meta = meta
        self.keep = keep  # False: build the artifact and drop it, writing nothing (`UnitContext.writes`)
        self.file: h5py.File | None = None
        self._curves: dict[str, CurveTable] = {}  # curve name -> table, for the sinks
        self.curve_sinks = (write_csv_curves, *curve_sinks)

    def __enter__(self) -> ArtifactWriter:
        # the name only identifies the in-memory file to HDF5, which refuses two open under one name
        self.file = h5py.File(f"{self.path}.{id(self)}", "w", driver="core", backing_store=False)
        self._write_provenance(self.file.attrs)
        return self

    def _write_provenance(self, attrs: h5py.AttributeManager) -> None:
        attrs["kind"] = self.meta.kind
        attrs["schema_version"] = self.meta.schema.version
        attrs["stage"] = self.meta.stage
        attrs["config"] = json.dumps(self.meta.config, sort_keys=True)
        attrs["inputs"] = json.dumps(self.meta.inputs, sort_keys=True)
        attrs["params"] = json.dumps(self.meta.params, sort_keys=True)
        attrs["fingerprint"] = self.meta.fingerprint
        attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
        attrs["seed"] = -1 if self.meta.seed is None else self.meta.seed
        attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for key, value in self.meta.attrs.items():
            attrs[key] = value
        attrs[COMPLETE_ATTR] = False

    @property
    def attrs(self) -> h5py.AttributeManager:
        assert self.file is not None
        return self.file.attrs

    def array(self, name: str, data: np.ndarray, compression: str | None = None) -> None:
        """Store an array; row-chunked so reading rows (transitions) is cheap."""
        assert self.file is not None
        data = np.asarray(data)
        chunks = None
        if compression and data.ndim >= 1 and data.shape[0] > 0:
            rows = max(1, min(data.shape[0], 65536 // max(1, int(np.prod(data.shape[1:])))))
            chunks = (rows, *data.shape[1:])
        self.file.create_dataset(name, data=data, compression=compression, chunks=chunks,
                                 fletcher32=checksummed(data))

    def tree(self, name: str, tree: Any) -> None:
        """Store nested state (weights, optimiser state, curves) without pickle, each array under its keys' names
        (`curve/return_mean`; the naming rule is in `mtrl.artifacts.tree`)."""
        assert self.file is not None
        write_tree(self.file.create_group(name), tree)

    def json(self, name: str, value: Any) -> None:
        """Store a small JSON-able value as an attribute (summaries, names)."""
        self.attrs[name] = json.dumps(value, sort_keys=True)

    def curve(self, name: str, columns: Mapping[str, np.ndarray], x: str,
              also: Mapping[str, np.ndarray] | None = None) -> None:
        """Store a training curve as `tree(name, columns | also)` and hand its `columns` (equal lengths, `x`
        first) to the curve sinks once the artifact is complete: always a CSV file next to the artifact
        (`task_00.h5` → `task_00.<name>.csv`) for anyone's plotting tools, plus those passed to the writer."""
        self.tree(name, dict(columns) | dict(also or {}))
        header = [x, *(k for k in columns if k != x)]
        table = [np.asarray(columns[k], np.float64) for k in header]
        if any(c.shape != table[0].shape or c.ndim != 1 for c in table):
            raise ValueError(f"curve {name}: columns of different lengths {[c.shape for c in table]}")
        self._curves[name] = (header, np.column_stack(table))  # [rows, columns], also for no rows

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.file is not None
        if exc_type is not None or not self.keep:
            self.file.close()
            return
        self.file.attrs[COMPLETE_ATTR] = True
        self.file.flush()
        image = self.file.id.get_file_image()
        self.file.close()
        _remove_orphaned_temporaries(self.path)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(image)
                fh.flush()
                os.fsync(fh.fileno())
            if self._curves:  # before the rename: complete means its curve files exist
                for sink in self.curve_sinks:
                    sink(self.path, self._curves)
        _fsync_dir(self.path.parent)


def csv_path(artifact_path: Path, curve: str) -> Path:
    """Where an artifact's curve is also written as CSV: beside it, `<stem>.<curve>.csv`."""
    return artifact_path.with_name(f"{artifact_path.stem}.{curve.replace('/', '.')}.csv")


def write_csv_curves(artifact_path: Path, curves: Mapping[str, CurveTable]) -> None:
    """The curve sink every writer has: each curve as `csv_path(artifact_path, name)`, written atomically."""
    for name, (header, rows) in curves.items():
        with atomic_path(csv_path(artifact_path, name)) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows.tolist())


def _remove_orphaned_temporaries(path: Path) -> None:
    """Delete temporary files that killed writers of `path` left behind (their process no longer exists)."""
    for tmp in [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.stem}.*.csv.tmp-*")]:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, owned by someone else
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Artifact:
    """An open, validated artifact. Use as a context manager, or call `close()`."""

    def __init__(self, path: Path, file: h5py.File):
        self.path, self.file = path, file

    def __enter__(self) -> Artifact:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @property
    def attrs(self) -> Attributes:
        """The artifact's own attributes, read-only, as Python values (`art.attrs["final_return"]`)."""
        return Attributes(self.path, self.file.attrs)

    @property
    def kind(self) -> str:
        return self.attrs["kind"]

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def seed(self) -> int:
        return self.attrs["seed"]

    def meta(self, name: str) -> Any:
        """A JSON attribute (config, inputs, params, versions, or one written with `ArtifactWriter.json`)."""
        return json.loads(self.attrs[name])

    def array(self, name: str) -> np.ndarray:
        with self._reading(name):
            return self._get(name)[()]

    def tree(self, name: str) -> Any:
        with self._reading(name):
            return read_tree(self._get(name))

    @contextlib.contextmanager
    def _reading(self, name: str):
        """HDF5 read failures (a checksum mismatch, a damaged chunk) as one `ArtifactError` naming the file."""
        try:
            yield
        except OSError as e:
            raise ArtifactError(f"{self.path}: '{name}' is corrupt ({str(e).strip().splitlines()[0]}); delete the "
                                f"file and rerun stage '{self.attrs['stage']}' to recreate it") from None

    def __contains__(self, name: str) -> bool:
        return name in self.file

    def _get(self, name: str) -> Any:
        try:
            return self.file[name]
        except KeyError:
            raise ArtifactError(f"{self.path}: has no '{name}'; it is corrupt — rerun its stage with --force") from None


class Attributes(Mapping[str, Any]):
    """Read-only view of an artifact's root attributes, decoded: NumPy scalars become int/float/bool, bytes
    become str, arrays stay arrays. JSON-valued attributes (config, inputs, params, versions, and those written
    with `ArtifactWriter.json`) come back as their JSON text; `Artifact.meta(name)` parses them."""

    def __init__(self, path: Path, attrs: h5py.AttributeManager):
        self._path, self._attrs = path, attrs

    def __getitem__(self, name: str) -> Any:
        try:
            value = self._attrs[name]
        except KeyError:
            raise KeyError(f"{self._path}: has no attribute '{name}'") from None
        if isinstance(value, bytes):
            return value.decode()
        return value.item() if isinstance(value, np.generic) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, name: object) -> bool:
        return name in self._attrs


def open_artifact(path: str | Path, kind: str | None = None) -> Artifact:
    """Open and validate an artifact: exists, is HDF5, complete, of the expected kind and schema version."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: not found")
    try:
        file = h5py.File(path, "r")
    except OSError:
        raise ArtifactError(
            f"{path}: not a readable HDF5 file; if it is an mtrl artifact it is corrupt or truncated: delete it "
            "and rerun the stage that wrote it"
        ) from None
    try:
        _validate(path, file, kind)
    except BaseException:
        file.close()
        raise
    return Artifact(path, file)


def _validate(path: Path, file: h5py.File, kind: str | None) -> None:
    attrs = file.attrs
    if "kind" not in attrs:
        raise ArtifactError(f"{path}: not an mtrl artifact (no 'kind' attribute)")
    if not bool(attrs.get(COMPLETE_ATTR, False)):
        raise ArtifactError(f"{path}: incomplete artifact (its writer did not finish); rerun its stage with --force")
    found = str(attrs["kind"])
    if kind is not None and found != kind:
        raise ArtifactError(f"{path}: is a '{found}' artifact, expected '{kind}'")
    schema = schema_for(found)
    version = int(attrs.get("schema_version", -1))
    if version != schema.version:
        age = "an older" if version < schema.version else "a newer"
        raise SchemaVersionError(
            f"{path}: '{found}' schema version {version} was written by {age} mtrl (this one reads version "
            f"{schema.version}); rerun stage '{attrs.get('stage', '?')}' to rewrite it (`mtrl run`, or the stage's "
            "own command with --force)"
        )
    missing = [name for name in schema.required if name not in file]
    if missing:
        raise ArtifactError(f"{path}: missing {', '.join(missing)}; it is corrupt — rerun its stage with --force")


def damage(path: str | Path, kind: str | None = None) -> str | None:
    """Why the artifact at `path` cannot be trusted, or None when it is whole: it opens as a complete artifact of
    `kind` and every dataset reads in full, so every checksummed array (`tree.checksummed`) passes its Fletcher-32
    check. `mtrl status` reads only the attributes and would call a file with flipped data bytes up to date. An
    artifact of another schema version is stale rather than damaged; its data is checked all the same."""
    try:
        art = open_artifact(path, kind)
    except SchemaVersionError:
        art = Artifact(Path(path), h5py.File(path, "r"))
    except ArtifactError as e:
        return str(e)
    with art:
        return _unreadable_dataset(art.file)


def _unreadable_dataset(file: h5py.File) -> str | None:
    """The first dataset of `file` that fails to read (a checksum mismatch, a damaged chunk or header, data cut
    off), read chunk by chunk so that a large artifact need not fit in memory; None when all read."""
    names: list[str] = []
    reading = "its layout"
    try:
        file.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        for name in names:
            reading, dataset = f"'{name}'", file[name]
            for chunk in dataset.iter_chunks() if dataset.chunks else [()]:
                dataset[chunk]
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        return f"{file.filename}: {reading} is corrupt ({str(e).strip().splitlines()[0]})"
    return None


def read_fingerprint(path: str | Path, kind: str | None = None) -> str:
    """The fingerprint of a valid artifact (raises ArtifactError otherwise)."""
    with open_artifact(path, kind) as art:
        return art.fingerprint


def describe(path: str | Path) -> dict[str, Any]:
    """Everything `mtrl inspect` shows: provenance attributes and every dataset's shape and dtype."""
    with open_artifact(path) as art:
        attrs = art.attrs
        datasets: list[tuple[str, tuple[int, ...], str]] = []

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                datasets.append((name, node.shape, str(node.dtype)))

        art.file.visititems(visit)
        return {
            "path": str(art.path),
            "kind": art.kind,
            "schema_version": attrs["schema_version"],
            "stage": attrs["stage"],
            "fingerprint": art.fingerprint,
            "created": attrs["created"],
            "seed": art.seed,
            "versions": art.meta("versions"),
            "inputs": art.meta("inputs"),
            "params": art.meta("params"),
            "config": art.meta("config"),
            "size_bytes": art.path.stat().st_size,
            "datasets": datasets,
        }
