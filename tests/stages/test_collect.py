import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from smoke import SMOKE_CONFIG, run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.config import load_config
from mtrl.data import episode_ends
from mtrl.errors import ArtifactError, StageError
from mtrl.pipeline.base import Checkpointer
from mtrl.pipeline.run_data import load_dataset, read_distribution


def read(path):
    spec = read_distribution(path.parents[1] / "tasks.h5").spec
    with open_artifact(path) as art:
        return load_dataset(art, spec, infos=True), dict(art.attrs)


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


# ---------------------------------------------------------------- task-batched collect: groups and resume

# Small and quick; checkpoints at steps 130 and 260, mid-episode (the point robots' episodes are 20 steps), so a
# resume replays the current episodes. batch_size × act_dim = 64 per task (`mtrl.algos.sac`: bitwise groups).
GROUP_OVERRIDES = ("collect.steps=300", "collect.eval_every=150", "collect.checkpoint_every=130",
                   "collect.sac.random_steps=100", "collect.sac.actor_hidden=[32]", "collect.sac.critic_hidden=[32]",
                   "collect.sac.batch_size=32")


def read_unit(run_dir, task):
    """A collect unit's artifacts as arrays: its dataset, and its SAC weights (with the policy checkpoints the
    dataset kinds are made from) and curve."""
    data, _ = read(run_dir / "datasets" / f"task_{task:02d}.h5")
    with open_artifact(run_dir / "sac" / f"task_{task:02d}.h5", "sac") as art:
        return data, {"final": art.tree("weights"), "checkpoints": art.tree("policy_checkpoints")}, art.tree("curve")


def assert_same_units(run_a, run_b, tasks=(0, 1)):
    """The collect artifacts of `tasks` in two run directories are the same, bit for bit."""
    rtol = atol = 0.0
    for task in tasks:
        (data_a, weights_a, curve_a), (data_b, weights_b, curve_b) = read_unit(run_a, task), read_unit(run_b, task)
        assert data_a.keys() == data_b.keys()
        for key in data_a:
            np.testing.assert_allclose(data_a[key], data_b[key], rtol=rtol, atol=atol, err_msg=f"task {task} {key}")
        torch.testing.assert_close(weights_a, weights_b, rtol=rtol, atol=atol, check_dtype=True)
        torch.testing.assert_close(curve_a, curve_b, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def group_runs(tmp_path_factory):
    """collect on tasks 0 and 1 with `GROUP_OVERRIDES`: as one group of two, and as two groups of one."""
    root = tmp_path_factory.mktemp("groups")
    config = smoke_config(*GROUP_OVERRIDES)
    for size in (2, 1):
        run_stages(config, root / f"size{size}", ["tasks", "collect"], tasks=(0, 1), group_size=size)
    return config, root


def test_a_group_of_two_writes_what_each_task_writes_alone(group_runs):
    """Datasets, SAC weights (optimiser moments and generator included) and curves of a task are the same, bit for
    bit, whether it trained alone or in a group of two (one task-batched SAC, envs in lockstep)."""
    _, root = group_runs
    assert "collect task_00..task_01 (2 tasks): done" in (root / "size2" / "logs" / "mtrl.log").read_text()
    assert_same_units(root / "size2", root / "size1")
    first, second = read_unit(root / "size2", 0)[0], read_unit(root / "size2", 1)[0]
    assert not np.array_equal(first["actions"], second["actions"])  # two runs, not one run written twice
    with open_artifact(root / "size2" / "sac" / "task_00.h5") as art:
        assert art.tree("weights")["log_alpha"].shape == (1,)  # a single-task SAC's state, as evaluate loads it


def test_tasks_option_runs_only_the_named_task(group_runs, tmp_path):
    """`--tasks 1` (here with room for a group of two) writes task 1's artifacts only, the same as in the group."""
    config, root = group_runs
    run_stages(config, tmp_path, ["tasks", "collect"], tasks=(1,), group_size=2)
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["task_01.h5"]
    assert sorted(p.name for p in (tmp_path / "sac").iterdir()) == ["task_01.curve.csv", "task_01.h5"]
    assert_same_units(tmp_path, root / "size2", tasks=(1,))


class Killed(Exception):
    pass


def test_a_killed_group_resumes_to_the_identical_artifacts(group_runs, tmp_path, monkeypatch):
    """A group killed right after its checkpoint at step 130 (both tasks mid-episode) resumes from it and writes
    what the uninterrupted group wrote."""
    config, root = group_runs
    save = Checkpointer.save

    def save_then_die(self, state):
        save(self, state)
        if self.path.name == "task_01.h5" and state["step"] == 130:  # the group's last checkpoint of that step
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_die)
        with pytest.raises(StageError, match="Killed"):
            run_stages(config, tmp_path, ["tasks", "collect"], tasks=(0, 1), group_size=2)
    checkpoints = tmp_path / "checkpoints" / "collect"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["task_00.h5", "task_01.h5"]
    assert not (tmp_path / "datasets" / "task_00.h5").exists()
    run_stages(config, tmp_path, ["collect"], tasks=(0, 1), group_size=2)
    assert "collect task_00..task_01 (2 tasks): resuming at step 130" in (tmp_path / "logs" / "mtrl.log").read_text()
    assert_same_units(tmp_path, root / "size2")
    assert not checkpoints.exists()  # removed once the group finished, and the folder it left empty


