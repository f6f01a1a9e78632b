"""The stage runner: fingerprints units, skips what is up to date, fans the rest out, reports failures."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mtrl.artifacts import SchemaVersionError, fingerprint, open_artifact, schema_for
from mtrl.errors import ArtifactError, StageError
from mtrl.launch.local import JobResult, run_jobs, threads_per_worker
from mtrl.nn import resolve_device
from mtrl.pipeline.base import RunOptions, Stage, Unit, UnitContext, group_key
from mtrl.pipeline.locks import holding, unit_lock_path
from mtrl.runlog import log, setup_logging
from mtrl.seeding import derive_seed, seed_everything

if TYPE_CHECKING:
    from mtrl.config import Config


@dataclass(frozen=True)
class UnitPlan:
    unit: Unit
    fingerprint: str | None  # None when an input is missing or invalid
    input_fingerprints: dict[str, str]
    states: dict[str, str]  # output name -> "up to date" | "stale" | "missing" | "incomplete" | "unreadable"
    problem: str | None = None  # why the unit cannot run now

    @property
    def up_to_date(self) -> bool:
        return all(s == "up to date" for s in self.states.values())


def plan_unit(stage: Stage, config: Config, unit: Unit, expected: Mapping[Path, str] | None = None) -> UnitPlan:
    """Compute a unit's expected fingerprint from its inputs and compare it with its existing outputs.

    `expected`: fingerprints the inputs will have once brought up to date (input path -> fingerprint), used
    instead of those on disk, so that an artifact downstream of a stale one is stale too (`mtrl status`)."""
    input_fps: dict[str, str] = {}
    problem = None
    for name, inp in unit.inputs.items():
        if expected is not None and inp.path in expected:
            input_fps[name] = expected[inp.path]
            continue
        try:
            with open_artifact(inp.path, inp.kind) as art:
                input_fps[name] = art.fingerprint
        except ArtifactError as e:
            if not inp.path.exists():
                problem = f"{stage.name} needs {inp.path}, which is missing: run `mtrl {inp.stage}` first"
            else:
                problem = f"{stage.name} cannot read its input: {e}"
            break
    fp = None
    if problem is None:
        versions = {schema_for(out.kind).version for out in unit.outputs.values()}
        if len(versions) != 1:  # one fingerprint per unit: a mismatch would leave an output stale forever
            raise RuntimeError(f"{stage.name}: the outputs of a unit must share a schema version; got {versions}")
        version = versions.pop()
        fp = fingerprint(stage.name, version, stage.unit_config(config, unit), input_fps, unit.params)
    states = {name: output_state(out.path, out.kind, fp) for name, out in unit.outputs.items()}
    return UnitPlan(unit, fp, input_fps, states, problem)


def plan_pipeline(stages: list[Stage], config: Config, run_dir: Path) -> list[tuple[Stage, UnitPlan]]:
    """Every unit's plan, stage after stage in pipeline order, each judged against the fingerprints its inputs will
    have once brought up to date: an artifact downstream of a stale or missing one is not up to date either.
    What `mtrl status` shows and what `mtrl launch slurm` submits."""
    plans, expected = [], {}  # output path -> the fingerprint it will have once up to date
    for stage in stages:
        for unit in stage.units(config, run_dir):
            plan = plan_unit(stage, config, unit, expected)
            for name, out in unit.outputs.items():
                if plan.fingerprint is not None or plan.states[name] == "missing":
                    expected[out.path] = plan.fingerprint
            plans.append((stage, plan))
    return plans


def output_state(path: Path, kind: str, expected: str | None) -> str:
    if not path.exists():
        return "missing"
    try:
        with open_artifact(path, kind) as art:
            return "up to date" if expected is not None and art.fingerprint == expected else "stale"
    except SchemaVersionError:  # written by another mtrl: rewritten like any stale output
        return "stale"
    except ArtifactError as e:
        return "incomplete" if "incomplete" in str(e) else "unreadable"


def select_units(stage: Stage, units: list[Unit], tasks: tuple[int, ...] | None) -> list[Unit]:
    """Keep the units of the requested training tasks (`--tasks`); stages without task units use every task,
    and say so. Test tasks' units (data.test_tasks) run only when no `--tasks` selection is given."""
    per_task = [u for u in units if u.task is not None]
    if tasks is None:
        return units
    if not per_task:
        if units:  # a stage with no unit at all (fit-dynamics of a family without dynamics) has nothing to say
            log.info(f"{stage.name}: --tasks does not apply (this stage uses every task)")
        return units
    known = sorted(u.task for u in per_task)
    bad = [t for t in tasks if t not in known]
    if bad:
        raise StageError(f"--tasks {','.join(map(str, bad))}: {stage.name} has tasks {known[0]}..{known[-1]}")
    return [u for u in units if (u.task is None and u.split == "train") or u.task in tasks]


