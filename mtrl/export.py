"""Export a run's datasets for other offline-RL tools: a D4RL-style dict in `.npz`, or a Minari dataset per task.

The dataset artifacts already use D4RL's flat key layout in HDF5 (readable with h5py alone); these exports
serve tools that want NumPy files or Minari's episode format. A Minari dataset carries the Gymnasium spec of
its task's env (`mtrl/<Family>-v0` with `task=` set), so `dataset.recover_environment()` rebuilds exactly the
env the data came from, and its task parameters as structured metadata (`dataset.storage.metadata["mtrl"]`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtrl import __version__
from mtrl.data import episode_ends, episode_returns, return_stats
from mtrl.errors import ConfigError
from mtrl.fsio import atomic_path
from mtrl.pipeline.run_data import split_tasks

if TYPE_CHECKING:
    from mtrl.envs import TaskDistribution

# Minari's id syntax is (namespace/)(env_name/)dataset_name(-vN); {task} is the task key, e.g. task_03
MINARI_ID = "mtrl/{family}/{run}-{task}-v0"
MINARI_KIND_ID = "mtrl/{family}/{run}-{kind}-{task}-v0"  # the default for kinds other than the replay
INSTALL = "pip install 'mtrl-batch[minari]'"


def fill(template: str, option: str, keys: list[str], **values: str) -> list[str]:
    """`template` filled in once per task key in `keys` (`{task}`) and with `values`; one distinct name per task."""
    try:
        names = [template.format(task=key, **values) for key in keys]
    except (KeyError, IndexError, ValueError) as e:
        known = ", ".join("{" + name + "}" for name in ("task", *values))
        raise ConfigError(f"{option} {template!r}: bad placeholder ({e}); it may use {known}") from None
    if len(set(names)) < len(names):
        raise ConfigError(f"{option} {template!r} gives every task the same name; put {{task}} in it")
    return names


KIND_WORDS = {"replay": "every transition of SAC's learning run in mtrl collect",
              "medium-replay": "SAC's replay up to its first checkpoint at the medium level",
              "random": "rollouts of SAC's initial (random) policy", "medium": "rollouts of SAC's medium-level policy",
              "expert": "rollouts of SAC's final policy", "mixed": "rollouts of evenly spaced SAC checkpoints"}


def dataset_metadata(dist: TaskDistribution, task: int, kind: str, run: str, fingerprint: str,
                     data: dict[str, np.ndarray], kind_info: dict, split: str = "train") -> dict:
    """What a reader of an exported dataset needs to know: its kind (and how it was made), family, task
    parameters and the returns of its behaviour data (complete episodes, `mtrl.data.episode_returns`)."""
    returns = episode_returns(data["rewards"], data["terminals"], data["timeouts"], dist.spec.horizon)
    return {"kind": kind, "kind_info": kind_info, "family": dist.name, "gym_id": dist.spec.gym_id, "split": split,
            "task_index": task, "task": split_tasks(dist, split)[task].tolist(), "task_meaning": dist.spec.task_meaning,
            "run": run, "dataset_fingerprint": fingerprint, "returns": return_stats(returns)}


def to_npz(data: dict[str, np.ndarray], path: Path, metadata: dict | None = None) -> Path:
    """The flat D4RL dict (observations, actions, rewards, next_observations, terminals, timeouts, infos/*), and
    `metadata/<key>` entries as D4RL's files carry them (nested values as JSON text)."""
    meta = {f"metadata/{key}": np.asarray(value if isinstance(value, (str, int, float)) else json.dumps(value))
            for key, value in (metadata or {}).items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **data, **meta)
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


def _minari():
    try:
        import minari
    except ImportError:
        raise ConfigError(f"--format minari needs Minari: {INSTALL}") from None
    return minari


def minari_exists(dataset_id: str) -> bool:
    """Whether Minari would refuse to create `dataset_id` (its folder exists, even without a valid dataset)."""
    from minari.storage import get_dataset_path

    return Path(get_dataset_path(dataset_id)).exists()


def check_minari_ids(ids: list[str], overwrite: bool) -> None:
    """Before anything is written: refuse ids that exist already unless `overwrite`."""
    _minari()
    existing = [i for i in ids if minari_exists(i)]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(f"Minari dataset {existing[0]}{more} exists already; pass --overwrite to replace it, or "
                          "choose another --dataset-id")


def task_env_spec(gym_id: str, task: list[float]):
    """The Gymnasium spec of `gym_id` with `task=` set: what Minari stores to recover the env."""
    import gymnasium

    import mtrl.envs  # noqa: F401  (registers mtrl/<family>-v0)

    spec = gymnasium.spec(gym_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "task": [float(x) for x in task]})


def to_minari(data: dict[str, np.ndarray], dataset_id: str, dist: TaskDistribution, task: int, metadata: dict,
              overwrite: bool = False):
    """Create a local Minari dataset (under Minari's datasets path, `MINARI_DATASETS_PATH`) of task `task` of
    `dist` (of the split its `dataset_metadata` names) with that metadata; replace one with the same id if
    `overwrite`."""
    minari = _minari()
    from minari.data_collector import EpisodeBuffer

    params = metadata["task"]
    split = "training" if metadata["split"] == "train" else "test"
    description = (f"{dist.name} {split} task {task} of run {metadata['run']} ({dist.spec.task_meaning}: "
                   f"{params}), dataset kind {metadata['kind']}: {KIND_WORDS[metadata['kind']]}")
    if overwrite and minari_exists(dataset_id):
        with contextlib.redirect_stdout(io.StringIO()):  # Minari prints a line of its own
            minari.delete_dataset(dataset_id)
    buffers = [EpisodeBuffer(id=i, **episode) for i, episode in enumerate(episodes(data))]
    try:
        with warnings.catch_warnings():  # Minari warns about every optional metadata field left empty
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id, buffers, env=task_env_spec(dist.spec.gym_id, params), algorithm_name="SAC (mtrl collect)",
                description=description, requirements=[f"mtrl-batch=={__version__}"])
    except ValueError as e:  # e.g. a malformed id
        raise ConfigError(f"minari refused dataset id {dataset_id!r}: {e}") from None
    dataset.storage.update_metadata({"mtrl": metadata})
    return dataset
