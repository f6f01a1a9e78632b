import re

import numpy as np
import pytest
from click.testing import CliRunner

from mtrl.artifacts import open_artifact
from mtrl.cli import main


def test_npz_export_is_the_flat_d4rl_dict(smoke_run, tmp_path):
    config, run_dir = smoke_run
    out = tmp_path / "task.npz"
    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--task", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"} <= set(data.files)
    assert data["observations"].shape == (config.collect.steps, 2)


def export(*args):
    return CliRunner().invoke(main, ["export-dataset", *map(str, args)])


@pytest.fixture
def minari(tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return minari


def test_every_task_becomes_a_minari_dataset_with_the_documented_id_that_recovers_its_env(smoke_run, minari):
    config, run_dir = smoke_run
    result = export(run_dir, "--format", "minari")  # default: every training task
    assert result.exit_code == 0, result.output
    help_text = " ".join(export("--help").output.split())
    template = re.search(r"default: (mtrl/\S+) for the replay", help_text).group(1)
    with open_artifact(run_dir / "tasks.h5") as art:
        train_tasks = art.array("train_tasks")
    for index, task in enumerate(train_tasks):
        dataset_id = template.format(family="PointGoalArc", run=run_dir.name, task=f"task_{index:02d}")
        dataset = minari.load_dataset(dataset_id)
        meta = dataset.storage.metadata["mtrl"]
        assert meta["task_index"] == index and meta["family"] == "PointGoalArc" and meta["split"] == "train"
        assert meta["kind"] == "replay" and meta["returns"]["episodes"] == config.collect.steps // 20
        np.testing.assert_array_equal(meta["task"], task)
        env = dataset.recover_environment()
        np.testing.assert_array_equal(env.unwrapped.task, task)
        assert env.action_space == dataset.action_space and env.spec.max_episode_steps == 20
        assert dataset.total_steps == config.collect.steps and dataset.total_episodes == config.collect.steps // 20
    assert len(minari.list_local_datasets()) == len(train_tasks) == 3
    episode = next(dataset.iterate_episodes())
    assert episode.observations.shape == (21, 2) and episode.actions.shape == (20, 2)
    assert np.allclose(episode.observations[0], 0)  # PointGoalArc starts at the origin


def test_an_existing_dataset_id_needs_overwrite(smoke_run, minari):
    _, run_dir = smoke_run
    args = [run_dir, "--format", "minari", "--dataset-id", "mine/{task}-v0"]
    assert export(*args, "--task", "1").exit_code == 0
    again = export(*args, "--task", "0-1")  # task_01 exists: nothing is written, not even task_00
    assert again.exit_code == 2
    assert again.output.strip() == ("error: Minari dataset mine/task_01-v0 exists already; pass --overwrite to "
                                    "replace it, or choose another --dataset-id")
    assert set(minari.list_local_datasets()) == {"mine/task_01-v0"}
    replaced = export(*args, "--task", "0-1", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert set(minari.list_local_datasets()) == {"mine/task_00-v0", "mine/task_01-v0"}
    assert "deleted" not in replaced.output  # Minari's own print is not shown


def test_an_id_that_names_one_dataset_for_several_tasks_is_refused(smoke_run, minari):
    _, run_dir = smoke_run
    result = export(run_dir, "--format", "minari", "--dataset-id", "mine/data-v0")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --dataset-id 'mine/data-v0' gives every task the same name; "
                                     "put {task} in it")
    assert minari.list_local_datasets() == {}


def test_npz_of_every_task(smoke_run, tmp_path):
    _, run_dir = smoke_run
    result = export(run_dir, "--out", tmp_path / "{task}.npz")
    assert result.exit_code == 0, result.output
    for index in range(3):
        with np.load(tmp_path / f"task_{index:02d}.npz") as data, \
                open_artifact(run_dir / "datasets" / f"task_{index:02d}.h5") as art:
            np.testing.assert_array_equal(data["rewards"], art.array("rewards"))


def test_a_task_out_of_range_names_the_valid_range(smoke_run):
    _, run_dir = smoke_run
    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--task", "7"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --task 7: {run_dir} has training tasks 0..2"
