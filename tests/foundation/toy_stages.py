"""Two tiny stages for testing the runner: per-task training, then a stage that reads all its outputs."""

from dataclasses import dataclass, field

import numpy as np
import torch

from mtrl.nn import adam, mlp, to_numpy_tree
from mtrl.pipeline.base import Input, Output, Stage, Unit, task_key


@dataclass(frozen=True)
class ToySection:
    steps: int = 20
    tasks: int = 3
    fail_task: int = -1


@dataclass(frozen=True)
class ToyConfig:
    seed: int = 0
    toy: ToySection = field(default_factory=ToySection)


class TrainToy(Stage):
    name = "train-toy"
    sections = ("toy",)

    def units(self, config, run_dir):
        return [Unit(task_key(i), {"model": Output(run_dir / "toy" / f"{task_key(i)}.h5", "eval")},
                     params={"task": i}, task=i) for i in range(config.toy.tasks)]

    def run_unit(self, ctx):
        if ctx.unit.task == ctx.config.toy.fail_task:
            raise ValueError("diverged")
        net = mlp(3, (16,), 1)
        opt = adam(net.parameters(), 1e-2)
        x = torch.randn(64, 3)
        y = x.sum(-1, keepdim=True) * (ctx.unit.task + 1)
        losses = []
        for _ in range(ctx.config.toy.steps):
            loss = ((net(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with ctx.writer("model") as w:
            w.array("returns", np.array(losses))
            w.tree("weights", to_numpy_tree(net.state_dict()))


class SummariseToy(Stage):
    name = "summarise-toy"
    sections = ()

    def units(self, config, run_dir):
        inputs = {task_key(i): Input(run_dir / "toy" / f"{task_key(i)}.h5", "eval", "train-toy")
                  for i in range(config.toy.tasks)}
        return [Unit("all", {"summary": Output(run_dir / "summary.h5", "eval")}, inputs)]

    def run_unit(self, ctx):
        finals = []
        for name in ctx.unit.inputs:
            with ctx.read(name) as art:
                finals.append(art.array("returns")[-1])
        with ctx.writer("summary") as w:
            w.array("returns", np.array(finals))
