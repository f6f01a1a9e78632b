"""Stage `train-bcq`: one BCQ per training task on that task's dataset, evaluated online in the task
(MBML Sec. 3.1, first phase). Writes the best-evaluated and the final networks; `bcq.snapshot` picks the one
later stages use (the reference keeps the best)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mtrl.data import sample_rows, stack_task_batches
from mtrl.nn import precision, require_finite, to_numpy_tree, to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, group_key, load_group_checkpoints, task_key
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, read_distribution
from mtrl.rl.episodes import evaluate_lockstep
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
    task_batched = True

    def units(self, config, run_dir):
        return [
            Unit(task_key(i), {"bcq": Output(layout.bcq(run_dir, i), "bcq")},
                 {"tasks": layout.tasks_input(run_dir),
                  "dataset": layout.dataset_input(run_dir, i, config.data.kind)},
                 params={"task": i}, task=i)
            for i in range(n_train_tasks(config))
        ]

    def run_group(self, ctxs: list[UnitContext]) -> None:
        """Train the group's tasks as one task-batched BCQ; each task's artifact is what it would get alone."""
        from mtrl.algos.bcq import BCQ
        from mtrl.nn import seeded_generator

        ctx0 = ctxs[0]
        cfg, device, batch_size = ctx0.config.bcq, ctx0.device, ctx0.config.bcq.algo.batch_size
        dist = read_distribution(ctx0.unit.inputs["tasks"].path)
        spec = dist.spec
        data = []
        for ctx in ctxs:
            with ctx.read("dataset") as art:
                data.append(load_dataset(art, spec))
        envs = [dist.make_env(dist.train_tasks[ctx.unit.task]) for ctx in ctxs]
        agent = BCQ(cfg.algo, spec.obs_dim, spec.act_dim, spec.max_action, device, len(ctxs), [c.seed for c in ctxs])
        rngs = [np.random.default_rng(ctx.seed) for ctx in ctxs]
        runs, best = [BCQProgress() for _ in ctxs], [None] * len(ctxs)
        saved = load_group_checkpoints(ctxs)
        if saved is not None:
            agent.load_task_states([to_torch_tree(s["agent"], device) for s in saved])
            for rng, s in zip(rngs, saved, strict=True):
                rng.bit_generator.state = s["rng"]
            runs, best = [BCQProgress(**s["run"]) for s in saved], [s["best"] for s in saved]
            ctx0.log.info(f"train-bcq {group_key([c.unit for c in ctxs])}: resuming at step {runs[0].step}")

        def evaluation_policy(episode: int):  # its own noise per episode: training's streams stay untouched
            generators = [seeded_generator(device, BCQ_EVAL_SEED + episode) for _ in ctxs]
            return lambda obs: agent.act(obs, generators)

        step = runs[0].step
        bar = ctx0.progress(cfg.steps, unit="update", initial=step, name=group_key([c.unit for c in ctxs]))
        while step < cfg.steps:
            rows = [sample_rows(d, rng.integers(0, len(d["rewards"]), batch_size))
                    for d, rng in zip(data, rngs, strict=True)]
            with precision(cfg.precision, device):
                agent.update(stack_task_batches(rows, device))
            step += 1
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                with UnitContext.evaluating(ctxs):
                    returns = evaluate_lockstep(envs, evaluation_policy, cfg.eval_episodes, BCQ_EVAL_SEED)
                policies = None
                for t, (run, task_returns) in enumerate(zip(runs, returns, strict=True)):
                    run.curve.append([step, float(task_returns.mean()), float(task_returns.std())])
                    if task_returns.mean() > run.best_return:
                        policies = policies or agent.task_policy_states()
                        run.best_return, best[t] = float(task_returns.mean()), to_numpy_tree(policies[t])
                bar.set_postfix(eval_return=f"{returns.mean():.1f}")
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                for ctx, state, rng, run, task_best in zip(ctxs, agent.task_states(), rngs, runs, best, strict=True):
                    run.step = step
                    ctx.checkpointer.save({"step": step, "agent": to_numpy_tree(state), "rng": rng.bit_generator.state,
                                           "run": asdict(run), "best": task_best})
        bar.close()

        for ctx, run, task_best, final in zip(ctxs, runs, best, agent.task_policy_states(), strict=True):
            curve = np.array(run.curve, dtype=np.float64).reshape(-1, 3)
            weights = {"best": task_best, "final": to_numpy_tree(final)}
            require_finite(weights, f"train-bcq {ctx.unit.key}")
            with ctx.writer("bcq") as w:
                w.tree("weights", weights)
                w.curve("curve", {"steps": curve[:, 0], "return_mean": curve[:, 1], "return_std": curve[:, 2]}, "steps")
                w.attrs["best_return"] = run.best_return
                w.attrs["final_return"] = curve[-1, 1]


def bcq_input(run_dir, task: int) -> Input:
    return Input(layout.bcq(run_dir, task), "bcq", "train-bcq")
