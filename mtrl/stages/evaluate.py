"""Stage `evaluate`: every policy of the run under the Alg. 5 protocol on train and test tasks.

Multi-task policies (policies/<name>.h5) are evaluated on every train and unseen test task; the per-task
baselines `sac` and `bcq` (MBML Table 9) on their own training task. Episodes reset from seeds shared by all
policies of a run, so methods are compared on the same start states.
"""

from __future__ import annotations

import numpy as np

from mtrl.configlib import build, to_dict
from mtrl.nn import to_torch_tree
from mtrl.seeding import derive_seed
from mtrl.stages import layout
from mtrl.stages.base import Input, Output, Stage, Unit, UnitContext
from mtrl.stages.common import env_spec, load_dataset, n_train_tasks, read_distribution
from mtrl.stages.policies import ContextFreePolicy, ContextPolicy, EmbeddingPolicy
from mtrl.stages.probe import task_inference_probe
from mtrl.stages.protocol import run_protocol, score

PER_TASK_BASELINES = ("sac", "bcq")


def evaluation_seed(config) -> int:
    return derive_seed(config.seed, "evaluation-episodes")


def training_evaluation_config(config) -> dict:
    """The evaluation settings that evaluation during training (distill, train-baseline) depends on: one run of
    the protocol per evaluation, so `evaluate.repeats` is not among them."""
    section = to_dict(config.evaluate)
    del section["repeats"]
    return section


def evaluate_tasks(envs: list, policy: ContextPolicy, cfg, seed: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Alg. 5 in every env, `repeats` independent times (episode seeds seed + 1000·r, fresh beliefs): returns
    [tasks, repeats, episodes] and per-task scores averaged over the repeats [tasks]."""
    returns = np.zeros((len(envs), repeats, cfg.episodes))
    for r in range(repeats if envs else 0):
        returns[:, r] = run_protocol(envs, policy, cfg.episodes, seed + 1000 * r)
    scores = score(returns.reshape(-1, cfg.episodes), cfg.skip_episodes).reshape(len(envs), repeats).mean(1)
    return returns, scores


def summary_of(returns: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict:
    """The evaluation result of each split: returns, per-task scores and their mean (NaN for no tasks)."""
    result = {}
    for split in returns:
        result |= {f"{split}_returns": returns[split], f"{split}_scores": scores[split],
                   f"{split}_score": float(scores[split].mean()) if len(scores[split]) else float("nan")}
    return result


def run_evaluation(dist, policy: ContextPolicy, cfg, seed: int, repeats: int = 1) -> dict:
    """`evaluate_tasks` on all train and test tasks of `dist`."""
    returns, scores = {}, {}
    for split, tasks in (("train", dist.train_tasks), ("test", dist.test_tasks)):
        returns[split], scores[split] = evaluate_tasks([dist.make_env(t) for t in tasks], policy, cfg, seed, repeats)
    return summary_of(returns, scores)


def load_multitask_policy(art, device, seed: int) -> ContextPolicy:
    """Build the policy stored in a policies/<name>.h5 artifact, whichever method wrote it."""
    from mtrl.algos.batch_pearl import BatchPEARL, BatchPEARLConfig
    from mtrl.algos.contextual_bcq import ContextualBCQ, ContextualBCQConfig
    from mtrl.algos.mbml import MBML, MBMLConfig

    builders = {"mbml": (MBML, MBMLConfig), "contextual-bcq": (ContextualBCQ, ContextualBCQConfig),
                "batch-pearl": (BatchPEARL, BatchPEARLConfig)}
    algo_name = str(art.file.attrs["algo"])
    cls, cfg_cls = builders[algo_name]
    algo = cls.from_policy_state(build(cfg_cls, art.meta("algo_config")), to_torch_tree(art.tree("weights")), device)
    return EmbeddingPolicy(algo, seed)


class Evaluate(Stage):
    name = "evaluate"
    sections = ("evaluate",)

    def __init__(self, policies: tuple[str, ...] | None = None):
        self.policies = policies  # `mtrl evaluate --policy X`; None: every policy the config trains

    def units(self, config, run_dir):
        from mtrl.config import BASELINES
        from mtrl.stages.distill import policy_name

        names = self.policies or (*PER_TASK_BASELINES,
                                  *(policy_name(v, config.distill.relabel) for v in config.distill.variants),
                                  *config.baselines.algos)
        units = []
        for name in names:
            inputs = {"tasks": layout.tasks_input(run_dir)}
            if name == "sac":
                inputs |= {f"task_{i}": Input(layout.sac(run_dir, i), "sac", "collect")
                           for i in range(n_train_tasks(config))}
            elif name == "bcq":
                inputs |= {f"task_{i}": Input(layout.bcq(run_dir, i), "bcq", "train-bcq")
                           for i in range(n_train_tasks(config))}
            else:
                producer = "train-baseline" if name in BASELINES else "distill"
                inputs["policy"] = Input(layout.policy(run_dir, name), "policy", producer)
                if env_spec(config).varies == "reward":  # the task-inference probe relabels with true rewards
                    inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i) for i in range(n_train_tasks(config))}
            units.append(Unit(name, {"eval": Output(layout.evaluation(run_dir, name), "eval")}, inputs,
                              params={"policy": name}))
        return units

    def run_unit(self, ctx: UnitContext) -> None:
        cfg, name = ctx.config.evaluate, ctx.unit.key
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        seed = evaluation_seed(ctx.config)
        if name in PER_TASK_BASELINES:
            result = self._per_task(ctx, dist, seed)
        else:
            with ctx.read("policy") as art:
                policy = load_multitask_policy(art, ctx.device, ctx.seed)
            result = run_evaluation(dist, policy, cfg, seed, cfg.repeats)
            if dist.spec.varies == "reward":
                result["probe"] = self._probe(ctx, dist, policy)
        with ctx.writer("eval") as w:
            w.tree("returns", {k: v for k, v in result.items() if k.endswith(("_returns", "_scores"))})
            if "probe" in result:
                w.tree("task_inference", result["probe"])
            w.json("summary", {k: v for k, v in result.items() if k.endswith("_score")})
            w.attrs["skip_episodes"] = cfg.skip_episodes
        ctx.log.info(f"evaluate {name}: train {result['train_score']:.2f}, test {result['test_score']:.2f}")

    @staticmethod
    def _probe(ctx: UnitContext, dist, policy) -> dict:
        """Whether the policy's task inference follows rewards or state-action pairs (`mtrl.stages.probe`)."""
        datasets = []
        for i in range(len(dist.train_tasks)):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art, infos=True))
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
        returns = {"train": np.concatenate([r for r, _ in per_task]), "test": np.zeros((0, cfg.repeats, cfg.episodes))}
        return summary_of(returns, {"train": np.concatenate([s for _, s in per_task]), "test": np.zeros(0)})

    @staticmethod
    def _act_fn(ctx: UnitContext, spec, input_name: str):
        with ctx.read(input_name) as art:
            weights = to_torch_tree(art.tree("weights"), ctx.device)
        if ctx.unit.key == "bcq":
            from mtrl.algos.bcq import BCQPolicy

            return BCQPolicy.from_policy_state(ctx.config.bcq.algo, weights[ctx.config.bcq.snapshot], ctx.device).act
        from mtrl.algos.sac import SAC

        agent = SAC(ctx.config.collect.sac, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device)
        agent.load_state_dict(weights)
        return lambda obs: agent.act(obs, deterministic=True)
