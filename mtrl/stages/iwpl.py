"""Stages `train-iwpl` and `adapt` (seed 003): IWPL on the training tasks, then IWPA on each test task.

`train-iwpl` (one unit, `iwpl.h5`): Alg. 1 on a single machine. The paper's distributed actors become one env
per training task stepped in lockstep (`mtrl.rl.online`), its learner one coupled `IWPL` whose prior, features
and α all tasks share. The loop checkpoints per task; the unit keeps one checkpoint per training task under
its own key (`iwpl/task_NN`), each holding the shared parts too.

`adapt` (units (variant, test task), `adapt/<variant>/task_NN.h5`): Alg. 2 from train-iwpl's prior and
features, each variant of `mtrl.methods.ADAPT_VARIANTS` on sac-init's test tasks and budget (interactions, evaluation
schedule), so IWPA, MBML's SAC-init and SAC from scratch share one figure (`mtrl report`). Task-batched like
sac-init: the test tasks of one variant in a group adapt as one uncoupled `IWPL`, each its own run with its
unit's seed. Curves count every interaction, the prior's warm-up included.
"""

from __future__ import annotations

import dataclasses

from mtrl import methods
from mtrl.data import TransitionBuffer
from mtrl.errors import ConfigError
from mtrl.nn import require_finite, to_numpy_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, load_group_checkpoints, task_key
from mtrl.pipeline.run_data import n_test_tasks, read_distribution
from mtrl.rl.online import Schedule, train_online
from mtrl.seeding import derive_seed

# sac-init's keys that adapt reads: the budget the adaptation figure shares
SHARED_BUDGET = ("steps", "eval_every", "eval_episodes", "checkpoint_every")


def require_variants(config, stage: str) -> None:
    """A command that names train-iwpl or adapt must have work: fail at once rather than report "done"."""
    if not config.adapt.variants:
        raise ConfigError(f"{stage}: config key 'adapt.variants' is empty, so there is nothing to run; name IWPA "
                          f"variants with --variant or --set 'adapt.variants=[both,value]' (choices: "
                          f"{', '.join(methods.ADAPT_VARIANTS)})")


class TrainIWPL(Stage):
    name = "train-iwpl"
    sections = ("env", "iwpl")

    def __init__(self, explicit: bool = False):
        self.explicit = explicit  # named by its command: without variants that is an error, not an empty stage

    def units(self, config, run_dir):
        if self.explicit:
            require_variants(config, self.name)
        if not config.adapt.variants:  # its only reader is adapt
            return []
        return [Unit("iwpl", {"iwpl": Output(layout.iwpl(run_dir), "iwpl")}, {"tasks": layout.tasks_input(run_dir)})]

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.iwpl import IWPL

        cfg = ctx.config.iwpl
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, tasks = dist.spec, list(dist.train_tasks)
        views = task_views(ctx, len(tasks))
        agent = IWPL(cfg.algo, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device, tasks=len(tasks),
                     seeds=[view.seed for view in views], coupled=True)
        schedule = Schedule(cfg.steps, cfg.warmup_steps, cfg.eval_every, cfg.eval_episodes, cfg.checkpoint_every,
                            random_warmup=False, precision=cfg.precision)
        buffers = [TransitionBuffer(cfg.steps, spec.obs_dim, spec.act_dim) for _ in tasks]
        envs, eval_envs = ([dist.make_env(task) for task in tasks] for _ in range(2))
        runs = train_online(views, agent, envs, eval_envs, buffers, schedule, load_group_checkpoints(views))
        ctx.eval_seconds = sum(view.eval_seconds for view in views)
        weights = to_numpy_tree(agent.policy_state_dict())
        require_finite(weights, f"train-iwpl {ctx.unit.key}")
        with ctx.writer("iwpl") as w:
            w.tree("weights", weights)
            for t, run in enumerate(runs):
                run.write_curve(w, f"curve_{task_key(t)}")
            w.attrs["alpha"] = float(agent.alpha()[0, 0].detach())
            w.attrs["final_return"] = float(sum(run.curve[-1][1] for run in runs) / len(runs))
        for view in views:
            view.checkpointer.clear()


