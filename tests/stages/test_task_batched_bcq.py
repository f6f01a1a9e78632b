"""Task-batched train-bcq: groups of tasks trained as one model give each task its own result, resume from
per-task checkpoints, and `--tasks` still selects single tasks."""

import shutil

import numpy as np
import pytest
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.errors import StageError
from mtrl.pipeline.base import RunOptions, Stage, Unit
from mtrl.pipeline.runner import UnitPlan, group_plans


def bcq_arrays(run_dir):
    """Every array of every bcq artifact, by file and key path."""
    out = {}
    for path in sorted((run_dir / "bcq").glob("*.h5")):
        with open_artifact(path, "bcq") as art:
            art.file.visititems(lambda name, obj, p=path: out.__setitem__((p.name, name), obj[()])
                                if hasattr(obj, "shape") else None)
    return out


@pytest.fixture
def datasets(smoke_run, tmp_path):
    """A run directory holding the smoke run's tasks and datasets only (the inputs of train-bcq)."""
    def copy(name):
        run_dir = tmp_path / name
        (run_dir / "datasets").mkdir(parents=True)
        shutil.copy(smoke_run[1] / "tasks.h5", run_dir / "tasks.h5")
        for path in (smoke_run[1] / "datasets").glob("*.h5"):
            shutil.copy(path, run_dir / "datasets" / path.name)
        return run_dir
    return copy


def test_groups_split_tasks_evenly_between_workers_or_by_group_size():
    class Batched(Stage):
        task_batched = True

    plans = [UnitPlan(Unit(f"task_{i:02d}", {}, task=i), "fp", {}, {}) for i in range(10)]
    sizes = lambda stage, **opts: [len(g) for g in group_plans(stage, plans, RunOptions("x", **opts))]  # noqa: E731
    assert sizes(Batched(), workers=3) == [4, 3, 3]
    assert sizes(Batched(), workers=1) == [10]
    assert sizes(Batched(), workers=2, group_size=4) == [4, 3, 3]
    assert sizes(Batched(), group_size=1) == [1] * 10
    assert sizes(Stage(), workers=3) == [1] * 10  # not task-batched: every unit alone
    groups = group_plans(Batched(), plans, RunOptions("x", workers=3))
    assert [p.unit.task for g in groups for p in g] == list(range(10))  # consecutive, in order


def test_a_group_gives_each_task_what_it_gets_alone_and_tasks_selects_one(datasets):
    config = smoke_config()
    alone, grouped, third = datasets("alone"), datasets("grouped"), datasets("third")
    run_stages(config, alone, ["train-bcq"], group_size=1)
    run_stages(config, grouped, ["train-bcq"], group_size=3)
    run_stages(config, third, ["train-bcq"], tasks=(2,))
    a, g = bcq_arrays(alone), bcq_arrays(grouped)
    assert a.keys() == g.keys() and len({name for name, _ in a}) == 3
    for key in a:  # float rounding of a 3-task batched matmul vs a 1-task one; never another task's numbers
        np.testing.assert_allclose(g[key], a[key], rtol=1e-4, atol=1e-5, err_msg=str(key))
    assert sorted(p.name for p in (third / "bcq").glob("*.h5")) == ["task_02.h5"]
    t = bcq_arrays(third)
    for key in t:
        np.testing.assert_array_equal(t[key], a[key])  # a group of one is the per-task path, bit for bit
    assert not np.allclose(a[("task_00.h5", "curve/return_mean")], a[("task_01.h5", "curve/return_mean")])

    # each unit records its share of its group's time, so the report's stage time (their sum) is the group's
    seconds = []
    for path in sorted((grouped / "bcq").glob("*.h5")):
        with open_artifact(path, "bcq") as art:
            seconds.append(float(art.attrs["wall_seconds"]))
    (group_line,) = [line for line in (grouped / "logs" / "mtrl.log").read_text().splitlines()
                     if "train-bcq task_00..task_02 (3 tasks): done in" in line]
    assert sum(seconds) <= float(group_line.rsplit("done in ", 1)[1].rstrip("s")) + 0.05


