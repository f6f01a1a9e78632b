"""Stages `fit-rewards` and `fit-dynamics`: per training task, an ensemble that predicts that task's reward
(or next state) from (s, a), trained on that task's data only (MBML App. D, Alg. 2). Next-state ensembles
exist only for distributions whose tasks differ in dynamics."""

from __future__ import annotations

import numpy as np
import torch

from mtrl.nn import to_numpy_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, task_key
from mtrl.pipeline.run_data import env_spec, load_dataset, n_train_tasks


class FitEnsembles(Stage):
    target: str  # "rewards" or "dynamics": the config section and the run-directory folder

    def applies(self, config) -> bool:
        return True

    def units(self, config, run_dir):
        if not self.applies(config):
            return []
        return [
            Unit(task_key(i), {"ensemble": Output(layout.ensemble(run_dir, self.target, i), "ensemble")},
                 {"dataset": layout.dataset_input(run_dir, i)}, params={"task": i, "target": self.target}, task=i)
            for i in range(n_train_tasks(config))
        ]

    def targets(self, data: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.ensemble import EnsembleRegressor

        cfg = getattr(ctx.config, self.target)
        with ctx.read("dataset") as art:
            data = load_dataset(art)
        inputs = torch.from_numpy(np.concatenate([data["observations"], data["actions"]], -1)).to(ctx.device)
        targets = torch.from_numpy(self.targets(data)).to(ctx.device)
        ensemble = EnsembleRegressor(cfg, inputs.shape[1], targets.shape[1], ctx.device)
        metrics = ensemble.fit(inputs, targets)
        ctx.log.info(f"{self.name} {ctx.unit.key}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        with ctx.writer("ensemble") as w:
            w.tree("weights", to_numpy_tree(ensemble.state_dict()))
            w.json("holdout", metrics)
            w.attrs["target"] = self.target
            w.attrs["in_dim"], w.attrs["out_dim"] = inputs.shape[1], targets.shape[1]


class FitRewards(FitEnsembles):
    name = "fit-rewards"
    sections = ("rewards",)
    target = "rewards"

    def targets(self, data):
        return data["rewards"].reshape(-1, 1)


class FitDynamics(FitEnsembles):
    name = "fit-dynamics"
    sections = ("dynamics",)
    target = "dynamics"

    def applies(self, config) -> bool:
        return env_spec(config).varies == "dynamics"

    def targets(self, data):
        return data["next_observations"]


def ensemble_input(run_dir, target: str, task: int) -> Input:
    return Input(layout.ensemble(run_dir, target, task), "ensemble", f"fit-{target}")
