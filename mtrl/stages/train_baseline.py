"""Stage `train-baseline`: the multi-task methods of the registry (`mtrl.methods`) trained directly on the datasets
of all training tasks (no per-task BCQ, no relabelling): MBML's Fig. 4 baselines, Contextual BCQ (Alg. 7) and Batch
PEARL (Alg. 6).

One unit per method in `baselines.algos`, configured in `baselines.<method>`. Every step (one `algo.update`
call; `baselines.steps_per_epoch` per epoch) draws, for every task, a mini-batch and a context set uniformly from
that task's dataset. Batch PEARL makes one update over all K tasks with it; Contextual BCQ makes Alg. 7's loop,
one update per task (K per step). The epoch loop, checkpoints, periodic evaluation and the policies/<algo>.h5
artifact are distill's (`mtrl.rl.training.train_policy`), so `mtrl evaluate` treats the baselines as MBML.
"""

from __future__ import annotations

from mtrl.configlib import to_dict
from mtrl.methods import get_method, names
from mtrl.pipeline import layout
from mtrl.pipeline.base import Output, Stage, Unit, UnitContext
from mtrl.pipeline.overrides import with_overrides
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, picked_overrides, read_distribution
from mtrl.rl.training import train_policy


class TrainBaseline(Stage):
    name = "train-baseline"
    sections = ("baselines", "evaluate")

    def __init__(self, algos: tuple[str, ...] | None = None):
        self.algos = algos  # `mtrl train-baseline --algo X` selects; None: the config's list

    def excluded_keys(self, config):
        """The schedule and the evaluation settings are covered; the list of units and each method's config are
        not: a unit's method config is one of its parameters, so changing one baseline's hyper-parameters leaves
        the others' artifacts up to date. Evaluation during training runs Alg. 5 once (no repeats, never the
        offline protocol)."""
        return ("baselines.algos", "evaluate.repeats", "evaluate.context", "evaluate.offline_context_size",
                *(f"baselines.{name}" for name in names("train-baseline")))

    def units(self, config, run_dir):
        """One unit per method, with the config values its sweep picked (`mtrl sweep`), if it has one."""
        return [self.unit_for(config, run_dir, algo, picked_overrides(run_dir, algo))
                for algo in self.algos or config.baselines.algos]

    @staticmethod
    def unit_for(config, run_dir, algo: str, overrides: dict | None = None) -> Unit:
        """The unit that trains baseline `algo` with `overrides`; its method config (a parameter) includes them."""
        inputs = {"tasks": layout.tasks_input(run_dir)}
        inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i, config.data.kind)
                   for i in range(n_train_tasks(config))}
        params = {"algo": algo, "algo_config": to_dict(get_method(algo).config(with_overrides(config, overrides)))}
        return Unit(algo, {"policy": Output(layout.policy(run_dir, algo), "policy")}, inputs,
                    params=params | ({"overrides": overrides} if overrides else {}))

    def run_unit(self, ctx: UnitContext) -> None:
        method = get_method(ctx.unit.params["algo"])
        algo_cfg = method.config(ctx.config)
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        datasets = []
        for i in range(len(dist.train_tasks)):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art, dist.spec))
        algo = method.algo_class()(algo_cfg, dist.spec.obs_dim, dist.spec.act_dim, dist.spec.max_action, ctx.device)
        train_policy(ctx, algo, method.make_sampler(datasets, algo_cfg), ctx.config.baselines, dist, method.name,
                     algo_cfg, datasets)
