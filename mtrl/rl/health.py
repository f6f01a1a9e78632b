"""Task-inference health: does a context method's task embedding z tell the training tasks apart?

A multi-task policy can only act for its task if the z it acts with carries the task. Measured from the
training tasks' own offline data (context sets of each task's rows) and from the beliefs the evaluation
protocol acted with, for every method that infers z (MBML and its ablations, Contextual BCQ, Batch PEARL, FOCAL):

- **KL** (nats): the mean KL(q(z|c) ‖ N(0, I)) of training-size context sets. Below ln K the posterior cannot
  hold the log K nats needed to name one of K tasks. Not defined for deterministic encoders (FOCAL).
- **Separability**: the mean distance between the tasks' centroids (mean posterior means of training-size
  sets) over the per-dimension spread of the z the policy acts with in one task (the std of its beliefs over
  context sets; with `evaluate.belief: sample` the posterior variance is part of that spread). At each context
  size in `sizes`: the training size and the sizes the protocol's scored episodes see.
- **Identification**: how often the belief a task's context yields is nearest its own task's centroid. Offline:
  for context sets of each size; online: for the belief of each episode of the protocol (`online_beliefs`).

`THRESHOLDS` are the values below which the report warns.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mtrl.algos.context import context_rows

SEPARABILITY_MIN = 2.0  # centroids at least two spreads apart
IDENTIFICATION_MIN = 0.8  # the own task's centroid nearest for 4 beliefs in 5


def thresholds(n_tasks: int) -> dict[str, float]:
    """The least healthy value of each measure for K training tasks."""
    return {"kl": math.log(n_tasks), "separability": SEPARABILITY_MIN, "identification": IDENTIFICATION_MIN}


def own_context_sets(data: dict[str, np.ndarray], size: int, sets: int, rng: np.random.Generator) -> np.ndarray:
    """`sets` context sets [sets, size, D] of a task's own rows, each drawn without replacement."""
    n = len(data["rewards"])
    idx = np.stack([rng.choice(n, min(size, n), replace=False) for _ in range(sets)])
    return context_rows(data["observations"][idx], data["actions"][idx], data["next_observations"][idx],
                        data["rewards"][idx])


def nearest_task(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid [K, z_dim] for every z [..., z_dim]."""
    return np.linalg.norm(z[..., None, :] - centroids, axis=-1).argmin(-1)


def task_inference_health(posterior: Callable, datasets: list[dict[str, np.ndarray]], sizes: dict[str, int],
                          sets: int, belief: str, rng: np.random.Generator,
                          online_beliefs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The measures above for K training tasks (datasets in task order).

    `posterior(rows [N, D]) -> (mean, var)` [z_dim] each; `sizes` maps a label to a context size, its first entry
    the training size (the centroids' and KL's); `belief` as the policy acts in the scored episodes ("sample"
    draws with `rng`; "mean" and "sample-then-mean" use the mean); `online_beliefs` [K, repeats, episodes,
    z_dim]: the beliefs the protocol acted with.

    Returns `sizes` [S] and, per size, `kl` [S] (NaN for deterministic encoders), `separability` [S] and
    `identification` [S]; with online beliefs `identification_online` [episodes]; and `centroids` [K, z_dim].
    """
    k = len(datasets)
    posteriors = {label: [[posterior(rows) for rows in own_context_sets(data, size, sets, rng)] for data in datasets]
                  for label, size in sizes.items()}
    means = {label: np.array([[m for m, _ in task] for task in p]) for label, p in posteriors.items()}  # [K, sets, z]
    variances = {label: np.array([[v for _, v in task] for task in p]) for label, p in posteriors.items()}
    centroids = means[next(iter(sizes))].mean(1)
    i, j = np.triu_indices(k, 1)
    distance = np.linalg.norm(centroids[i] - centroids[j], axis=-1).mean() if k > 1 else np.nan
    result = {"sizes": np.array(list(sizes.values())), "kl": [], "separability": [], "identification": []}
    for label in sizes:
        mean, var = means[label], variances[label]
        beliefs = mean + np.sqrt(var) * rng.standard_normal(mean.shape) if belief == "sample" else mean
        spread = np.sqrt(beliefs.var(1).mean())  # per-dimension std of one task's beliefs, averaged over tasks
        kl = 0.5 * (var + mean ** 2 - 1.0 - np.log(np.maximum(var, 1e-30))).sum(-1).mean()
        result["kl"].append(kl if var.max() > 0 else np.nan)
        result["separability"].append(distance / spread if spread > 0 else np.inf)
        result["identification"].append((nearest_task(beliefs, centroids) == np.arange(k)[:, None]).mean())
    result = {key: np.asarray(value, np.float64) for key, value in result.items()}
    if online_beliefs is not None:
        own = nearest_task(online_beliefs, centroids) == np.arange(k)[:, None, None]  # [K, repeats, episodes]
        result["identification_online"] = own.mean((0, 1))
    return result | {"centroids": centroids}


def failures(health: dict[str, np.ndarray], n_tasks: int, scored_from: int) -> list[str]:
    """One line per failed threshold: the measure, its threshold and its value at each context size that fails.

    `scored_from`: the first episode the protocol scores (the online identification of earlier episodes is
    reported but not held to the threshold: episode 1 acts on the prior by design)."""
    limits, lines = thresholds(n_tasks), []
    for measure in ("kl", "separability", "identification"):
        values = zip(health["sizes"], health[measure], strict=True)
        failed = [f"{value:.3f} ({int(size)} rows)" for size, value in values
                  if not np.isnan(value) and value < limits[measure]]
        if failed:
            lines.append(f"{measure} below {limits[measure]:.2f}: " + ", ".join(failed))
    online = health.get("identification_online")
    if online is not None and len(online) > scored_from:
        value = float(online[scored_from:].mean())
        if value < limits["identification"]:
            lines.append(f"online identification below {limits['identification']:.2f}: {value:.3f} "
                         "(scored episodes)")
    return lines
