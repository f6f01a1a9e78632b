"""Where every artifact lives in a run directory: the one place that knows the layout.

    runs/<name>/
      config.yaml                 resolved config of the last command
      tasks.h5                    train/test task parameters
      datasets/task_NN.h5         per-task transitions (D4RL keys): the replay kind     collect
      datasets/<kind>/task_NN.h5  the other dataset kinds (medium, expert, ...)          datasets
      datasets/test/[<kind>/]task_NN.h5  the same for test tasks (data.test_tasks)        collect, datasets
      sac/task_NN.h5              final SAC weights + curve + policy checkpoints         collect
      sac/test/task_NN.h5         the same for test tasks (data.test_tasks)              collect
      bcq/task_NN.h5              per-task BCQ                           train-bcq
      rewards/task_NN.h5          reward ensembles                       fit-rewards
      dynamics/task_NN.h5         next-state ensembles                   fit-dynamics
      relabel.h5                  relabelled rewards/next states          relabel
      policies/<name>.h5          multi-task policies                     distill, train-baseline (a sweep's pick)
      sweeps/<name>.h5            a method's sweep: trials, scores, pick   sweep
      sweeps/<name>/trial_NN.h5   one trial's policy                      sweep
      cql/<kind>/<method>.h5      the CQL family (seed 004) per dataset kind  train-cql
      eval/<name>.h5              evaluation returns (online context)     evaluate
      eval/offline/<name>.h5      evaluation returns (offline context)    evaluate
      sac_init/<name>/task_NN.h5  SAC learning curves on test tasks       sac-init
      iwpl.h5                     IWPL prior, features, per-task Q + curves  train-iwpl
      adapt/<variant>/task_NN.h5  IWPA learning curves on test tasks      adapt
      checkpoints/<stage>/…       resumable state of unfinished work
      logs/mtrl.log               run log
"""

from __future__ import annotations

from pathlib import Path

from mtrl.pipeline.base import Input, task_key


def tasks(run_dir: Path) -> Path:
    return run_dir / "tasks.h5"


SPLITS = ("train", "test")


def _split_folder(folder: Path, split: str) -> Path:
    """A training task's files keep their historical place; a test task's (data.test_tasks) lie in `test/`."""
    return folder if split == "train" else folder / "test"


def dataset(run_dir: Path, task: int, kind: str = "replay", split: str = "train") -> Path:
    """The replay keeps its historical path (so runs made before kinds existed stay up to date); every other kind
    has a folder of its own. Test tasks' datasets mirror this under datasets/test/."""
    folder = _split_folder(run_dir / "datasets", split)
    return (folder if kind == "replay" else folder / kind) / f"{task_key(task)}.h5"


def sac(run_dir: Path, task: int, split: str = "train") -> Path:
    return _split_folder(run_dir / "sac", split) / f"{task_key(task)}.h5"


def bcq(run_dir: Path, task: int) -> Path:
    return run_dir / "bcq" / f"{task_key(task)}.h5"


def ensemble(run_dir: Path, target: str, task: int) -> Path:
    """`target` is "rewards" or "dynamics"."""
    return run_dir / target / f"{task_key(task)}.h5"


def relabel(run_dir: Path, source: str = "learned") -> Path:
    return run_dir / ("relabel.h5" if source == "learned" else f"relabel_{source.replace('-', '_')}.h5")


def policy(run_dir: Path, name: str) -> Path:
    return run_dir / "policies" / f"{name}.h5"


def sweep(run_dir: Path, name: str) -> Path:
    return run_dir / "sweeps" / f"{name}.h5"


def sweep_trial(run_dir: Path, name: str, trial: int) -> Path:
    return run_dir / "sweeps" / name / f"trial_{trial:02d}.h5"


def cql(run_dir: Path, kind: str, method: str) -> Path:
    return run_dir / "cql" / kind / f"{method}.h5"


def evaluation(run_dir: Path, name: str, context: str = "online") -> Path:
    """Online-context evaluations (Alg. 5) at eval/<name>.h5, offline-context ones (FOCAL) beside them in
    eval/offline/, so a run holds both and reports them side by side."""
    return run_dir / "eval" / ("" if context == "online" else context) / f"{name}.h5"


def sac_init(run_dir: Path, name: str, test_task: int) -> Path:
    return run_dir / "sac_init" / name / f"{task_key(test_task)}.h5"


def iwpl(run_dir: Path) -> Path:
    return run_dir / "iwpl.h5"


def adapt(run_dir: Path, variant: str, test_task: int) -> Path:
    return run_dir / "adapt" / variant / f"{task_key(test_task)}.h5"


def tasks_input(run_dir: Path) -> Input:
    return Input(tasks(run_dir), "tasks", "collect")


def dataset_input(run_dir: Path, task: int, kind: str = "replay", split: str = "train") -> Input:
    """A task's dataset of `kind` as a stage input (the training stages pass `config.data.kind` and only ever
    the train split)."""
    return Input(dataset(run_dir, task, kind, split), "dataset", "collect" if kind == "replay" else "datasets")
