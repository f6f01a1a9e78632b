"""What a stage is: a named recipe that turns input artifacts into output artifacts, unit by unit.

A stage lists its units of work (one per training task for per-task stages, one in total otherwise). Each
unit names its input and output artifacts; the runner (`mtrl.pipeline.runner`) fingerprints it, skips it when its
outputs are up to date, fans units out over worker processes, and hands `run_unit` a `UnitContext` with
everything it needs: config, seed, device, writers, a checkpointer and progress bars.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mtrl.artifacts import Artifact, ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.configlib import to_dict
from mtrl.errors import ArtifactError
from mtrl.launch.local import current_slot
from mtrl.runlog import NORMAL, QUIET, progress_bar
from mtrl.tblog import TensorBoardCurves

if TYPE_CHECKING:
    import torch

    from mtrl.config import Config


# Keys added after artifacts existed, and the value those artifacts were made with: at that value a key stays out
# of the fingerprint, so the artifacts stay up to date.
LATER_KEYS: dict[str, Any] = {"precision": "fp32", "context_window": 0}


@dataclass(frozen=True)
class Input:
    path: Path
    kind: str
    stage: str  # the stage that produces it, named in "run `mtrl <stage>` first" errors


@dataclass(frozen=True)
class Output:
    path: Path
    kind: str


@dataclass(frozen=True)
class Unit:
    key: str  # e.g. "task_03" or "mbml"; names checkpoints and log lines
    outputs: dict[str, Output]
    inputs: dict[str, Input] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # part of the fingerprint (e.g. the task index)
    task: int | None = None  # training-task index, for `--tasks` selection
    split: str = "train"  # "test": a test task's unit (data.test_tasks); `--tasks` names training tasks only
    seed_key: str | None = None  # the key its seed derives from, when not its own (a sweep's trials share one)


@dataclass(frozen=True)
class RunOptions:
    """How to run (never part of a fingerprint): where, on what device, how many processes, which tasks."""

    run_dir: Path
    device: str = "auto"
    workers: int = 1
    tasks: tuple[int, ...] | None = None
    force: bool = False
    threads: int | None = None  # torch threads per worker; None: the cores split evenly between workers
    group_size: int | None = None  # tasks per task-batched group; None: the tasks split evenly between workers
    progress_every: float = 60.0  # seconds between progress log lines when stderr is not a terminal; 0: none
    log_to: tuple[str, ...] = ()  # where training curves go besides CSV: 'tensorboard' (`mtrl.tblog`)
    verbosity: int = NORMAL  # console detail: QUIET, NORMAL or VERBOSE (`mtrl.runlog`)


def task_key(index: int) -> str:
    return f"task_{index:02d}"


def group_key(units: list[Unit]) -> str:
    """How logs name a group of units run together: the unit's key, or the first and last key and the count."""
    return units[0].key if len(units) == 1 else f"{units[0].key}..{units[-1].key} ({len(units)} tasks)"


class Stage:
    """Base class. Subclasses set `name` and `sections` and implement `units` and `run_unit`.

    The fingerprint of a stage's outputs covers the run `seed` (unless `seeded` is False), the config `sections`,
    minus the dotted keys of `not_covered` (e.g. lists of units to run, which are unit parameters instead) and,
    per unit, minus the keys that unit does not read (`unused_keys`).
    """

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]  # config sections whose values determine the outputs
    not_covered: ClassVar[tuple[str, ...]] = ()  # dotted keys inside `sections` that do not change an output
    seeded: ClassVar[bool] = True  # whether the run seed changes the outputs
    # Task-batched stages train a group of task units as one model with a task axis (`run_group`); each
    # task's outputs are exactly those it would get alone, so grouping is a matter of speed only.
    task_batched: ClassVar[bool] = False

    def units(self, config: Config, run_dir: Path) -> list[Unit]:
        raise NotImplementedError

    def run_unit(self, ctx: UnitContext) -> None:
        raise NotImplementedError

    def run_group(self, ctxs: list[UnitContext]) -> None:
        """Run these units together (task-batched stages override this); by default one after another."""
        for ctx in ctxs:
            self.run_unit(ctx)

    def configured(self, config: Config, unit: Unit) -> Config:
        """The config `unit` runs with: the run's, with the unit's own `overrides` param applied (a method's sweep
        pick, or a sweep trial's values; `mtrl.pipeline.overrides`). What its fingerprint covers and it reads."""
        from mtrl.pipeline.overrides import with_overrides

        return with_overrides(config, unit.params.get("overrides"))

    def stage_config(self, config: Config) -> dict[str, Any]:
        """The part of the config that this stage's units may read (`unit_config` narrows it per unit)."""
        covered = {s: to_dict(getattr(config, s)) for s in self.sections}
        for section in (s for s in covered.values() if isinstance(s, dict)):
            for key, made_with in LATER_KEYS.items():
                if key in section and section[key] == made_with:
                    del section[key]
        for key in self.excluded_keys(config):
            _delete_key(covered, key)
        return ({"seed": config.seed} if self.seeded else {}) | covered

    def excluded_keys(self, config: Config) -> tuple[str, ...]:
        """`not_covered`; a stage whose excluded keys depend on the config (e.g. on the registry) extends it."""
        return self.not_covered

    def unit_config(self, config: Config, unit: Unit) -> dict[str, Any]:
        """The part of the config one unit's fingerprint covers and its artifacts record: the stage's, less the
        keys that unit never reads (`unused_keys`), so changing them leaves its artifacts up to date."""
        covered = self.stage_config(self.configured(config, unit))
        for key in self.unused_keys(config, unit):
            _delete_key(covered, key)
        return covered

    def unused_keys(self, config: Config, unit: Unit) -> tuple[str, ...]:
        """Covered config keys that `unit` does not read (none by default; distill's ablations skip some)."""
        return ()


