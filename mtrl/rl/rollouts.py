"""Datasets rolled out from saved policies (the random, medium, expert and mixed kinds of `mtrl datasets`).

Policy p of a task-batched agent acts in env p; all envs step together through the one episode runner
(`mtrl.rl.episodes.run_lockstep`), episode k of every env resetting with seed + k, until each policy has its
share of rows. The last episode of a share is cut where the share ends and marked as a time-out, as `collect`
marks its last transition, so episodes stay delimited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mtrl.data import TransitionBuffer
from mtrl.rl.episodes import on_active_rows, run_lockstep


def rollout_rows(envs: Sequence, act, rows: Sequence[int], seed: int, obs_dim: int, act_dim: int,
                 info_shapes: Mapping[str, tuple[int, ...]]) -> list[dict[str, np.ndarray]]:
    """`rows[p]` transitions of policy p in `envs[p]` (D4RL keys and `infos/*`), one dict per policy.

    `act(obs [policies, obs_dim]) -> actions [policies, act_dim]` acts for every policy at once (a task-batched
    `SAC.act`); rows of finished episodes hold their last observation and their actions are dropped.
    """
    buffers = [TransitionBuffer(n, obs_dim, act_dim, info_shapes) for n in rows]

    def store(b, obs, action, reward, next_obs, terminated, truncated, info):
        if buffers[b].size < buffers[b].capacity:  # a full share ignores the rest of its last episode
            buffers[b].add(obs, action, reward, next_obs, terminated, truncated, info)

    episode = 0
    while any(buffer.size < buffer.capacity for buffer in buffers):
        run_lockstep(envs, on_active_rows(act, len(envs)), seed + episode, on_step=store)
        episode += 1
    datasets = []
    for buffer in buffers:
        data = {key: values.copy() for key, values in buffer.arrays().items()}
        if len(data["timeouts"]):  # a share ending mid-episode: its last transition is a time-out
            data["timeouts"][-1] = data["timeouts"][-1] or not data["terminals"][-1]
        datasets.append(data)
    return datasets
