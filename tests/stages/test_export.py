import numpy as np
from click.testing import CliRunner

from mtrl.cli import main


def test_npz_export_is_the_flat_d4rl_dict(smoke_run, tmp_path):
    config, run_dir = smoke_run
    out = tmp_path / "task.npz"
    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--task", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"} <= set(data.files)
    assert data["observations"].shape == (config.collect.steps, 2)


def test_minari_export_round_trips_episodes(smoke_run, tmp_path, monkeypatch):
    import minari

    config, run_dir = smoke_run
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    args = ["export-dataset", str(run_dir), "--task", "0", "--format", "minari", "--dataset-id", "mtrl/test-v0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    dataset = minari.load_dataset("mtrl/test-v0")
    assert dataset.total_steps == config.collect.steps and dataset.total_episodes == config.collect.steps // 20
    episode = next(dataset.iterate_episodes())
    assert episode.observations.shape == (21, 2) and episode.actions.shape == (20, 2)
    assert np.allclose(episode.observations[0], 0)  # PointGoalArc starts at the origin
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_task_out_of_range_names_the_valid_range(smoke_run):
    _, run_dir = smoke_run
    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--task", "7"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --task 7: {run_dir} has training tasks 0..2"
