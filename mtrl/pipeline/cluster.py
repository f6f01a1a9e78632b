"""The pipeline's remaining work as cluster jobs (`mtrl launch slurm`).

Each training task with per-task work left gets one element of a job array that runs its chain of per-task
stages; the array has as many elements as such tasks, counted on the resolved config, never guessed. Each
multi-task stage with work left then runs as one job that starts once the jobs before it succeeded. What is
left is judged as `mtrl status` judges it, so launching again submits only what is missing or stale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mtrl.configlib import to_dict
from mtrl.launch import slurm
from mtrl.pipeline.base import RunOptions
from mtrl.pipeline.registry import PER_TASK_STAGES, PIPELINE, get_stage
from mtrl.pipeline.run_data import n_train_tasks
from mtrl.pipeline.runner import check_stage, plan_pipeline, run_stage
from mtrl.runlog import log

if TYPE_CHECKING:
    from mtrl.config import Config

TASKS_STAGE = "tasks"  # the task split: one tiny unit every other stage reads; written before anything is submitted


@dataclass(frozen=True)
class LaunchPlan:
    n_train: int  # training tasks of the resolved config
    tasks: tuple[int, ...]  # training tasks with per-task work left: one array element each
    per_task: tuple[str, ...]  # the per-task stages an array element runs (up to --until)
    multi_task: tuple[str, ...]  # the multi-task stages with work left, one dependent job each, in order
    split_stale: bool  # tasks.h5 is missing or stale: written in this process before submitting

    @property
    def empty(self) -> bool:
        return not self.tasks and not self.multi_task and not self.split_stale


@dataclass(frozen=True)
class Submitted:
    what: str  # "per-task stages (tasks 0-2: collect, ...)" or a stage name
    job_id: str
    log: Path  # where its output goes


def plan_launch(config: Config, options: RunOptions, until: str | None = None) -> LaunchPlan:
    """What `mtrl launch slurm` would submit. `options.tasks` restricts the array to those tasks and submits no
    multi-task stage (they read every task); `options.force` submits everything."""
    names = list(PIPELINE)
    names = names[: names.index(until) + 1] if until else names
    stages = [get_stage(name) for name in names]
    check_stage(get_stage("collect"), config, options, inputs=False)  # --tasks names training tasks that exist
    plans = plan_pipeline(stages, config, options.run_dir)
    todo = [(stage.name, plan) for stage, plan in plans if options.force or not plan.up_to_date]
    tasks = sorted({p.unit.task for name, p in todo if name in PER_TASK_STAGES and p.unit.task is not None})
    if options.tasks is not None:
        tasks = [t for t in tasks if t in options.tasks]
    # test tasks' units (data.test_tasks: collect's) are in no array job (`--tasks` names training tasks): their
    # stage runs once more as a job of its own after the array, where only those units are left to do
    test_units = {name for name, p in todo if p.unit.split == "test"}
    multi = [] if options.tasks is not None else [n for n in names if n != TASKS_STAGE and
                                                  (n not in PER_TASK_STAGES or n in test_units)]
    return LaunchPlan(
        n_train=n_train_tasks(config),
        tasks=tuple(tasks),
        per_task=tuple(n for n in names if n in PER_TASK_STAGES),
        multi_task=tuple(n for n in multi if any(name == n for name, _ in todo)),
        split_stale=any(name == TASKS_STAGE for name, _ in todo),
    )


def run_stages_job(names: tuple[str, ...], config: Config, options: RunOptions) -> None:
    """What one job runs: bring the named stages up to date, in order (for `options.tasks` only, if set)."""
    for name in names:
        run_stage(get_stage(name), config, options)


def launch(config: Config, options: RunOptions, plan: LaunchPlan, cluster: str = "slurm") -> list[Submitted]:
    """Write the task split if it is stale, then submit `plan`: the per-task array, then each multi-task stage
    after the jobs before it. On Slurm this returns at once; the local and debug executors know no
    dependencies, so there each group of jobs is awaited before the next is submitted."""
    if plan.split_stale:
        run_stage(get_stage(TASKS_STAGE), config, options)
    folder = options.run_dir.resolve() / "logs" / "slurm"
    options = dataclasses.replace(options, run_dir=options.run_dir.resolve())  # jobs may start elsewhere
    res, run = config.slurm, options.run_dir.name
    submitted: list[Submitted] = []
    after: list[str] = []

    def submit(what: str, name: str, resources, args) -> None:
        ex = slurm.executor(folder, cluster, f"mtrl-{run}-{name}", to_dict(resources), res.account,
                            res.array_parallelism, after)
        jobs = slurm.submit(ex, run_stages_job, args)
        submitted.append(Submitted(what, slurm.job_id(jobs), Path(jobs[0].paths.stdout).parent))
        log.debug(f"submitted {what}: job {submitted[-1].job_id}" + (f" after {after[0]}" if after else ""))
        if cluster == "slurm":
            after[:] = [submitted[-1].job_id]
        else:
            slurm.wait_local(jobs, what)

    if plan.tasks:
        submit(f"per-task stages (tasks {compact(plan.tasks)}: {', '.join(plan.per_task)})", "per-task",
               res.per_task, [(plan.per_task, config, dataclasses.replace(options, tasks=(t,))) for t in plan.tasks])
    for name in plan.multi_task:
        submit(name, name, res.multi_task, [((name,), config, options)])
    return submitted


def compact(indices: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) → '0-2,5': Slurm's array syntax, also how `--tasks` reads task lists."""
    parts, start = [], None
    for i, t in enumerate(indices):
        start = t if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != t + 1:
            parts.append(str(t) if t == start else f"{start}-{t}")
            start = None
    return ",".join(parts)
