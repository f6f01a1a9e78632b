import numpy as np

from mtrl.artifacts import open_artifact
from mtrl.pipeline.run_data import load_dataset, read_distribution
from mtrl.rl.probe import task_inference_probe


def goal_from_rewards(rows):
    """A perfect reward reader for PointGoalArc: r = -|s' - g| gives 2 s'.g - |g|^2 = |s'|^2 - r^2 (linear)."""
    next_obs, r = rows[:, 4:6].astype(np.float64), rows[:, 6].astype(np.float64)
    a = np.concatenate([2 * next_obs, -np.ones((len(rows), 1))], 1)
    solution, *_ = np.linalg.lstsq(a, (next_obs**2).sum(1) - r**2, rcond=None)
    return solution[:2]


def mean_next_state(rows):
    """An encoder that ignores rewards: where the transitions went."""
    return rows[:, 4:6].mean(0)


def test_probe_tells_reward_readers_from_state_readers(smoke_run):
    _, run_dir = smoke_run
    dist = read_distribution(run_dir / "tasks.h5")
    datasets = []
    for i in range(len(dist.train_tasks)):
        with open_artifact(run_dir / "datasets" / f"task_{i:02d}.h5") as art:
            datasets.append(load_dataset(art, dist.spec, infos=True))
    off = ~np.eye(len(datasets), dtype=bool)
    rng = np.random.default_rng(0)
    reader = task_inference_probe(goal_from_rewards, dist, datasets, sets=5, size=32, rng=rng)
    assert reader["reward_following"][off].min() == 1.0 and reader["own_accuracy"].min() == 1.0
    np.testing.assert_allclose(reader["centroids"], dist.train_tasks, atol=1e-3)
    # the report's picture: every own set's embedding, in task order (here each set recovers its goal)
    assert reader["embeddings"].shape == (len(datasets), 5, 2)
    np.testing.assert_allclose(reader["embeddings"], np.repeat(dist.train_tasks[:, None], 5, 1), atol=1e-3)
    np.testing.assert_allclose(reader["centroids"], reader["embeddings"].mean(1))
    ignorer = task_inference_probe(mean_next_state, dist, datasets, sets=5, size=32, rng=rng)
    # new rewards do not move an encoder that ignores them: a relabelled set lands where its unaltered set does
    k = len(datasets)
    for i in range(k):
        for j in range(k):
            if i != j:
                assert ignorer["state_following"][i, j] == ignorer["own_accuracy"][j]
    assert np.isnan(ignorer["reward_following"][~off]).all()


def test_evaluation_of_a_multitask_policy_includes_the_probe(smoke_run):
    config, run_dir = smoke_run
    with open_artifact(run_dir / "eval" / "mbml.h5", "eval") as art:
        probe = art.tree("task_inference")
    k = config.env.n_train
    assert probe["reward_following"].shape == (k, k) and probe["own_accuracy"].shape == (k,)
    off = ~np.eye(k, dtype=bool)
    assert ((probe["reward_following"] + probe["state_following"])[off] <= 1).all()
