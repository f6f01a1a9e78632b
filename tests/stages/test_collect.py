import os
import signal
import subprocess
import sys
import time

import numpy as np
from smoke import SMOKE_CONFIG, run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.config import load_config
from mtrl.data import episode_ends
from mtrl.pipeline.run_data import load_dataset


def read(path):
    with open_artifact(path) as art:
        return load_dataset(art, infos=True), dict(art.attrs)


def check_dataset_invariants(data, horizon, obs_dim, act_dim, n):
    assert data["observations"].shape == (n, obs_dim) and data["observations"].dtype == np.float32
    assert data["next_observations"].shape == (n, obs_dim)
    assert data["actions"].shape == (n, act_dim) and data["rewards"].shape == (n,)
    assert data["terminals"].dtype == bool and data["timeouts"].dtype == bool
    assert not (data["terminals"] & data["timeouts"]).any()
    ends = episode_ends(data["terminals"], data["timeouts"])
    assert ends[-1] == n - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    assert lengths.max() <= horizon
    # within an episode, each transition starts where the previous one ended
    inside = np.ones(n - 1, bool)
    inside[ends[:-1]] = False
    assert np.array_equal(data["observations"][1:][inside], data["next_observations"][:-1][inside])
    # time-outs sit exactly at the horizon (or at the end of the budget), never earlier
    full = data["timeouts"][ends[:-1]]
    assert (lengths[:-1][full] == horizon).all()
    return lengths


def test_point_goal_arc_dataset_invariants(smoke_run):
    config, run_dir = smoke_run
    data, attrs = read(run_dir / "datasets" / "task_00.h5")
    lengths = check_dataset_invariants(data, 20, 2, 2, config.collect.steps)
    assert (lengths == 20).all() and not data["terminals"].any()  # point robots never terminate
    # the agent's actions in [-1, 1] (the env scales them to its ±0.1 box), spread over the whole box
    assert np.abs(data["actions"]).max() <= 1.0 and np.abs(data["actions"]).max() > 0.9
    with open_artifact(run_dir / "sac" / "task_00.h5", "sac") as art:
        curve = art.tree("curve")
        assert list(curve["steps"]) == [500, 1000]
        assert len(curve["episode_returns"]) == config.collect.steps // 20


def test_mujoco_family_collects_with_infos(tmp_path):
    config = load_config(None, base={
        "env": {"family": "HalfCheetahVel", "n_train": 1, "n_test": 1},
        "collect": {"steps": 150, "eval_every": 150, "eval_episodes": 1, "checkpoint_every": 100,
                    "sac": {"actor_hidden": [16], "critic_hidden": [16], "batch_size": 32, "random_steps": 50}}})
    run_stages(config, tmp_path, ["tasks", "collect"])
    data, _ = read(tmp_path / "datasets" / "task_00.h5")
    check_dataset_invariants(data, 1000, 20, 6, 150)
    assert data["infos/qpos"].shape == (150, 9) and data["infos/x_velocity"].shape == (150,)
    # the stored infos reproduce the stored rewards through the ground-truth reward function
    from mtrl.pipeline.run_data import read_distribution

    dist = read_distribution(tmp_path / "tasks.h5")
    infos = {k.removeprefix("infos/"): v for k, v in data.items() if k.startswith("infos/")}
    truth = dist.reward(dist.train_tasks[0], data["observations"], data["actions"], data["next_observations"], infos)
    np.testing.assert_allclose(truth, data["rewards"], rtol=1e-5, atol=1e-5)


def test_same_seed_gives_identical_datasets_and_another_seed_does_not(smoke_run, tmp_path):
    config, run_dir = smoke_run
    run_stages(config, tmp_path / "again", ["tasks", "collect"], tasks=(0,))
    run_stages(smoke_config("seed=1"), tmp_path / "other", ["tasks", "collect"], tasks=(0,))
    first, _ = read(run_dir / "datasets" / "task_00.h5")
    again, _ = read(tmp_path / "again" / "datasets" / "task_00.h5")
    other, _ = read(tmp_path / "other" / "datasets" / "task_00.h5")
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    assert not np.array_equal(first["actions"], other["actions"])


def test_tasks_are_shared_across_run_seeds(smoke_run, tmp_path):
    config, run_dir = smoke_run
    run_stages(smoke_config("seed=5"), tmp_path, ["tasks"])
    with open_artifact(run_dir / "tasks.h5") as a, open_artifact(tmp_path / "tasks.h5") as b:
        assert np.array_equal(a.array("train_tasks"), b.array("train_tasks"))
        assert a.fingerprint == b.fingerprint


RESUME_OPTIONS = ["--profile", "smoke", "--tasks", "0", "--threads", "1",
                  "--set", "collect.steps=1200", "--set", "collect.checkpoint_every=200"]


def mtrl(*args):
    return [sys.executable, "-m", "mtrl", *map(str, args)]


def test_collect_resumes_after_sigkill_to_the_identical_dataset(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", killed, *RESUME_OPTIONS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "collect" / "task_00.h5"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no checkpoint was written before the run ended"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "datasets" / "task_00.h5").exists()
    subprocess.run(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", killed, *RESUME_OPTIONS), check=True,
                   capture_output=True)
    assert "resuming at step" in (killed / "logs" / "mtrl.log").read_text()
    subprocess.run(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", clean, *RESUME_OPTIONS), check=True,
                   capture_output=True)
    resumed, _ = read(killed / "datasets" / "task_00.h5")
    uninterrupted, _ = read(clean / "datasets" / "task_00.h5")
    for key in uninterrupted:
        assert np.array_equal(resumed[key], uninterrupted[key]), key
    assert not checkpoint.exists()  # removed once the unit finished
