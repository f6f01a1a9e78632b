"""The pipeline's stages in dependency order. Modules are imported on first use, so the CLI starts fast."""

from __future__ import annotations

import importlib

from mtrl.errors import ConfigError
from mtrl.pipeline.base import Stage

# name -> "module:Class"; order is execution order for `mtrl run` and display order for `mtrl status`.
PIPELINE: dict[str, str] = {
    "tasks": "mtrl.stages.collect:SampleTasks",
    "collect": "mtrl.stages.collect:Collect",
    "datasets": "mtrl.stages.datasets:MakeDatasets",
    "train-bcq": "mtrl.stages.train_bcq:TrainBCQ",
    "fit-rewards": "mtrl.stages.fit_ensembles:FitRewards",
    "fit-dynamics": "mtrl.stages.fit_ensembles:FitDynamics",
    "relabel": "mtrl.stages.relabel:Relabel",
    "distill": "mtrl.stages.distill:Distill",
    "train-baseline": "mtrl.stages.train_baseline:TrainBaseline",
    "train-cql": "mtrl.stages.train_cql:TrainCQL",
    "evaluate": "mtrl.stages.evaluate:Evaluate",
    "sac-init": "mtrl.stages.sac_init:SacInit",
    "train-iwpl": "mtrl.stages.iwpl:TrainIWPL",
    "adapt": "mtrl.stages.iwpl:Adapt",
}

# The stages whose units are the training tasks, each reading only tasks.h5 and its own task's artifacts: a task's
# chain of them runs without the other tasks (one Slurm array job per task, `mtrl launch slurm`). The stages after
# them read every task.
PER_TASK_STAGES: tuple[str, ...] = ("collect", "train-bcq", "fit-rewards", "fit-dynamics")


def get_stage(name: str) -> Stage:
    try:
        module, cls = PIPELINE[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown stage '{name}'; stages: {', '.join(PIPELINE)}") from None
    return getattr(importlib.import_module(module), cls)()


def all_stages() -> list[Stage]:
    return [get_stage(name) for name in PIPELINE]
