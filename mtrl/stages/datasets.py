"""Stage `datasets`: the dataset kinds besides the replay, made from collect's saved SAC run without rerunning it.

D4RL's conventions (Fu et al., 2020, Sec. 5 "Gym-MuJoCo") on each task's own SAC run, whose actor `collect`
saved at step 0 and at every evaluation (`sac/task_NN.h5`, `policy_checkpoints`):

- `random`: `data.transitions` rows from the step-0 (randomly initialised) policy;
- `expert`: the same from the final policy (trained to completion);
- `medium`: the same from the first evaluated checkpoint whose D4RL-normalised return
  (R - R_random) / (R_expert - R_random) reaches `data.medium_level` (D4RL: about a third of the expert), R being
  the deterministic evaluation returns of collect's learning curve and R_random that of the step-0 policy under
  the same evaluation (episodes, reset seeds);
- `medium-replay`: the replay's first rows up to that checkpoint's step (everything SAC saw until it reached the
  medium level, random warm-up included);
- `mixed`: equal shares of `data.transitions` rows from evenly spaced checkpoints, step 0 to final (FOCAL App. D:
  trajectories of the SAC models "from beginning (random quality) to end (expert quality)").

Rollouts sample the stochastic policy as D4RL does (`data.deterministic` takes the mean action instead). Each
kind of each task is a unit: the fingerprint covers its task, its kind, the `data` keys it reads and its inputs,
so a run asking for a new kind makes only that kind.
"""

from __future__ import annotations

import numpy as np

from mtrl.configlib import build
from mtrl.data import DATASET_KINDS, episode_ends
from mtrl.errors import ArtifactError
from mtrl.nn import require_finite, to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import (
    load_dataset,
    n_test_tasks,
    n_train_tasks,
    read_distribution,
    split_key,
    split_params,
    split_tasks,
    task_splits,
)
from mtrl.rl.episodes import evaluate_lockstep
from mtrl.rl.rollouts import rollout_rows
from mtrl.seeding import ONLINE_SAC_EVAL_SEED, derive_seed

ROLLED_OUT = ("random", "medium", "expert", "mixed")
# the `data` keys each kind reads (the others stay out of its fingerprint)
READS = {"medium-replay": ("medium_level",), "random": ("transitions", "deterministic"),
         "medium": ("medium_level", "transitions", "deterministic"), "expert": ("transitions", "deterministic"),
         "mixed": ("transitions", "deterministic", "mixed_checkpoints")}


def made_kinds(config) -> list[str]:
    """The kinds `mtrl datasets` makes: data.kinds and data.kind, less the replay (collect's), in canonical order."""
    wanted = {*config.data.kinds, config.data.kind}
    return [kind for kind in DATASET_KINDS if kind in wanted and kind != "replay"]


def medium_step(steps: np.ndarray, returns: np.ndarray, random_return: float, level: float) -> int:
    """The first evaluated step whose return reaches `random_return + level·(final − random_return)`: the
    D4RL-normalised level, the final evaluation being the expert. If SAC ended below its initial policy (a budget
    too small to learn), normalising is meaningless: the first step at least as good as the final one."""
    threshold = min(random_return + level * (returns[-1] - random_return), returns[-1])
    return int(steps[np.flatnonzero(returns >= threshold)[0]])


def mixed_steps(steps: list[int], count: int | None) -> list[int]:
    """`count` checkpoints evenly spaced from the first to the last of `steps` (all of them if None)."""
    if count is None or count >= len(steps):
        return list(steps)
    return [steps[i] for i in sorted({int(round(x)) for x in np.linspace(0, len(steps) - 1, count)})]


def shares(rows: int, parts: int) -> list[int]:
    """`rows` split into `parts` as evenly as possible, earlier parts taking the remainder."""
    size, extra = divmod(rows, parts)
    return [size + (p < extra) for p in range(parts)]


