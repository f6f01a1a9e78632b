"""Where every artifact lives in a run directory: the one place that knows the layout.

    runs/<name>/
      config.yaml                 resolved config of the last command
      tasks.h5                    train/test task parameters
      datasets/task_NN.h5         per-task transitions (D4RL keys): the replay kind     collect
      datasets/<kind>/task_NN.h5  the other dataset kinds (medium, expert, ...)          datasets
      sac/task_NN.h5              final SAC weights + curve + policy checkpoints         collect
      bcq/task_NN.h5              per-task BCQ                           train-bcq
      rewards/task_NN.h5          reward ensembles                       fit-rewards
      dynamics/task_NN.h5         next-state ensembles                   fit-dynamics
      relabel.h5                  relabelled rewards/next states          relabel
      policies/<name>.h5          multi-task policies                     distill, train-baseline
      eval/<name>.h5              evaluation returns                      evaluate
      sac_init/<name>/task_NN.h5  SAC learning curves on test tasks       sac-init
      checkpoints/<stage>/…       resumable state of unfinished work
      logs/mtrl.log               run log
"""

from __future__ import annotations

from pathlib import Path

from mtrl.pipeline.base import Input, task_key


def tasks(run_dir: Path) -> Path:
    return run_dir / "tasks.h5"


def dataset(run_dir: Path, task: int, kind: str = "replay") -> Path:
    """The replay keeps its historical path (so runs made before kinds existed stay up to date); every other kind
    has a folder of its own."""
    folder = run_dir / "datasets" if kind == "replay" else run_dir / "datasets" / kind
    return folder / f"{task_key(task)}.h5"


def sac(run_dir: Path, task: int) -> Path:
    return run_dir / "sac" / f"{task_key(task)}.h5"


def bcq(run_dir: Path, task: int) -> Path:
    return run_dir / "bcq" / f"{task_key(task)}.h5"


def ensemble(run_dir: Path, target: str, task: int) -> Path:
    """`target` is "rewards" or "dynamics"."""
    return run_dir / target / f"{task_key(task)}.h5"


def relabel(run_dir: Path, source: str = "learned") -> Path:
    return run_dir / ("relabel.h5" if source == "learned" else f"relabel_{source.replace('-', '_')}.h5")


def policy(run_dir: Path, name: str) -> Path:
    return run_dir / "policies" / f"{name}.h5"


def evaluation(run_dir: Path, name: str) -> Path:
    return run_dir / "eval" / f"{name}.h5"


def sac_init(run_dir: Path, name: str, test_task: int) -> Path:
    return run_dir / "sac_init" / name / f"{task_key(test_task)}.h5"


def tasks_input(run_dir: Path) -> Input:
    return Input(tasks(run_dir), "tasks", "collect")


def dataset_input(run_dir: Path, task: int, kind: str = "replay") -> Input:
    """A training task's dataset of `kind` as a stage input (the training stages pass `config.data.kind`)."""
    return Input(dataset(run_dir, task, kind), "dataset", "collect" if kind == "replay" else "datasets")
