"""MBML's evaluation protocol (Alg. 5), shared by every method, and evaluation over a task distribution.

In each task, episode 1 acts with a belief drawn from the prior; before every later episode the belief is
drawn from the posterior over all transitions collected so far in that task. The score of a task is the
mean return of the episodes after the first `skip` (MBML and PEARL do not count the first two).
All tasks run in lockstep so a policy acts on one batch per time step.

The offline protocol (FOCAL Alg. 2, `evaluate.context: offline`) infers each task's belief once from rows of
that task's offline data and rolls the policy out with it for every episode; no context is gathered online, so
every episode counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mtrl.algos.context import context_rows
from mtrl.rl.episodes import run_lockstep
from mtrl.rl.policies import ContextPolicy
from mtrl.seeding import derive_seed


def run_protocol(envs: Sequence, policy: ContextPolicy, episodes: int, seed: int, unscored: int = 0,
                 window: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns the returns [n_tasks, episodes] and the beliefs each episode acted with [n_tasks, episodes, z];
    env b is task b; episode e of every task resets with seed + e. The first `unscored` episodes infer their
    belief with `explore` (they gather context; the score does not count them). `window` > 0: the belief is
    inferred from the last `window` rows collected in the task instead of all of them."""
    n = len(envs)
    contexts: list[np.ndarray | None] = [None] * n
    returns, beliefs = np.zeros((n, episodes)), []
    for episode in range(episodes):
        recent = [c if c is None or not window else c[-window:] for c in contexts]
        beliefs.append(np.stack([policy.infer(c, explore=episode < unscored) for c in recent]))
        rollouts = run_lockstep(envs, lambda obs, active, b=beliefs[-1]: policy.act(obs, b[active]), seed + episode)
        for b, (obs, act, rew, next_obs) in enumerate(rollouts):
            rows = context_rows(obs, act, next_obs, rew)
            contexts[b] = rows if contexts[b] is None else np.concatenate([contexts[b], rows])
            returns[b, episode] = rew.sum()
    return returns, np.stack(beliefs, 1)


def run_fixed_context(envs: Sequence, policy: ContextPolicy, contexts: Sequence[np.ndarray], episodes: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The offline protocol: returns [n_tasks, episodes] and beliefs [n_tasks, episodes, z] as `run_protocol`; env
    b acts with one belief inferred from contexts[b] (rows [s, a, s', r]) for all its episodes; episode e of every
    task resets with seed + e (as Alg. 5)."""
    beliefs = np.stack([policy.infer(c) for c in contexts])
    returns = np.zeros((len(envs), episodes))
    for episode in range(episodes):
        rollouts = run_lockstep(envs, lambda obs, active, b=beliefs: policy.act(obs, b[active]), seed + episode)
        returns[:, episode] = [rew.sum() for _, _, rew, _ in rollouts]
    return returns, np.repeat(beliefs[:, None], episodes, 1)


def offline_context(data: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` rows [s, a, s', r] drawn without replacement from a task's offline dataset (all of it if smaller)."""
    rows = rng.choice(len(data["rewards"]), min(size, len(data["rewards"])), replace=False)
    return context_rows(data["observations"][rows], data["actions"][rows], data["next_observations"][rows],
                        data["rewards"][rows])


def score(returns: np.ndarray, skip: int) -> np.ndarray:
    """Per-task score: mean return of the episodes after the first `skip` ([n_tasks, episodes] → [n_tasks])."""
    if returns.shape[1] <= skip:
        raise ValueError(f"{returns.shape[1]} episodes leave none after skipping {skip}")
    return returns[:, skip:].mean(1)


def offline_contexts(datasets: list[dict[str, np.ndarray]], size: int, seed: int,
                     *key: str) -> Callable[[int], list[np.ndarray]]:
    """Repeat r -> one context of `size` rows per task, drawn from its own data with a seed derived from `seed`,
    `key`, the task and r (shared by every policy of the run, so methods meet the same contexts)."""
    return lambda r: [offline_context(data, size, np.random.default_rng(derive_seed(seed, *key, str(i), str(r))))
                      for i, data in enumerate(datasets)]


def evaluation_seed(config) -> int:
    """Episode reset seeds of a run's evaluations: shared by all its policies, so they meet the same starts."""
    return derive_seed(config.seed, "evaluation-episodes")


def evaluate_tasks(envs: list, policy: ContextPolicy, cfg, seed: int, repeats: int,
                   contexts: Callable[[int], list[np.ndarray]] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alg. 5 in every env, `repeats` independent times (episode seeds seed + 1000·r, fresh beliefs): returns
    [tasks, repeats, episodes], per-task scores averaged over the repeats [tasks] and the beliefs every episode
    acted with [tasks, repeats, episodes, z]. With `contexts` (repeat r -> one context per env), the offline
    protocol instead, every episode counted."""
    runs = [run_protocol(envs, policy, cfg.episodes, seed + 1000 * r, cfg.skip_episodes, cfg.context_window)
            if contexts is None else
            run_fixed_context(envs, policy, contexts(r), cfg.episodes, seed + 1000 * r)
            for r in range(repeats if envs else 0)]
    returns = np.zeros((len(envs), repeats, cfg.episodes))
    beliefs = np.zeros((len(envs), repeats, cfg.episodes, 0))
    if runs:
        returns, beliefs = np.stack([r for r, _ in runs], 1), np.stack([b for _, b in runs], 1)
    skip = cfg.skip_episodes if contexts is None else 0
    scores = score(returns.reshape(-1, cfg.episodes), skip).reshape(len(envs), repeats).mean(1)
    return returns, scores, beliefs


def summary_of(returns: dict[str, np.ndarray], scores: dict[str, np.ndarray],
               beliefs: dict[str, np.ndarray] | None = None) -> dict:
    """The evaluation result of each split: returns, per-task scores and their mean (NaN for no tasks), and the
    beliefs the episodes acted with where given."""
    result = {}
    for split in returns:
        result |= {f"{split}_returns": returns[split], f"{split}_scores": scores[split],
                   f"{split}_score": float(scores[split].mean()) if len(scores[split]) else float("nan")}
        if beliefs is not None:
            result[f"{split}_beliefs"] = beliefs[split]
    return result


def run_evaluation(dist, policy: ContextPolicy, cfg, seed: int, repeats: int = 1,
                   datasets: dict[str, list[dict[str, np.ndarray]]] | None = None) -> dict:
    """`evaluate_tasks` on all train and test tasks of `dist`: Alg. 5, or with `datasets` (split -> each task's
    offline data) the offline protocol, repeat r of task i drawing `cfg.offline_context_size` rows of its own data
    with a seed shared by every policy of the run (methods meet the same contexts)."""
    returns, scores, beliefs = {}, {}, {}
    for split, tasks in (("train", dist.train_tasks), ("test", dist.test_tasks)):
        contexts = None if datasets is None else offline_contexts(datasets[split], cfg.offline_context_size, seed,
                                                                  "offline-context", split)
        returns[split], scores[split], beliefs[split] = evaluate_tasks([dist.make_env(t) for t in tasks], policy, cfg,
                                                                       seed, repeats, contexts)
    return summary_of(returns, scores, beliefs)
