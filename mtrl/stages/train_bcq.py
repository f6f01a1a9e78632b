"""Stage `train-bcq`: one BCQ per training task on that task's dataset, evaluated online in the task
(MBML Sec. 3.1, first phase). Writes the best-evaluated and the final networks; `bcq.snapshot` picks the one
later stages use (the reference keeps the best)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mtrl.data import sample_rows, to_torch
from mtrl.nn import to_numpy_tree, to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, task_key
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, read_distribution
from mtrl.rl.episodes import evaluate_returns
from mtrl.seeding import BCQ_EVAL_SEED


@dataclass
class BCQProgress:
    """Where a per-task BCQ run stands (checkpointed): steps done, its evaluation curve and best return so far."""

    step: int = 0
    curve: list[list[float]] = field(default_factory=list)  # [step, mean return, std] per evaluation
    best_return: float = -np.inf


class TrainBCQ(Stage):
    name = "train-bcq"
    sections = ("bcq",)

    def units(self, config, run_dir):
        return [
            Unit(task_key(i), {"bcq": Output(layout.bcq(run_dir, i), "bcq")},
                 {"tasks": layout.tasks_input(run_dir), "dataset": layout.dataset_input(run_dir, i)},
                 params={"task": i}, task=i)
            for i in range(n_train_tasks(config))
        ]

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.bcq import BCQ

        cfg, i = ctx.config.bcq, ctx.unit.task
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec = dist.spec
        with ctx.read("dataset") as art:
            data = load_dataset(art)
        n = len(data["rewards"])
        env = dist.make_env(dist.train_tasks[i])
        agent = BCQ(cfg.algo, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device)
        rng = np.random.default_rng(ctx.seed)
        run, best = BCQProgress(), None
        saved = ctx.checkpointer.load()
        if saved is not None:
            agent.load_state_dict(to_torch_tree(saved["agent"], ctx.device))
            rng.bit_generator.state = saved["rng"]
            run, best = BCQProgress(**saved["run"]), saved["best"]
            ctx.log.info(f"train-bcq {ctx.unit.key}: resuming at step {run.step}")

        bar = ctx.progress(cfg.steps, unit="update", initial=run.step)
        while run.step < cfg.steps:
            agent.update(to_torch(sample_rows(data, rng.integers(0, n, cfg.algo.batch_size)), ctx.device))
            run.step += 1
            bar.update(1)
            if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                returns = evaluate_returns(env, agent.act, cfg.eval_episodes, BCQ_EVAL_SEED)
                run.curve.append([run.step, float(returns.mean()), float(returns.std())])
                bar.set_postfix(eval_return=f"{returns.mean():.1f}")
                if returns.mean() > run.best_return:
                    run.best_return, best = float(returns.mean()), to_numpy_tree(agent.policy_state_dict())
            if run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
                ctx.checkpointer.save({"agent": to_numpy_tree(agent.state_dict()), "rng": rng.bit_generator.state,
                                       "run": asdict(run), "best": best})
        bar.close()

        curve = np.array(run.curve, dtype=np.float64).reshape(-1, 3)
        with ctx.writer("bcq") as w:
            w.tree("weights", {"best": best, "final": to_numpy_tree(agent.policy_state_dict())})
            w.tree("curve", {"steps": curve[:, 0], "return_mean": curve[:, 1], "return_std": curve[:, 2]})
            w.attrs["best_return"] = run.best_return
            w.attrs["final_return"] = curve[-1, 1]


def bcq_input(run_dir, task: int) -> Input:
    return Input(layout.bcq(run_dir, task), "bcq", "train-bcq")
