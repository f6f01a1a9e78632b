"""Transition storage in NumPy: the replay buffer of online SAC and the in-memory form of offline datasets.

Sampling happens in NumPy on arrays held in memory (reading random rows from HDF5 costs 20–550 ms per batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Dataset kinds, D4RL's names (docs/datasets.md): `replay` is collect's whole SAC replay (MBML's data), the
# others are made by `mtrl datasets` from that SAC run's saved policies (mixed: FOCAL's checkpoint mixture).
DATASET_KINDS = ("replay", "medium-replay", "random", "medium", "expert", "mixed")
TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


class TransitionBuffer:
    """Fixed-capacity transition store in the D4RL key layout, plus per-step `infos/<key>` arrays."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, info_shapes: Mapping[str, tuple[int, ...]] = {}):
        self.capacity, self.size = capacity, 0
        self.data: dict[str, np.ndarray] = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, act_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
            "terminals": np.zeros(capacity, bool),
            "timeouts": np.zeros(capacity, bool),
        }
        self.info_keys = tuple(info_shapes)
        for key, shape in info_shapes.items():
            self.data[f"infos/{key}"] = np.zeros((capacity, *shape), np.float64)

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool, info: Mapping) -> None:
        if self.size >= self.capacity:
            raise IndexError(f"transition buffer is full ({self.capacity} transitions)")
        i, d = self.size, self.data
        d["observations"][i] = obs
        d["actions"][i] = action
        d["rewards"][i] = reward
        d["next_observations"][i] = next_obs
        d["terminals"][i] = terminated
        d["timeouts"][i] = truncated
        for key in self.info_keys:
            d[f"infos/{key}"][i] = info[key]
        self.size += 1

    def sample(self, batch_size: int, rng: np.random.Generator, rewards: str = "rewards") -> dict[str, np.ndarray]:
        """A uniform mini-batch (with replacement) of the training keys; `terminals` as float 0/1. `rewards`: the
        array that becomes the batch's rewards (e.g. "infos/dense_reward", `EnvSpec.behaviour_reward`)."""
        return sample_rows(self.data, rng.integers(0, self.size, batch_size), rewards)

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled part of every array (views, no copy)."""
        return {k: v[: self.size] for k, v in self.data.items()}

    def state(self) -> dict:
        return {"size": self.size, "arrays": {k: v[: self.size].copy() for k, v in self.data.items()}}

    def load_state(self, state: Mapping) -> None:
        self.size = int(state["size"])
        for key, values in state["arrays"].items():
            self.data[key][: self.size] = values


def sample_rows(data: Mapping[str, np.ndarray], idx: np.ndarray, rewards: str = "rewards") -> dict[str, np.ndarray]:
    """The SAC/BCQ training batch at row indices `idx`, as float32 arrays; `rewards` names the array that becomes
    its rewards."""
    return {
        "observations": data["observations"][idx],
        "actions": data["actions"][idx],
        "rewards": data[rewards][idx].astype(np.float32),
        "next_observations": data["next_observations"][idx],
        "terminals": data["terminals"][idx].astype(np.float32),
    }


def episode_ends(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Indices of the last transition of every episode."""
    return np.flatnonzero(np.logical_or(terminals, timeouts))


def complete_episodes(terminals: np.ndarray, timeouts: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last row of every complete episode: those ending in a termination or at the time limit `horizon`.
    An episode that a budget cut (the last one of a collect run or of a rolled-out share, the end of a
    medium-replay) would bias return statistics low and is left out."""
    ends = episode_ends(terminals, timeouts)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(int)[:len(ends)]
    complete = terminals[ends] | (ends - starts + 1 == horizon)
    return starts[complete], ends[complete]


def episode_returns(rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, horizon: int) -> np.ndarray:
    """Returns of a dataset's complete episodes (`complete_episodes`)."""
    starts, ends = complete_episodes(terminals, timeouts, horizon)
    return np.array([rewards[s: e + 1].sum(dtype=np.float64) for s, e in zip(starts, ends, strict=True)])


def return_stats(returns: np.ndarray) -> dict[str, float]:
    """The D4RL-style summary of behaviour returns a reader checks first (NaN where there is no episode)."""
    if not len(returns):
        return {"episodes": 0, "mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"episodes": len(returns), "mean": float(returns.mean()), "std": float(returns.std()),
            "min": float(returns.min()), "max": float(returns.max())}


def stack_task_batches(rows: Sequence[Mapping[str, np.ndarray]], device) -> dict:
    """One mini-batch per task, stacked on a leading task axis [tasks, B, ...], as tensors on `device`: the batch
    a task-batched agent's update takes."""
    return to_torch({key: np.stack([r[key] for r in rows]) for key in rows[0]}, device)


def to_torch(batch: Mapping[str, np.ndarray], device) -> dict:
    import torch

    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
