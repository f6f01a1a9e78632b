"""Does task inference read the rewards? A probe of MBML's central claim (Sec. 3.2, Fig. 1).

Take context sets drawn from task j's data but with the rewards task i would have given (its true reward
function on the same transitions). An encoder that infers the task from the rewards places them near task i's
embedding; one that learnt to correlate state-action pairs with tasks places them near task j's. Embeddings
are posterior means; each set is assigned to the nearest task centroid, computed from each task's own sets.
Defined where the distribution has a ground-truth reward (tasks that differ in reward).
"""

from __future__ import annotations

import numpy as np

from mtrl.algos.context import context_rows


def task_inference_probe(posterior_mean, dist, datasets: list[dict[str, np.ndarray]], sets: int, size: int,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`posterior_mean(rows [N, D]) -> z [z_dim]`; datasets in training-task order, with `infos/*` arrays.

    Returns own_accuracy [K] (own sets nearest their own centroid), reward_following [K_i, K_j] and
    state_following [K_i, K_j] (fraction of task-j sets relabelled with task i's rewards nearest centroid i,
    resp. j; the diagonal is NaN), the centroids [K, z_dim] and the embeddings [K, sets, z_dim] of each task's
    own sets (the report's picture of the embedding space, FOCAL's Fig. 2a).
    """
    k = len(datasets)
    samples = [rng.integers(0, len(d["rewards"]), (sets, size)) for d in datasets]

    def embed(j: int, reward_task: int) -> np.ndarray:
        d, idx = datasets[j], samples[j]
        obs, act, next_obs = d["observations"][idx], d["actions"][idx], d["next_observations"][idx]
        if reward_task == j:
            rewards = d["rewards"][idx]
        else:
            rewards = dist.dataset_reward(dist.train_tasks[reward_task], d, idx.ravel()).reshape(idx.shape)
        rows = context_rows(obs, act, next_obs, rewards.astype(np.float32))
        return np.stack([posterior_mean(r) for r in rows])  # [sets, z]

    own = [embed(j, j) for j in range(k)]
    centroids = np.stack([z.mean(0) for z in own])

    def nearest(z: np.ndarray) -> np.ndarray:
        return np.linalg.norm(z[:, None, :] - centroids[None], axis=-1).argmin(-1)

    own_accuracy = np.array([(nearest(z) == j).mean() for j, z in enumerate(own)])
    reward_following = np.full((k, k), np.nan)
    state_following = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(k):
            if i != j:
                assigned = nearest(embed(j, i))
                reward_following[i, j], state_following[i, j] = (assigned == i).mean(), (assigned == j).mean()
    return {"own_accuracy": own_accuracy, "reward_following": reward_following,
            "state_following": state_following, "centroids": centroids, "embeddings": np.stack(own)}
