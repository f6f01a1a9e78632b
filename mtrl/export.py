"""Export a task's dataset for other offline-RL tools: a D4RL-style dict in `.npz`, or a Minari dataset.

The dataset artifacts already use D4RL's flat key layout in HDF5 (readable with h5py alone); these exports
serve tools that want NumPy files or Minari's episode format.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mtrl.data import episode_ends
from mtrl.errors import ConfigError


def to_npz(data: dict[str, np.ndarray], path: Path) -> Path:
    """The flat D4RL dict (observations, actions, rewards, next_observations, terminals, timeouts, infos/*)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return path


def episodes(data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Minari's episode buffers: T+1 observations (the last next-observation appended), T of everything else."""
    ends = episode_ends(data["terminals"], data["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [
        {
            "observations": np.concatenate([data["observations"][s: e + 1], data["next_observations"][e: e + 1]]),
            "actions": data["actions"][s: e + 1],
            "rewards": list(data["rewards"][s: e + 1].astype(np.float64)),
            "terminations": list(data["terminals"][s: e + 1]),
            "truncations": list(data["timeouts"][s: e + 1]),
        }
        for s, e in zip(starts, ends, strict=True)
    ]


def to_minari(data: dict[str, np.ndarray], dataset_id: str, env_spec, description: str):
    """Create a local Minari dataset (under Minari's datasets path) and return it."""
    try:
        import gymnasium as gym
        import minari
    except ImportError:
        raise ConfigError("--format minari needs Minari: pip install 'mtrl-batch[minari]'") from None
    shape = lambda n: (n,)  # noqa: E731
    spaces = {
        "observation_space": gym.spaces.Box(-np.inf, np.inf, shape(env_spec.obs_dim), np.float32),
        "action_space": gym.spaces.Box(-env_spec.max_action, env_spec.max_action, shape(env_spec.act_dim), np.float32),
    }
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, **episode) for i, episode in enumerate(episodes(data))]
    try:
        with warnings.catch_warnings():  # Minari warns about every optional metadata field left empty
            warnings.simplefilter("ignore", UserWarning)
            return minari.create_dataset_from_buffers(dataset_id, buffers, algorithm_name="SAC (mtrl collect)",
                                                      description=description, **spaces)
    except ValueError as e:  # e.g. an id that exists already, or a malformed id
        raise ConfigError(f"minari refused dataset id {dataset_id!r}: {e}") from None