def test_a_killed_group_resumes_from_its_per_task_checkpoints_to_the_same_artifacts(datasets, monkeypatch):
    from mtrl.algos.bcq import BCQ

    config = smoke_config("bcq.checkpoint_every=100")
    whole, killed = datasets("whole"), datasets("killed")
    run_stages(config, whole, ["train-bcq"], group_size=2)

    update, calls = BCQ.update, []

    def dies_at_step_170(self, batch):
        calls.append(1)
        if len(calls) == 170:
            raise KeyboardInterrupt  # like a kill: nothing after this point runs
        return update(self, batch)

    monkeypatch.setattr(BCQ, "update", dies_at_step_170)
    with pytest.raises((KeyboardInterrupt, StageError)):
        run_stages(config, killed, ["train-bcq"], group_size=2)
    monkeypatch.setattr(BCQ, "update", update)
    assert sorted(p.name for p in (killed / "checkpoints" / "train-bcq").iterdir()) == ["task_00.h5", "task_01.h5"]
    assert not (killed / "bcq").exists() or not any((killed / "bcq").iterdir())

    run_stages(config, killed, ["train-bcq"], group_size=2)
    w, k = bcq_arrays(whole), bcq_arrays(killed)
    assert w.keys() == k.keys()
    for key in w:
        np.testing.assert_array_equal(k[key], w[key], err_msg=str(key))
    assert "resuming at step 100" in (killed / "logs" / "mtrl.log").read_text()


def test_a_group_killed_while_writing_resumes_as_the_whole_group_bit_for_bit(datasets, monkeypatch):
    """Killed after writing tasks 0 and 1 of its group of three, train-bcq resumes the whole group from its step-200
    checkpoints, leaves tasks 0 and 1 as they are and writes task 2 as the uninterrupted group did, bit for bit.
    Before the resume kept the group, task 2 resumed alone and its weights ended float rounding away (checked by
    reverting `run_stage` to group only the units with work left: this test then fails on one of task 2's weight
    arrays, 3e-9 apart)."""
    from mtrl.pipeline.base import UnitContext

    config = smoke_config("bcq.checkpoint_every=100")
    whole, killed = datasets("whole"), datasets("killed")
    run_stages(config, whole, ["train-bcq"])  # one group of three: workers=1

    writer = UnitContext.writer

    def dies_before_task_02(self, output):
        if self.unit.key == "task_02":
            raise KeyboardInterrupt  # like a kill between two tasks' writes: nothing after this point runs
        return writer(self, output)

    monkeypatch.setattr(UnitContext, "writer", dies_before_task_02)
    with pytest.raises((KeyboardInterrupt, StageError)):
        run_stages(config, killed, ["train-bcq"])
    monkeypatch.setattr(UnitContext, "writer", writer)
    assert sorted(p.name for p in (killed / "bcq").glob("*.h5")) == ["task_00.h5", "task_01.h5"]
    written = {name: (killed / "bcq" / name).read_bytes() for name in ("task_00.h5", "task_01.h5")}

    run_stages(config, killed, ["train-bcq"])
    log = (killed / "logs" / "mtrl.log").read_text()
    assert "train-bcq task_00..task_02 (3 tasks): resuming at step 200" in log
    assert "task_00, task_01 up to date; trained again with the group, not rewritten" in log
    assert {name: (killed / "bcq" / name).read_bytes() for name in written} == written
    w, k = bcq_arrays(whole), bcq_arrays(killed)
    assert w.keys() == k.keys()
    for key in w:
        np.testing.assert_array_equal(k[key], w[key], err_msg=str(key))


def test_a_rerun_with_two_workers_forms_the_groups_of_the_interrupted_run(datasets, monkeypatch):
    """Two workers split three tasks into task_00..task_01 and task_02. With only task_02 finished, the rerun
    trains task_00..task_01 as one group again, as the interrupted run did. Splitting only the unfinished tasks
    between the workers, as `run_stage` did before, trained task_00 and task_01 each alone, another computation
    (checked by reverting `run_stage` to group the unfinished tasks only: this test then fails)."""
    from mtrl.pipeline import runner

    config = smoke_config()
    run_dir = datasets("run")
    run_stages(config, run_dir, ["train-bcq"])
    for name in ("task_00.h5", "task_01.h5"):
        (run_dir / "bcq" / name).unlink()
    jobs = []

    def record_jobs(fn, keyed_jobs, *args, **kwargs):  # instead of running them
        jobs.extend(key for key, _ in keyed_jobs)
        return []

    monkeypatch.setattr(runner, "run_jobs", record_jobs)
    run_stages(config, run_dir, ["train-bcq"], workers=2)
    assert jobs == ["task_00..task_01 (2 tasks)"]