@dataclass(frozen=True)
class _Job:
    stage: Stage
    config: Config
    options: RunOptions
    plans: tuple[UnitPlan, ...]  # one unit, or a group of task units for a task-batched stage


def group_plans(stage: Stage, plans: list[UnitPlan], options: RunOptions) -> list[list[UnitPlan]]:
    """Units to run together: every unit alone, or for a task-batched stage consecutive groups of
    `options.group_size` tasks (default: the tasks split as evenly as possible between the workers). `plans` are
    all the selected units, up to date or not, so that a resumed command forms the groups the interrupted one
    formed: a task's numbers depend on its group's size to float rounding (docs/algorithms.md)."""
    if not stage.task_batched:
        return [[p] for p in plans]
    if options.group_size:
        groups = -(-len(plans) // options.group_size)  # groups of at most group_size tasks
    else:
        groups = min(options.workers, len(plans))
    size, extra = divmod(len(plans), groups)
    bounds = [g * size + min(g, extra) for g in range(groups + 1)]
    return [plans[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _execute(job: _Job) -> None:
    """Run one unit or group (in this process or a worker) holding its units' locks. Units that another command
    brought up to date while this one waited are not rewritten: the group skips when all are, and otherwise trains
    whole (its shapes, so its numbers, are an uninterrupted run's) but writes only the rest."""
    units = [p.unit for p in job.plans]
    locks = [unit_lock_path(job.options.run_dir, job.stage.name, u.key) for u in units]
    with holding(locks, log, f"{job.stage.name} {group_key(units)}"):
        writes = [job.options.force or not _up_to_date(p) for p in job.plans]
        if not any(writes):
            log.info(f"{job.stage.name} {group_key(units)}: up to date (computed by another command)")
            return
        _compute(job, writes)


def _up_to_date(plan: UnitPlan) -> bool:
    return all(output_state(out.path, out.kind, plan.fingerprint) == "up to date"
               for out in plan.unit.outputs.values())


def _compute(job: _Job, writes: list[bool]) -> None:
    """Seed, call the stage, check every output was written, drop the checkpoints. The units whose `writes` is
    False are up to date: they train with their group, which is then the group an uninterrupted run trained, and
    their artifacts are left as they are."""
    stage, units = job.stage, [p.unit for p in job.plans]
    ctxs = [UnitContext(stage, stage.configured(job.config, p.unit), p.unit, job.options, p.input_fingerprints,
                        derive_seed(job.config.seed, stage.name, p.unit.seed_key or p.unit.key), log,
                        group_size=len(job.plans), writes=w)
            for p, w in zip(job.plans, writes, strict=True)]
    kept = [ctx.unit.key for ctx in ctxs if not ctx.writes]
    if kept:
        log.info(f"{stage.name} {group_key(units)}: {', '.join(kept)} up to date; trained again with the group, "
                 "not rewritten, so the group's other tasks get an uninterrupted run's numbers bit for bit")
    seed_everything(ctxs[0].seed)  # task-batched agents take every task's seed explicitly
    if job.options.force:
        for ctx in ctxs:
            ctx.checkpointer.clear()
    start = time.perf_counter()
    stage.run_group(ctxs)
    for plan in job.plans:
        missing = [name for name, out in plan.unit.outputs.items()
                   if output_state(out.path, out.kind, plan.fingerprint) != "up to date"]
        if missing:
            raise RuntimeError(f"stage {stage.name} did not write {', '.join(missing)} for {plan.unit.key}")
    for ctx in ctxs:
        ctx.checkpointer.clear()
    end = time.perf_counter()
    log.info(f"{stage.name} {group_key(units)}: done in {end - start:.1f}s")
    for ctx in ctxs:  # about what each unit's artifact records as its wall time, and evaluation's share of it
        log.debug(f"{stage.name} {ctx.unit.key}: {(end - ctx.started) / ctx.group_size:.1f}s, "
                  f"{ctx.eval_seconds:.1f}s of it evaluating")


def check_stage(stage: Stage, config: Config, options: RunOptions, inputs: bool = True) -> list[UnitPlan]:
    """The plans of `stage`'s selected units; StageError if `--tasks` names a task it lacks or (with `inputs`) a
    unit's input is missing. What `run_stage` checks first; a command checks it before writing anything."""
    units = select_units(stage, stage.units(config, options.run_dir), options.tasks)
    if not inputs:
        return []
    plans = [plan_unit(stage, config, u) for u in units]
    blocked = [p.problem for p in plans if p.problem]
    if blocked:
        raise StageError(blocked[0])
    return plans


def nothing_to_do(stages: list[Stage], config: Config, options: RunOptions) -> bool:
    """Whether every selected unit of `stages` is up to date and not forced: a command that would write nothing,
    so that it may finish on a read-only run directory. Stages are judged in order from what is on disk, which is
    exact as long as everything upstream is up to date."""
    if options.force:
        return False
    return all(plan_unit(stage, config, unit).up_to_date
               for stage in stages for unit in select_units(stage, stage.units(config, options.run_dir), options.tasks))


def run_stage(stage: Stage, config: Config, options: RunOptions) -> list[JobResult]:
    """Bring every selected unit of `stage` up to date; raise StageError naming the units that failed."""
    setup_logging(options.run_dir, options.verbosity)
    plans = check_stage(stage, config, options)
    todo = [p for p in plans if options.force or not p.up_to_date]
    skipped = len(plans) - len(todo)
    log.info(f"{stage.name}: {len(todo)} to run, {skipped} up to date" + (" (--force)" if options.force else ""))
    for plan in plans:  # why each unit runs or is skipped
        states = ", ".join(f"{name} {state}" for name, state in plan.states.items())
        log.debug(f"{stage.name} {plan.unit.key}: fingerprint {plan.fingerprint}; {states}")
    if not todo:
        return []
    groups = [group for group in group_plans(stage, plans, options)
              if options.force or not all(p.up_to_date for p in group)]
    jobs = [(group_key([p.unit for p in group]), _Job(stage, config, options, tuple(group))) for group in groups]
    workers = min(options.workers, len(jobs))
    log.debug(f"{stage.name}: {len(jobs)} job(s) on {resolve_device(options.device)}, {workers} worker(s), "
              f"{options.threads or threads_per_worker(workers)} torch thread(s) each")

    def report(result: JobResult) -> None:
        if result.error:
            log.error(f"{stage.name} {result.key}: failed: {result.error}")
            if result.detail:
                log.debug(result.detail)

    results = run_jobs(_execute, jobs, options.workers,
                       functools.partial(setup_logging, options.run_dir, options.verbosity), report, options.threads)
    remove_empty_dirs(options.run_dir / "checkpoints")
    failed = [r for r in results if r.error]
    if failed:
        first = failed[0]
        what = "groups" if stage.task_batched else "units"
        raise StageError(f"{stage.name}: {len(failed)} of {len(results)} {what} failed; {first.key}: {first.error}"
                         + (f" (details in {options.run_dir / 'logs' / 'mtrl.log'})" if first.detail else ""))
    return results


def remove_empty_dirs(root: Path) -> None:
    """Remove the directories under `root` (and `root`) that finished units left empty; after a stage, when no
    worker of this command can be writing there."""
    if not root.is_dir():
        return
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty
            path.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()