def task_views(ctx: UnitContext, tasks: int) -> list[UnitContext]:
    """One context per training task of a single unit, for the per-task loop of `train_online`: keys
    `<unit>/task_NN` (their checkpoints) and seeds derived from the unit's; the fingerprint stays the unit's."""
    return [dataclasses.replace(ctx, unit=dataclasses.replace(ctx.unit, key=f"{ctx.unit.key}/{task_key(t)}"),
                                seed=derive_seed(ctx.seed, task_key(t)), eval_seconds=0.0) for t in range(tasks)]


class Adapt(Stage):
    name = "adapt"
    sections = ("env", "adapt", "sac_init")
    task_batched = True  # the test tasks of one variant adapt as one uncoupled IWPL

    def __init__(self, explicit: bool = False):
        self.explicit = explicit

    def excluded_keys(self, config):
        """sac-init's keys other than its budget (its precision only where `stage_config` has not already dropped
        it: fp32), adapt.algo.shared_features, which each variant sets, and the report's adapt.target_return."""
        others = {f.name for f in dataclasses.fields(config.sac_init)} - set(SHARED_BUDGET)
        if config.sac_init.precision == "fp32":
            others.discard("precision")
        return ("adapt.variants", "adapt.algo.shared_features", "adapt.target_return",
                *(f"sac_init.{key}" for key in sorted(others)))

    def units(self, config, run_dir):
        if self.explicit:
            require_variants(config, self.name)
        units = []
        for variant in config.adapt.variants:
            for t in range(n_test_tasks(config)):
                inputs = {"tasks": layout.tasks_input(run_dir), "iwpl": Input(layout.iwpl(run_dir), "iwpl",
                                                                               "train-iwpl")}
                output = Output(layout.adapt(run_dir, variant, t), "adapt")
                units.append(Unit(f"{variant}/{task_key(t)}", {"curves": output}, inputs,
                                  params={"variant": variant, "test_task": t}, task=t))
        return units

    def run_group(self, ctxs: list[UnitContext]) -> None:
        """The group's units of each variant (a group may straddle two) as one uncoupled IWPL per variant."""
        for variant in dict.fromkeys(ctx.unit.params["variant"] for ctx in ctxs):
            self._adapt([ctx for ctx in ctxs if ctx.unit.params["variant"] == variant], variant)

    def _adapt(self, ctxs: list[UnitContext], variant: str) -> None:
        from mtrl.algos.iwpl import IWPL

        UnitContext.share_clock(ctxs)
        ctx0 = ctxs[0]
        cfg, budget = ctx0.config.adapt, ctx0.config.sac_init
        dist = read_distribution(ctx0.unit.inputs["tasks"].path)
        spec, tasks = dist.spec, [dist.test_tasks[ctx.unit.params["test_task"]] for ctx in ctxs]
        with ctx0.read("iwpl") as art:
            pretrained = art.tree("weights")
        algo = dataclasses.replace(cfg.algo, shared_features=variant != "behaviour")
        agent = IWPL(algo, spec.obs_dim, spec.act_dim, spec.max_action, ctx0.device, tasks=len(ctxs),
                     seeds=[ctx.seed for ctx in ctxs], learn_prior=variant == "value",
                     learn_features=variant == "finetune")
        agent.load_pretrained(pretrained["prior"] if variant != "value" else None,
                              pretrained["features"] if variant != "behaviour" else None)
        schedule = Schedule(budget.steps, cfg.warmup_steps, budget.eval_every, budget.eval_episodes,
                            budget.checkpoint_every, random_warmup=False, precision=cfg.precision)
        buffers = [TransitionBuffer(budget.steps, spec.obs_dim, spec.act_dim) for _ in ctxs]
        envs, eval_envs = ([dist.make_env(task) for task in tasks] for _ in range(2))
        runs = train_online(ctxs, agent, envs, eval_envs, buffers, schedule, load_group_checkpoints(ctxs))
        for ctx, run in zip(ctxs, runs, strict=True):
            with ctx.writer("curves") as w:
                run.write_curve(w, "curves")
                w.attrs["run"] = f"iwpa-{variant}"
                w.attrs["variant"] = variant
                w.attrs["transfer"] = methods.ADAPT_VARIANTS[variant]
                w.attrs["test_task"] = ctx.unit.params["test_task"]
