"""Stages `fit-rewards` and `fit-dynamics`: per training task, an ensemble that predicts that task's reward
(or next state) from (s, a), trained on that task's data only (MBML App. D, Alg. 2). Next-state ensembles
exist only for distributions whose tasks differ in dynamics.

Task-batched (`Stage.task_batched`): a group of tasks (`--group-size`) trains as one `EnsembleRegressor` with a
task axis (one batched matmul per layer for the whole group). Each task keeps its own seed, data, holdout split,
standardisation, optimiser state and metrics, so its artifact (the policy state with a task axis of 1) is what
it gets alone, to float rounding (`mtrl.algos.ensemble`). No checkpoints (none before either)."""

from __future__ import annotations

import numpy as np
import torch

from mtrl.nn import require_finite, to_numpy_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, task_key
from mtrl.pipeline.run_data import env_spec, load_dataset, n_train_tasks


class FitEnsembles(Stage):
    task_batched = True
    target: str  # "rewards" or "dynamics": the config section and the run-directory folder

    def applies(self, config) -> bool:
        return True

    def units(self, config, run_dir):
        if not self.applies(config):
            return []
        return [
            Unit(task_key(i), {"ensemble": Output(layout.ensemble(run_dir, self.target, i), "ensemble")},
                 {"dataset": layout.dataset_input(run_dir, i, config.data.kind)},
                 params={"task": i, "target": self.target}, task=i)
            for i in range(n_train_tasks(config))
        ]

    def targets(self, data: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def run_group(self, ctxs: list[UnitContext]) -> None:
        """Fit the group's ensembles as one task-batched model; each task's artifact is what it would get alone."""
        from mtrl.algos.ensemble import EnsembleRegressor

        ctx0 = ctxs[0]
        cfg, device = getattr(ctx0.config, self.target), ctx0.device
        inputs, targets = [], []
        for ctx in ctxs:
            with ctx.read("dataset") as art:
                data = load_dataset(art, env_spec(ctx.config))
            inputs.append(torch.from_numpy(np.concatenate([data["observations"], data["actions"]], -1)).to(device))
            targets.append(torch.from_numpy(self.targets(data)).to(device))
        in_dim, out_dim = inputs[0].shape[1], targets[0].shape[1]
        ensemble = EnsembleRegressor(cfg, in_dim, out_dim, device, len(ctxs), [ctx.seed for ctx in ctxs])
        metrics = ensemble.fit(inputs, targets)
        for ctx, state, task_metrics in zip(ctxs, ensemble.task_policy_states(), metrics, strict=True):
            ctx.log.info(f"{self.name} {ctx.unit.key}: " + ", ".join(f"{k} {v:.4g}" for k, v in task_metrics.items()))
            state = to_numpy_tree(state)
            require_finite(state, f"{self.name} {ctx.unit.key}")
            with ctx.writer("ensemble") as w:
                w.tree("weights", state)
                w.json("holdout", task_metrics)
                w.attrs["target"] = self.target
                w.attrs["in_dim"], w.attrs["out_dim"] = in_dim, out_dim


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
