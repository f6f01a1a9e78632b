"""Stage `evaluate`: every policy of the run under the Alg. 5 protocol on train and test tasks.

Multi-task policies (policies/<name>.h5) are evaluated on every train and unseen test task; the per-task
baselines `sac` and `bcq` (MBML Table 9) on their own training task. Episodes reset from seeds shared by all
policies of a run, so methods are compared on the same start states.

`evaluate.context: offline` evaluates the multi-task policies under FOCAL's meta-test instead (each task's z
inferred from rows of its own offline dataset of `data.kind`: test tasks' from datasets/test/, made with
data.test_tasks) and writes eval/offline/<name>.h5 beside the online eval/<name>.h5, so a run can hold and report
both. The per-task baselines have no context and stay online.
"""

from __future__ import annotations

import numpy as np

from mtrl.methods import GROUND_TRUTH_SUFFIX, PER_TASK_BASELINES, get_method
from mtrl.nn import to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import load_dataset, n_test_tasks, n_train_tasks, read_distribution
from mtrl.rl.evaluation import evaluate_tasks, evaluation_seed, offline_contexts, run_evaluation, summary_of
from mtrl.rl.health import failures, task_inference_health
from mtrl.rl.policies import ContextFreePolicy, load_multitask_policy
from mtrl.rl.probe import task_inference_probe
from mtrl.seeding import derive_seed
from mtrl.stages.distill import policy_name

OFFLINE_ONLY = ("evaluate.offline_context_size",)
ONLINE_ONLY = ("evaluate.skip_episodes", "evaluate.probe_sets", "evaluate.probe_context_size", "evaluate.health_sets")


