"""Helpers every stage shares: task counts, the task distribution of a run, datasets in memory, a sweep's pick."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtrl.artifacts import Artifact, open_artifact
from mtrl.data import TRANSITION_KEYS
from mtrl.errors import ArtifactError, NonFiniteError
from mtrl.pipeline import layout
from mtrl.pipeline.base import task_key

if TYPE_CHECKING:
    from mtrl.config import Config
    from mtrl.envs import EnvSpec, TaskDistribution


def env_spec(config: Config) -> EnvSpec:
    from mtrl.envs.registry import get_family

    return get_family(config.env.family).spec


def n_train_tasks(config: Config) -> int:
    return config.env.n_train or env_spec(config).default_n_train


def n_test_tasks(config: Config) -> int:
    return config.env.n_test or env_spec(config).default_n_test


def task_splits(config) -> tuple[str, ...]:
    """The task splits that get offline data: the training tasks, and the test tasks with data.test_tasks."""
    return ("train", "test") if config.data.test_tasks else ("train",)


def split_key(split: str, task: int) -> str:
    """task_NN for a training task, test_task_NN for a test task."""
    return task_key(task) if split == "train" else f"test_{task_key(task)}"


def split_params(split: str, task: int) -> dict:
    """A unit's params: a training task's are unchanged since before splits (same fingerprints)."""
    return {"task": task} if split == "train" else {"task": task, "split": split}


def split_tasks(dist: TaskDistribution, split: str) -> np.ndarray:
    """The task parameters of a split, "train" or "test"."""
    return dist.train_tasks if split == "train" else dist.test_tasks


def load_distribution(tasks_artifact: Artifact) -> TaskDistribution:
    """The task distribution exactly as saved in tasks.h5 (the saved tasks are authoritative)."""
    from mtrl.envs.base import TaskDistribution
    from mtrl.envs.registry import get_family

    family = get_family(str(tasks_artifact.attrs["family"]))
    return TaskDistribution(family, tasks_artifact.array("train_tasks"), tasks_artifact.array("test_tasks"))


def read_distribution(path: Path) -> TaskDistribution:
    with open_artifact(path, "tasks") as art:
        return load_distribution(art)


def load_dataset(art: Artifact, spec: EnvSpec, infos: bool = False) -> dict[str, np.ndarray]:
    """A task's transitions in memory (sampling from HDF5 directly is 100× slower), checked: every row finite,
    every array of the shape the family's networks take."""
    data = {key: art.array(key) for key in TRANSITION_KEYS}
    if infos and "infos" in art:
        data |= {f"infos/{key}": art.array(f"infos/{key}") for key in art.file["infos"]}
    fix = f"recreate it with `mtrl {art.attrs.get('stage', 'collect')} --force --tasks {art.attrs['task']}`"
    missing = [key for key in spec.info_keys if f"infos/{key}" not in data]
    if infos and missing:  # the reward function reads them (data made before the family stored them lack them)
        raise ArtifactError(f"{art.path}: no 'infos/{missing[0]}', which {spec.name} datasets hold; {fix}")
    rows = len(data["rewards"])
    widths = {"observations": (spec.obs_dim,), "next_observations": (spec.obs_dim,), "actions": (spec.act_dim,)}
    for key, values in data.items():
        expected = (rows, *widths.get(key, values.shape[1:]))
        if values.shape != expected:
            raise ArtifactError(f"{art.path}: '{key}' has shape {values.shape}, expected {expected} for "
                                f"{spec.name}; {fix}")
        if np.issubdtype(values.dtype, np.floating):  # a NaN reward would train every network on it silently
            finite = np.isfinite(values).reshape(len(values), -1).all(1)
            if not finite.all():
                raise NonFiniteError(f"{art.path}: '{key}' has non-finite values in {int((~finite).sum())} of "
                                     f"{len(values)} rows; the dataset is unusable: {fix}")
    return data


def picked_overrides(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The config values the sweep of method `name` picked (sweeps/<name>.h5), None without a sweep."""
    path = layout.sweep(run_dir, name)
    if not path.exists():
        return None
    try:
        with open_artifact(path, "sweep") as art:
            return art.meta("picked")
    except ArtifactError as e:
        raise ArtifactError(f"{e}; rerun `mtrl sweep --method {name}`, or delete {path} to train {name} with the "
                            "run's config") from None