RESUME_OPTIONS = ["--profile", "smoke", "--tasks", "0,1", "--group-size", "2", "--threads", "1",
                  "--set", "collect.steps=700", "--set", "collect.checkpoint_every=250",
                  "--set", "collect.sac.actor_hidden=[64]", "--set", "collect.sac.critic_hidden=[64]"]


def mtrl(*args):
    return [sys.executable, "-m", "mtrl", *map(str, args)]


def test_collect_resumes_after_sigkill_to_the_identical_dataset(tmp_path):
    """A real kill of a task-batched group (two tasks), after its checkpoint at step 250 (mid-episode)."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", killed, *RESUME_OPTIONS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = [killed / "checkpoints" / "collect" / f"task_{t:02d}.h5" for t in (0, 1)]
    deadline = time.time() + 120
    while not all(c.exists() for c in checkpoints) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert all(c.exists() for c in checkpoints), "no checkpoint was written before the run ended"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "datasets" / "task_00.h5").exists()
    subprocess.run(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", killed, *RESUME_OPTIONS), check=True,
                   capture_output=True)
    assert "resuming at step 250" in (killed / "logs" / "mtrl.log").read_text()
    subprocess.run(mtrl("collect", "--config", SMOKE_CONFIG, "--run-dir", clean, *RESUME_OPTIONS), check=True,
                   capture_output=True)
    for task in (0, 1):
        resumed, _ = read(killed / "datasets" / f"task_{task:02d}.h5")
        uninterrupted, _ = read(clean / "datasets" / f"task_{task:02d}.h5")
        for key in uninterrupted:
            assert np.array_equal(resumed[key], uninterrupted[key]), key
    assert not any(c.exists() for c in checkpoints)  # removed once the group finished


def test_sparse_point_robots_sac_learns_from_the_dense_reward_and_stores_the_sparse_one(tmp_path, monkeypatch):
    """`EnvSpec.behaviour_reward`: from the sparse reward alone SAC never finds a goal; PEARL's env hands its
    learner the dense −distance. Every SAC batch must carry it; the dataset must keep the task's sparse reward."""
    from mtrl.algos.sac import SAC

    config = load_config(SMOKE_CONFIG.with_name("sparse_point_robot.yaml"), "smoke",
                         ["env.n_train=1", "env.n_test=1", "collect.steps=120", "collect.sac.random_steps=40",
                          "collect.sac.batch_size=16"])
    batches, update = [], SAC.update
    monkeypatch.setattr(SAC, "update", lambda self, *b: (batches.extend(b), update(self, *b))[1])
    run_stages(config, tmp_path, ["tasks", "collect"])
    goal = read_distribution(tmp_path / "tasks.h5").train_tasks[0]
    assert len(batches) == 120 - 40 + 1  # one update per step from the end of the warm-up
    for batch in batches:
        distance = np.linalg.norm(batch["next_observations"].numpy() - goal, axis=-1)
        np.testing.assert_allclose(batch["rewards"].numpy(), -distance, atol=1e-5)
    data, _ = read(tmp_path / "datasets" / "task_00.h5")
    distance = np.linalg.norm(data["next_observations"] - goal, axis=-1)
    np.testing.assert_allclose(data["rewards"], np.where(distance <= 0.2, 1 - distance, 0.0), atol=1e-6)
    np.testing.assert_allclose(data["infos/dense_reward"], -distance, atol=1e-6)

    import h5py

    with h5py.File(tmp_path / "datasets" / "task_00.h5", "a") as f:  # as made before the family stored it
        del f["infos"]
    with pytest.raises(ArtifactError, match=r"no 'infos/dense_reward'.*mtrl collect --force --tasks 0"):
        read(tmp_path / "datasets" / "task_00.h5")