class MakeDatasets(Stage):
    name = "datasets"
    sections = ("data",)
    not_covered = ("data.kinds", "data.kind", "data.test_tasks")  # which units exist, not what one computes

    def units(self, config, run_dir):
        """Every made kind of every training task and, with data.test_tasks, of every test task too (from the test
        task's own SAC run, sac/test/)."""
        units = []
        for split in task_splits(config):
            for kind in made_kinds(config):
                for i in range(n_train_tasks(config) if split == "train" else n_test_tasks(config)):
                    inputs = {"tasks": layout.tasks_input(run_dir),
                              "sac": Input(layout.sac(run_dir, i, split), "sac", "collect")}
                    if kind == "medium-replay":
                        inputs["replay"] = layout.dataset_input(run_dir, i, split=split)
                    output = Output(layout.dataset(run_dir, i, kind, split), "dataset")
                    units.append(Unit(f"{kind}_{split_key(split, i)}", {"dataset": output}, inputs,
                                      params=split_params(split, i) | {"kind": kind},
                                      task=i if split == "train" else None, split=split))
        return units

    def unused_keys(self, config, unit):
        reads = READS[unit.params["kind"]]
        return tuple(f"data.{key}" for key in ("transitions", "medium_level", "mixed_checkpoints", "deterministic")
                     if key not in reads)

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.sac import SAC, SACConfig

        kind, task, cfg = ctx.unit.params["kind"], ctx.unit.params["task"], ctx.config.data
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, params = dist.spec, split_tasks(dist, ctx.unit.split)[task]
        with ctx.read("sac") as art:
            if "policy_checkpoints" not in art:
                raise ArtifactError(f"{art.path} has no policy checkpoints (collected before dataset kinds existed); "
                                    f"recollect with `mtrl collect --force --tasks {task}` to make the {kind} kind")
            policies = art.tree("policy_checkpoints")
            curve = art.tree("curve")
            collect = art.meta("config")["collect"]
        sac_cfg = build(SACConfig, collect["sac"])
        steps = sorted(policies)
        env = dist.make_env(params)

        def agent(chosen: list[int], seed_name: str):
            """The chosen checkpoints as one task-batched SAC, each drawing its noise from its own generator."""
            sac = SAC(sac_cfg, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device, tasks=len(chosen),
                      seeds=[derive_seed(ctx.seed, seed_name, str(step)) for step in chosen])
            sac.load_policy_state(to_torch_tree(SAC.stack_policy_states([policies[s] for s in chosen]), ctx.device))
            return sac

        info = {"kind": kind, "policy": "deterministic" if cfg.deterministic else "stochastic"}
        if kind in ("medium", "medium-replay"):
            initial = agent([steps[0]], "evaluation")  # the curve's protocol: deterministic, the same reset seeds
            random_return = float(evaluate_lockstep([env], lambda _: lambda o: initial.act(o, deterministic=True),
                                                    int(collect["eval_episodes"]), ONLINE_SAC_EVAL_SEED)[0].mean())
            step = medium_step(np.asarray(curve["steps"]), np.asarray(curve["return_mean"]), random_return,
                               cfg.medium_level)
            info |= {"random_return": random_return, "expert_return": float(curve["return_mean"][-1]),
                     "medium_level": cfg.medium_level, "medium_step": step}
        if kind == "medium-replay":
            with ctx.read("replay") as art:
                data = {k: v[:step].copy() for k, v in load_dataset(art, spec, infos=True).items()}
            data["timeouts"][-1] = data["timeouts"][-1] or not data["terminals"][-1]
            info |= {"replay_rows": step}
            del info["policy"]
        else:
            chosen = {"random": [steps[0]], "expert": [steps[-1]], "medium": [info.get("medium_step")],
                      "mixed": mixed_steps(steps, cfg.mixed_checkpoints)}[kind]
            rows = cfg.transitions or int(collect["steps"])
            sac = agent(chosen, "rollout")
            parts = rollout_rows([dist.make_env(params) for _ in chosen],
                                 lambda obs: sac.act(obs, deterministic=cfg.deterministic), shares(rows, len(chosen)),
                                 derive_seed(ctx.seed, "episodes"), spec.obs_dim, spec.act_dim, spec.info_keys)
            data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            info |= {"checkpoint_steps": chosen, "rows_per_checkpoint": shares(rows, len(chosen))}
        require_finite({"dataset": data}, f"datasets {ctx.unit.key}")
        with ctx.writer("dataset") as w:
            for key, values in data.items():
                w.array(key, values)
            w.attrs["task"] = task
            w.attrs["split"] = ctx.unit.split
            w.attrs["dataset_kind"] = kind
            w.attrs["episodes"] = len(episode_ends(data["terminals"], data["timeouts"]))
            w.json("kind_info", info)
        ctx.log.info(f"datasets {ctx.unit.key}: {len(data['rewards'])} transitions, " +
                     ", ".join(f"{k} {v}" for k, v in info.items() if k != "kind"))