def _delete_key(tree: dict[str, Any], dotted: str) -> None:
    """Remove `a.b.c` from nested dicts."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    del tree[leaf]


class Checkpointer:
    """Resumable state of one unit, valid only for the same fingerprint (a changed config starts afresh)."""

    def __init__(self, path: Path, meta: ArtifactMeta):
        self.path, self.meta = path, meta

    def load(self) -> Any | None:
        try:
            with open_artifact(self.path, "checkpoint") as art:
                if art.fingerprint != self.meta.fingerprint:
                    return None
                return art.tree("state")
        except ArtifactError:
            return None

    def save(self, state: Any) -> None:
        with ArtifactWriter(self.path, self.meta) as w:
            w.tree("state", state)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def load_group_checkpoints(ctxs: list[UnitContext]) -> list[Any] | None:
    """The checkpoints of a task-batched group, one per task, when every task has one at the same `step`;
    None otherwise (the group starts afresh: tasks saved by another grouping at other steps cannot be joined)."""
    saved = [ctx.checkpointer.load() for ctx in ctxs]
    present = [s for s in saved if s is not None]
    if len(present) == len(saved) and len({int(s["step"]) for s in present}) == 1:
        return saved
    if present:
        ctxs[0].log.info(f"{ctxs[0].stage.name} {group_key([c.unit for c in ctxs])}: its tasks' checkpoints are "
                         "not all at one step; starting the group afresh")
    return None


@dataclass
class UnitContext:
    """Everything `Stage.run_unit` needs; built by the runner in the process that runs the unit."""

    stage: Stage
    config: Config
    unit: Unit
    options: RunOptions
    input_fingerprints: dict[str, str]
    seed: int
    log: logging.Logger
    started: float = field(default_factory=time.perf_counter)
    group_size: int = 1  # units trained together with this one (task-batched stages), sharing its wall time
    eval_seconds: float = 0.0  # of its time, its share of the evaluations during training (`evaluating`)
    # False for a unit whose outputs are up to date but whose group has work left: it trains again so that its
    # group is the one an uninterrupted run trains (the same batched shapes, so the same rounding), and its
    # writers write nothing.
    writes: bool = True

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    @property
    def device(self) -> torch.device:
        from mtrl.nn import resolve_device

        return resolve_device(self.options.device)

    def meta(self, kind: str) -> ArtifactMeta:
        return ArtifactMeta(kind, self.stage.name, self.stage.unit_config(self.config, self.unit),
                            self.input_fingerprints, self.unit.params, self.seed)

    def writer(self, output: str) -> ArtifactWriter:
        """Writer for one of the unit's declared outputs, with provenance and fingerprint filled in."""
        out = self.unit.outputs[output]
        meta = self.meta(out.kind)
        # the unit's time so far (its share of its group's), for reports that sum units into stage times
        meta.attrs["wall_seconds"] = (time.perf_counter() - self.started) / self.group_size
        meta.attrs["group_size"] = self.group_size
        meta.attrs["eval_seconds"] = self.eval_seconds
        sinks = [TensorBoardCurves(self.run_dir)] if "tensorboard" in self.options.log_to else []
        return ArtifactWriter(out.path, meta, sinks, keep=self.writes)

    @staticmethod
    def share_clock(ctxs: Sequence[UnitContext]) -> None:
        """From now on, `ctxs` train together: each records an equal share of the time until its artifact is
        written. A stage that trains its group in parts one after another (sac-init: one run, then the next)
        restarts the clock per part, so the units' shares still add up to the group's time."""
        now = time.perf_counter()
        for ctx in ctxs:
            ctx.started, ctx.group_size = now, len(ctxs)

    @staticmethod
    @contextmanager
    def evaluating(ctxs: Sequence[UnitContext]):
        """Time an evaluation during training of the units `ctxs` (a group shares it equally): the report shows
        how much of a stage's time went to evaluation rather than to learning."""
        start = time.perf_counter()
        try:
            yield
        finally:
            share = (time.perf_counter() - start) / len(ctxs)
            for ctx in ctxs:
                ctx.eval_seconds += share

    def read(self, name: str) -> Artifact:
        inp = self.unit.inputs[name]
        return open_artifact(inp.path, inp.kind)

    @property
    def checkpointer(self) -> Checkpointer:
        path = self.run_dir / "checkpoints" / self.stage.name / f"{self.unit.key}.h5"
        return Checkpointer(path, self.meta("checkpoint"))

    def progress(self, total: int, unit: str = "it", initial: int = 0, name: str | None = None):
        """A progress bar on this worker's row (labelled `name`, default the unit's key) on a terminal; otherwise
        a log line every `options.progress_every` seconds (`mtrl.runlog.progress_bar`)."""
        return progress_bar(total, f"{self.stage.name} {name or self.unit.key}", unit, initial, current_slot(),
                            self.options.progress_every, self.log, quiet=self.options.verbosity == QUIET)
