"""Every family's `smoke` profile is small whatever a user enables (issue 34): with every method of the registry
switched on (all distill variants, all baselines, the CQL family, every IWPA variant, every dataset kind, test-task
data), each stage's budget stays within the limits configs/base.yaml and README.md ("Profiles") promise.

Before base.yaml's smoke profile bounded every method, this failed: e.g. `--set baselines.algos=[focal]` on
PointRobot's smoke profile inherited 1000 × 100 updates and 3 × 256 networks (2 h 28 min on 2 cores), and the CQL
family outside WalkerWalkRun 1000 × 1000 updates on 3 × 1024 networks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from mtrl import methods
from mtrl.algos.cql import CQL_METHODS
from mtrl.config import Config, load_config
from mtrl.configlib import to_dict
from mtrl.data import DATASET_KINDS
from mtrl.envs.registry import get_family

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAMILY_FILES = sorted(p for p in CONFIGS.glob("*.yaml") if "family" in (yaml.safe_load(p.read_text()).get("env") or {}))

# What `--profile smoke` promises (configs/base.yaml, README.md "Profiles"), per unit of work (a task, a method, a
# variant, a dataset kind).
SMOKE = {
    "tasks": 4,  # training tasks, and test tasks
    "env_steps": 1_000,  # environment interactions of a unit (collection, dataset kinds, sac-init, IWPL, IWPA)
    "updates": 1_000,  # gradient updates of a unit (epochs × steps_per_epoch for the multi-task stages)
    "evaluations": 5,  # evaluations during a unit's training, the final one included
    "eval_episodes": 2,  # episodes per task and evaluation during training
    "protocol_episodes": 5,  # episodes per task of `mtrl evaluate` (× evaluate.repeats)
    "relabelled": 1_000,  # transitions per task relabelled
    "width": 64,  # units of every hidden layer
    "depth": 3,  # hidden layers of every network
    "batch": 128,  # every batch size and context size
    "members": 5,  # ensemble members
}


def everything_enabled(path: Path) -> list[str]:
    """--set overrides switching on every method, variant and dataset kind the family allows."""
    family = yaml.safe_load(path.read_text())["env"]["family"]
    cql = [m for m in CQL_METHODS if m != "hcsac" or get_family(family).spec.varies == "reward"]
    policies = list(methods.names())
    return [f"distill.variants=[{','.join(methods.names('distill'))}]",
            f"baselines.algos=[{','.join(methods.names('train-baseline'))}]",
            f"cql.methods=[{','.join(cql)}]",
            f"adapt.variants=[{','.join(methods.ADAPT_VARIANTS)}]",
            f"data.kinds=[{','.join(DATASET_KINDS)}]",
            "data.test_tasks=true",
            f"sac_init.policies=[{','.join(policies)}]"]


def evaluations(budget: int, every: int) -> int:
    """Evaluations of a training loop of `budget` steps evaluated every `every` (0: only at the end) and at the end."""
    return 1 if every == 0 else math.ceil(budget / every) + 1


def stage_budgets(config: Config) -> dict[str, tuple[str, int]]:
    """'stage.quantity' -> (kind of limit, value) for every stage of a resolved config, per unit of work."""
    c = config
    sac_init_env = c.sac_init.rollout_steps + c.sac_init.warmup_steps + c.sac_init.steps
    multi_task = {"distill": c.distill, "baselines": c.baselines, "cql": c.cql}
    budgets = {
        "env.n_train": ("tasks", c.env.n_train or get_family(c.env.family).spec.default_n_train),
        "env.n_test": ("tasks", c.env.n_test or get_family(c.env.family).spec.default_n_test),
        "collect.steps": ("env_steps", c.collect.steps),
        "collect.sac updates": ("updates", c.collect.steps * c.collect.sac.utd),
        "collect.evaluations": ("evaluations", evaluations(c.collect.steps, c.collect.eval_every)),
        "collect.eval_episodes": ("eval_episodes", c.collect.eval_episodes),
        "datasets.transitions": ("env_steps", c.data.transitions or c.collect.steps),
        "bcq.steps": ("updates", c.bcq.steps),
        "bcq.evaluations": ("evaluations", evaluations(c.bcq.steps, c.bcq.eval_every)),
        "bcq.eval_episodes": ("eval_episodes", c.bcq.eval_episodes),
        "rewards.steps": ("updates", c.rewards.steps),
        "dynamics.steps": ("updates", c.dynamics.steps),
        "relabel.max_transitions": ("relabelled", c.relabel.max_transitions),
        "evaluate.episodes": ("protocol_episodes", c.evaluate.episodes * c.evaluate.repeats),
        "sac_init.env steps": ("env_steps", sac_init_env),
        "sac_init.imitation_steps": ("updates", c.sac_init.imitation_steps),
        "sac_init.sac updates": ("updates", c.sac_init.steps * c.sac_init.sac.utd),
        "sac_init.evaluations": ("evaluations", evaluations(c.sac_init.steps, c.sac_init.eval_every)),
        "sac_init.eval_episodes": ("eval_episodes", c.sac_init.eval_episodes),
        "iwpl.steps": ("env_steps", c.iwpl.steps),
        "iwpl.updates": ("updates", c.iwpl.steps * c.iwpl.algo.utd),
        "iwpl.evaluations": ("evaluations", evaluations(c.iwpl.steps, c.iwpl.eval_every)),
        "iwpl.eval_episodes": ("eval_episodes", c.iwpl.eval_episodes),
        "adapt.updates": ("updates", c.sac_init.steps * c.adapt.algo.utd),  # IWPA runs on sac-init's budget
        "cql.eval_episodes": ("eval_episodes", c.cql.eval_episodes),
    }
    for name, stage in multi_task.items():
        budgets[f"{name}.updates"] = ("updates", stage.epochs * stage.steps_per_epoch)
        budgets[f"{name}.evaluations"] = ("evaluations", evaluations(stage.epochs, stage.eval_every))
    return budgets


def network_sizes(tree, key: str = "") -> dict[str, tuple[str, int]]:
    """'key' -> (kind of limit, value) for every network width and depth, batch and context size and ensemble size
    anywhere in a resolved config (sections of methods that are not enabled included: a user may enable them)."""
    if isinstance(tree, dict):
        found = {}
        for name, value in tree.items():
            found |= network_sizes(value, f"{key}.{name}" if key else name)
        return found
    name = key.rpartition(".")[2]
    if name.endswith("hidden"):
        return {f"{key} width": ("width", max(tree)), f"{key} depth": ("depth", len(tree))}
    if name.endswith("batch_size") or name.endswith("context_size") or name == "imitation_batch":
        return {key: ("batch", tree)}
    if name == "members":
        return {key: ("members", tree)}
    return {}


def over_limits(config: Config, limits: dict[str, int]) -> list[str]:
    everything = stage_budgets(config) | network_sizes(to_dict(config))
    return [f"{key} = {value} > {limits[kind]} ({kind})" for key, (kind, value) in everything.items()
            if value > limits[kind]]


@pytest.mark.parametrize("path", FAMILY_FILES, ids=lambda p: p.stem)
def test_smoke_profile_bounds_every_stage_of_every_method(path):
    config = load_config(path, "smoke", everything_enabled(path))
    assert over_limits(config, SMOKE) == []


def test_the_walk_sees_a_paper_scale_budget_and_network():
    """The check itself: one baseline left at the defaults is caught, by its budget and by its networks."""
    path = CONFIGS / "point_robot.yaml"
    config = load_config(path, "smoke", everything_enabled(path) + ["baselines.epochs=1000",
                                                                    "baselines.focal.hidden=[256,256,256]"])
    assert over_limits(config, SMOKE) == ["baselines.updates = 5000 > 1000 (updates)",
                                          "baselines.focal.hidden width = 256 > 64 (width)"]
