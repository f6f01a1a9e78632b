"""Stage `train-baseline`: the multi-task baselines of MBML's Fig. 4, Contextual BCQ (Alg. 7) and Batch PEARL
(Alg. 6), trained directly on the datasets of all training tasks (no per-task BCQ, no relabelling).

One unit per algorithm in `baselines.algos`. Every step (one `algo.update` call; `baselines.steps_per_epoch` per
epoch) draws, for every task, a mini-batch and a context set uniformly from that task's dataset. Batch PEARL makes
one update over all K tasks with it; Contextual BCQ makes Alg. 7's loop, one update per task (K per step). The
epoch loop, checkpoints, periodic evaluation and the policies/<algo>.h5 artifact are distill's
(`mtrl.rl.training.train_policy`), so `mtrl evaluate` treats the baselines exactly as MBML.
"""

from __future__ import annotations

import numpy as np

from mtrl.configlib import to_dict
from mtrl.pipeline import layout
from mtrl.pipeline.base import Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, read_distribution
from mtrl.rl.batches import sample_batch
from mtrl.rl.evaluation import training_evaluation_config
from mtrl.rl.training import train_policy


def algo_config(config, algo: str):
    """The config of one baseline: section `baselines.<algo with - as _>`."""
    return getattr(config.baselines, algo.replace("-", "_"))


class TrainBaseline(Stage):
    name = "train-baseline"
    sections = ("baselines",)

    def __init__(self, algos: tuple[str, ...] | None = None):
        self.algos = algos  # `mtrl train-baseline --algo X` selects; None: the config's list

    def stage_config(self, config):
        """The schedule and the evaluation settings; each unit's algorithm config is one of its parameters, so
        changing one baseline's hyper-parameters leaves the other's artifact up to date."""
        section = {key: value for key, value in to_dict(config.baselines).items() if not isinstance(value, dict)}
        del section["algos"]
        return {"seed": config.seed, "baselines": section, "evaluate": training_evaluation_config(config)}

    def units(self, config, run_dir):
        inputs = {"tasks": layout.tasks_input(run_dir)}
        inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i) for i in range(n_train_tasks(config))}
        return [Unit(algo, {"policy": Output(layout.policy(run_dir, algo), "policy")}, inputs,
                     params={"algo": algo, "algo_config": to_dict(algo_config(config, algo))})
                for algo in self.algos or config.baselines.algos]

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.batch_pearl import BatchPEARL
        from mtrl.algos.contextual_bcq import ContextualBCQ

        name = ctx.unit.params["algo"]
        cfg, algo_cfg = ctx.config.baselines, algo_config(ctx.config, name)
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        datasets = []
        for i in range(len(dist.train_tasks)):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art))
        cls = {"contextual-bcq": ContextualBCQ, "batch-pearl": BatchPEARL}[name]
        algo = cls(algo_cfg, dist.spec.obs_dim, dist.spec.act_dim, dist.spec.max_action, ctx.device)

        def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
            return sample_batch(datasets, rng, algo_cfg.batch_size, algo_cfg.context_size)

        train_policy(ctx, algo, sample, cfg, dist, name, algo_cfg)
