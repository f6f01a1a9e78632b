"""`mtrl launch slurm` without a cluster: the plan (array size, what is left), the submission path through
submitit's debug executor, and its one-line errors. tests/stages/test_slurm_cluster.py submits to a real Slurm."""

import shutil

import pytest
from smoke import ROOT, SMOKE_CONFIG, smoke_config
from test_cli import assert_one_line_error, invoke

from mtrl.artifacts import open_artifact
from mtrl.config import load_config
from mtrl.pipeline.base import RunOptions
from mtrl.pipeline.cluster import compact, launch, plan_launch
from mtrl.pipeline.registry import PER_TASK_STAGES, get_stage


@pytest.mark.parametrize("family_config", ["point_goal_arc.yaml", "point_robot_wind.yaml"])
def test_per_task_stages_read_only_the_split_and_their_own_task(family_config, tmp_path):
    """What lets one array job run a task's chain alone: every unit is a training task's and reads nothing of
    another task (point_robot_wind also has dynamics units)."""
    config = load_config(ROOT / "configs" / family_config, "smoke")
    for name in PER_TASK_STAGES:
        for unit in get_stage(name).units(config, tmp_path):
            assert unit.task is not None, (name, unit.key)
            for inp in unit.inputs.values():
                assert inp.path.name in ("tasks.h5", f"task_{unit.task:02d}.h5"), (name, unit.key, inp.path)


def test_array_is_sized_from_the_resolved_config_not_a_guess(tmp_path):
    """WalkerParam's paper profile leaves env.n_train unset (null): the family's 30 tasks are submitted."""
    config = load_config(ROOT / "configs" / "walker_param.yaml", "paper")
    assert config.env.n_train is None
    plan = plan_launch(config, RunOptions(tmp_path))
    assert plan.n_train == 30 and plan.tasks == tuple(range(30)) and plan.split_stale
    assert plan.multi_task == ("relabel", "distill", "train-baseline", "evaluate", "sac-init")
    code, output = invoke("launch", "slurm", "--config", ROOT / "configs" / "walker_param.yaml", "--profile", "paper",
                          "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 0, output
    assert "30 training tasks" in output and "array: 0-29 (30 jobs)" in output
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_test_task_units_run_as_one_job_after_the_array(tmp_path):
    """data.test_tasks: collect's test-task units are in no array job (their task is no training task); collect
    runs again as a job of its own after the array, before datasets needs their SAC runs."""
    config = load_config(ROOT / "configs" / "walker_param.yaml", "paper", ["data.test_tasks=true"])
    plan = plan_launch(config, RunOptions(tmp_path))
    assert plan.tasks == tuple(range(30))
    assert plan.multi_task == ("collect", "relabel", "distill", "train-baseline", "evaluate", "sac-init")
    assert plan_launch(config, RunOptions(tmp_path, tasks=(0,))).multi_task == ()


def test_compact_writes_slurm_array_syntax():
    assert compact((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8" and compact((3,)) == "3" and compact(()) == ""


def test_only_missing_work_is_submitted_and_runs_through_submitit(smoke_run, tmp_path):
    """One task's reward ensemble and relabel.h5 deleted: an array of that one task, then a relabel job, run by
    submitit's debug executor; the rest is untouched and nothing is left."""
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "rewards" / "task_01.h5").unlink()
    (run / "relabel.h5").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (run / "rewards" / "task_00.h5", run / "datasets" / "task_01.h5")}
    config, options = smoke_config(), RunOptions(run, threads=1)
    plan = plan_launch(config, options)
    assert (plan.tasks, plan.multi_task, plan.split_stale) == ((1,), ("relabel",), False)
    assert plan_launch(config, options, until="fit-rewards").multi_task == ()

    submitted = launch(config, options, plan, cluster="debug")
    assert [s.what.split(" (")[0] for s in submitted] == ["per-task stages", "relabel"]
    for path in (run / "rewards" / "task_01.h5", run / "relabel.h5"):
        with open_artifact(path) as art:  # complete, readable artifacts
            assert art.fingerprint
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert plan_launch(config, options).empty
    assert list((run / "logs" / "slurm").glob("*_log.out"))  # submitit's logs live in the run directory


def test_nothing_left_submits_nothing(smoke_run, tmp_path):
    _, run_dir = smoke_run
    code, output = invoke("launch", "slurm", "--run-dir", run_dir, "--cluster", "local")
    assert code == 0, output
    assert "nothing to submit: everything is up to date" in output and "submitted" not in output


def test_tasks_restricts_the_array_and_submits_no_multi_task_job(tmp_path):
    plan = plan_launch(smoke_config(), RunOptions(tmp_path, tasks=(0, 2)))
    assert plan.tasks == (0, 2) and plan.multi_task == ()


def test_no_sbatch_is_one_line_error_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    run = tmp_path / "run"
    code, output = invoke("launch", "slurm", "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir", run)
    assert_one_line_error(code, output, "sbatch is not on PATH", "--cluster local")
    assert not run.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--cpus", "0"], "'slurm.per_task.cpus': 0 is out of range"),
    (["--gpus", "-1"], "'slurm.per_task.gpus': -1 is out of range"),
    (["--set", "slurm.multi_task.mem_gb=0"], "'slurm.multi_task.mem_gb': 0.0 is out of range"),
    (["--time-min", "0"], "'slurm.per_task.time_min': 0 is out of range"),
    (["--tasks", "7"], "--tasks 7: collect has tasks 0..2"),
])
def test_invalid_resources_are_one_line_errors(tmp_path, args, fragment):
    run = tmp_path / "run"
    code, output = invoke("launch", "slurm", "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir", run,
                          "--cluster", "local", *args)
    assert_one_line_error(code, output, fragment)
    assert not run.exists()


def test_local_cluster_runs_the_jobs_as_processes_and_checks_the_result(smoke_run, tmp_path):
    """--cluster local: submitit's local executor runs the array element in a subprocess of this machine."""
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "rewards" / "task_02.h5").unlink()
    code, output = invoke("launch", "slurm", "--run-dir", run, "--cluster", "local", "--until", "fit-rewards",
                          "--threads", "1")
    assert code == 0, output
    assert "submitted per-task stages (tasks 2: collect, train-bcq, fit-rewards)" in output
    assert "done: everything up to fit-rewards is up to date" in output
    with open_artifact(run / "rewards" / "task_02.h5", "ensemble") as art:
        assert art.fingerprint