class Evaluate(Stage):
    name = "evaluate"
    sections = ("evaluate",)
    not_covered = ("evaluate.context",)  # which units exist (eval/ or eval/offline/), not what one computes

    def __init__(self, policies: tuple[str, ...] | None = None):
        self.policies = policies  # `mtrl evaluate --policy X`; None: every policy the config trains

    def units(self, config, run_dir):

        names = self.policies or (*PER_TASK_BASELINES,
                                  *(policy_name(v, config.distill.relabel) for v in config.distill.variants),
                                  *config.baselines.algos)
        offline = config.evaluate.context == "offline"
        units = []
        for name in names:
            if offline and name not in PER_TASK_BASELINES:
                units.append(self._offline_unit(config, run_dir, name))
                continue
            inputs = {"tasks": layout.tasks_input(run_dir)}
            if name == "sac":
                inputs |= {f"task_{i}": Input(layout.sac(run_dir, i), "sac", "collect")
                           for i in range(n_train_tasks(config))}
            elif name == "bcq":
                inputs |= {f"task_{i}": Input(layout.bcq(run_dir, i), "bcq", "train-bcq")
                           for i in range(n_train_tasks(config))}
            else:
                producer = get_method(name.removesuffix(GROUND_TRUTH_SUFFIX)).stage
                inputs["policy"] = Input(layout.policy(run_dir, name), "policy", producer)
                # the task-inference health (and, where tasks differ in reward, the probe) reads the training data
                inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i, config.data.kind)
                           for i in range(n_train_tasks(config))}
            units.append(Unit(name, {"eval": Output(layout.evaluation(run_dir, name), "eval")}, inputs,
                              params={"policy": name}))
        return units

    @staticmethod
    def _offline_unit(config, run_dir, name: str) -> Unit:
        """A multi-task policy under the offline protocol: its inputs are every train and test task's dataset of
        `data.kind` (the test tasks' from data.test_tasks)."""
        producer = get_method(name.removesuffix(GROUND_TRUTH_SUFFIX)).stage
        inputs = {"tasks": layout.tasks_input(run_dir),
                  "policy": Input(layout.policy(run_dir, name), "policy", producer)}
        for split, count in (("train", n_train_tasks(config)), ("test", n_test_tasks(config))):
            inputs |= {f"{split}_dataset_{i}": layout.dataset_input(run_dir, i, config.data.kind, split)
                       for i in range(count)}
        return Unit(f"offline_{name}", {"eval": Output(layout.evaluation(run_dir, name, "offline"), "eval")}, inputs,
                    params={"policy": name, "context": "offline"})

    def unused_keys(self, config, unit):
        return ONLINE_ONLY if unit.params.get("context") == "offline" else OFFLINE_ONLY

    def run_unit(self, ctx: UnitContext) -> None:
        cfg, name = ctx.config.evaluate, ctx.unit.params["policy"]
        context = ctx.unit.params.get("context", "online")
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        seed = evaluation_seed(ctx.config)
        if name in PER_TASK_BASELINES:
            result = self._per_task(ctx, dist, seed)
        else:
            with ctx.read("policy") as art:
                policy = load_multitask_policy(art, ctx.device, ctx.seed, cfg.belief)
                training_size = get_method(str(art.attrs["method"])).training_context_size(policy.algo.cfg)
            if context == "offline":
                datasets = {split: [self._dataset(ctx, f"{split}_dataset_{i}", dist.spec) for i in range(len(tasks))]
                            for split, tasks in (("train", dist.train_tasks), ("test", dist.test_tasks))}
                result = run_evaluation(dist, policy, cfg, seed, cfg.repeats, datasets)
            else:
                result = run_evaluation(dist, policy, cfg, seed, cfg.repeats)
                train_data = [self._dataset(ctx, f"dataset_{i}", dist.spec, infos=True)
                              for i in range(len(dist.train_tasks))]
                result["health"] = self._health(ctx, dist, policy, train_data, training_size, result["train_beliefs"])
                if dist.spec.varies == "reward":
                    result["probe"] = self._probe(ctx, dist, policy, train_data)
        with ctx.writer("eval") as w:
            w.tree("returns", {k: v for k, v in result.items() if k.endswith(("_returns", "_scores"))})
            if "probe" in result:
                w.tree("task_inference", result["probe"])
            if "health" in result:
                w.tree("health", result["health"])
                w.attrs["belief"] = cfg.belief
            w.json("summary", {k: v for k, v in result.items() if k.endswith("_score")})
            w.attrs["context"] = context
            w.attrs["skip_episodes"] = cfg.skip_episodes if context == "online" else 0
            if context == "offline":
                w.attrs["offline_context_size"] = cfg.offline_context_size
                w.attrs["data_kind"] = ctx.config.data.kind
        test = "none (one policy per training task)" if name in PER_TASK_BASELINES else f"{result['test_score']:.2f}"
        ctx.log.info(f"evaluate {ctx.unit.key}: train {result['train_score']:.2f}, test {test}")

    @staticmethod
    def _dataset(ctx: UnitContext, name: str, spec, infos: bool = False) -> dict:
        with ctx.read(name) as art:
            return load_dataset(art, spec, infos=infos)

    @staticmethod
    def _health(ctx: UnitContext, dist, policy, datasets: list[dict], training_size: int,
                online_beliefs: np.ndarray) -> dict:
        """Task-inference health (`mtrl.rl.health`) at the training context size and at the sizes the protocol's
        scored episodes see (rows of the episodes before, at full length), plus the policy's training-task scores
        with offline context of the training size (the student-teacher gap's offline side)."""
        cfg = ctx.config.evaluate
        seen = [e * dist.spec.horizon for e in range(cfg.episodes)]  # episode e infers from the rows before it
        if cfg.context_window:
            seen = [min(rows, cfg.context_window) for rows in seen]
        sizes = {"training": training_size} | {f"episode {e + 1}": seen[e]
                                               for e in range(max(cfg.skip_episodes, 1), cfg.episodes)}
        health = task_inference_health(policy.algo.posterior, datasets, sizes, cfg.health_sets, cfg.belief,
                                       np.random.default_rng(derive_seed(ctx.seed, "health")), online_beliefs)
        seed = evaluation_seed(ctx.config)
        envs = [dist.make_env(task) for task in dist.train_tasks]
        _, health["train_offline_scores"], _ = evaluate_tasks(
            envs, policy, cfg, seed, cfg.repeats, offline_contexts(datasets, training_size, seed, "health-context"))
        failed = failures(health, len(datasets), cfg.skip_episodes)
        if failed:
            ctx.log.warning(f"evaluate {ctx.unit.key}: task inference fails its health thresholds: {'; '.join(failed)}")
        ctx.log.info(f"evaluate {ctx.unit.key}: train {health['train_offline_scores'].mean():.2f} with offline "
                     f"context of {training_size} rows")
        return health

    @staticmethod
    def _probe(ctx: UnitContext, dist, policy, datasets: list[dict]) -> dict:
        """Whether the policy's task inference follows rewards or state-action pairs (`mtrl.rl.probe`)."""
        cfg = ctx.config.evaluate
        probe = task_inference_probe(lambda rows: policy.algo.posterior(rows)[0], dist, datasets, cfg.probe_sets,
                                     cfg.probe_context_size, np.random.default_rng(ctx.seed))
        off = ~np.eye(len(datasets), dtype=bool)
        ctx.log.info(f"evaluate {ctx.unit.key}: task inference follows rewards in "
                     f"{probe['reward_following'][off].mean():.0%} of relabelled sets, state-action pairs in "
                     f"{probe['state_following'][off].mean():.0%}")
        return probe

    def _per_task(self, ctx: UnitContext, dist, seed: int) -> dict:
        """A single-task baseline in its own training task (it has no way to infer another task)."""
        cfg = ctx.config.evaluate
        per_task = [evaluate_tasks([dist.make_env(task)], ContextFreePolicy(self._act_fn(ctx, dist.spec, f"task_{i}")),
                                   cfg, seed, cfg.repeats) for i, task in enumerate(dist.train_tasks)]
        returns = {"train": np.concatenate([r for r, _, _ in per_task]),
                   "test": np.zeros((0, cfg.repeats, cfg.episodes))}
        return summary_of(returns, {"train": np.concatenate([s for _, s, _ in per_task]), "test": np.zeros(0)})

    @staticmethod
    def _act_fn(ctx: UnitContext, spec, input_name: str):
        with ctx.read(input_name) as art:
            weights = to_torch_tree(art.tree("weights"), ctx.device)
        if ctx.unit.key == "bcq":
            from mtrl.algos.bcq import BCQPolicy

            policy = BCQPolicy.from_policy_state(ctx.config.bcq.algo, weights[ctx.config.bcq.snapshot], ctx.device)
            return lambda obs: policy.act(obs[None])[0]  # one task: its rows on the task axis
        from mtrl.algos.sac import SAC

        agent = SAC(ctx.config.collect.sac, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device, tasks=1)
        agent.load_state_dict(weights)
        return lambda obs: agent.act(obs[None], deterministic=True)[0]  # one task: its rows on the task axis
