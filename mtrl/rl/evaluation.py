"""MBML's evaluation protocol (Alg. 5), shared by every method, and evaluation over a task distribution.

In each task, episode 1 acts with a belief drawn from the prior; before every later episode the belief is
drawn from the posterior over all transitions collected so far in that task. The score of a task is the
mean return of the episodes after the first `skip` (MBML and PEARL do not count the first two).
All tasks run in lockstep so a policy acts on one batch per time step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtrl.algos.context import context_rows
from mtrl.rl.episodes import run_lockstep
from mtrl.rl.policies import ContextPolicy
from mtrl.seeding import derive_seed


def run_protocol(envs: Sequence, policy: ContextPolicy, episodes: int, seed: int) -> np.ndarray:
    """Returns [n_tasks, episodes]; env b is task b; episode e of every task resets with seed + e."""
    n = len(envs)
    contexts: list[np.ndarray | None] = [None] * n
    returns = np.zeros((n, episodes))
    for episode in range(episodes):
        beliefs = np.stack([policy.infer(c) for c in contexts])
        rollouts = run_lockstep(envs, lambda obs, active, b=beliefs: policy.act(obs, b[active]), seed + episode)
        for b, (obs, act, rew, next_obs) in enumerate(rollouts):
            rows = context_rows(obs, act, next_obs, rew)
            contexts[b] = rows if contexts[b] is None else np.concatenate([contexts[b], rows])
            returns[b, episode] = rew.sum()
    return returns


def score(returns: np.ndarray, skip: int) -> np.ndarray:
    """Per-task score: mean return of the episodes after the first `skip` ([n_tasks, episodes] → [n_tasks])."""
    if returns.shape[1] <= skip:
        raise ValueError(f"{returns.shape[1]} episodes leave none after skipping {skip}")
    return returns[:, skip:].mean(1)


def evaluation_seed(config) -> int:
    """Episode reset seeds of a run's evaluations: shared by all its policies, so they meet the same starts."""
    return derive_seed(config.seed, "evaluation-episodes")


def evaluate_tasks(envs: list, policy: ContextPolicy, cfg, seed: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Alg. 5 in every env, `repeats` independent times (episode seeds seed + 1000·r, fresh beliefs): returns
    [tasks, repeats, episodes] and per-task scores averaged over the repeats [tasks]."""
    returns = np.zeros((len(envs), repeats, cfg.episodes))
    for r in range(repeats if envs else 0):
        returns[:, r] = run_protocol(envs, policy, cfg.episodes, seed + 1000 * r)
    scores = score(returns.reshape(-1, cfg.episodes), cfg.skip_episodes).reshape(len(envs), repeats).mean(1)
    return returns, scores


def summary_of(returns: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict:
    """The evaluation result of each split: returns, per-task scores and their mean (NaN for no tasks)."""
    result = {}
    for split in returns:
        result |= {f"{split}_returns": returns[split], f"{split}_scores": scores[split],
                   f"{split}_score": float(scores[split].mean()) if len(scores[split]) else float("nan")}
    return result


def run_evaluation(dist, policy: ContextPolicy, cfg, seed: int, repeats: int = 1) -> dict:
    """`evaluate_tasks` on all train and test tasks of `dist`."""
    returns, scores = {}, {}
    for split, tasks in (("train", dist.train_tasks), ("test", dist.test_tasks)):
        returns[split], scores[split] = evaluate_tasks([dist.make_env(t) for t in tasks], policy, cfg, seed, repeats)
    return summary_of(returns, scores)
