"""Stage `train-cql`: the CQL family of HCSAC (seed 004) — BC, CSAC, MT-BC, MTCSAC, HCSAC — on every dataset kind
of `data.kinds` (Table 1's rows: medium, medium-replay), evaluated online on the training tasks every
`cql.eval_every` epochs (Sec. 3.1).

One unit per (kind, method): `cql/<kind>/<method>.h5`. The per-task methods (bc, csac) train every training task's
agent at once as one task-batched model (task t sees only D_t); the multi-task ones (mt-bc, mtcsac, hcsac) one
agent over the union of the tasks' data, each row's observation carrying its task id as a last column. HCSAC
rebuilds its active data every `cql.relabel_every` epochs from the original datasets (Alg. 1): rows of D_j
admitted to task i get task i's id and the reward task i's true reward function gives them (`dist.reward`; the
paper follows CDS without saying how rewards are relabelled; the Walker tasks differ only in reward, which the
family computes from the stored infos). These methods know the task id, so they are evaluated on the training
tasks (the Walker families' test tasks are the same walk/run tasks), not by Alg. 5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mtrl.algos.cql import METHODS, relabel_masks
from mtrl.configlib import to_dict
from mtrl.data import sample_rows, to_torch
from mtrl.nn import precision, require_finite, to_numpy_tree, to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, read_distribution
from mtrl.rl.episodes import evaluate_lockstep
from mtrl.seeding import CQL_EVAL_SEED

Q_CHUNK = 8192  # rows per critic forward when HCSAC scores a dataset


@dataclass
class CQLProgress:
    """Where a unit stands (checkpointed): epochs done, per-epoch mean losses, evaluations, relabelling rounds."""

    epoch: int = 0
    losses: dict[str, list[float]] = field(default_factory=dict)
    eval_curve: list[list[float]] = field(default_factory=list)  # [epoch, mean return of task 0, task 1, ...]
    relabel_epochs: list[int] = field(default_factory=list)
    relabel_fractions: list[list[list[float]]] = field(default_factory=list)  # per round [K_i, K_j]


def with_task_ids(data: dict[str, np.ndarray], task: int) -> dict[str, np.ndarray]:
    """A dataset's training arrays with the task id as a last observation column (the multi-task agents' input)."""
    rows = sample_rows(data, slice(None))
    column = np.full((len(rows["rewards"]), 1), task, np.float32)
    for key in ("observations", "next_observations"):
        rows[key] = np.concatenate([rows[key], column], 1)
    return rows


def active_union(datasets: list[dict[str, np.ndarray]], masks, relabelled_rewards) -> dict[str, np.ndarray]:
    """Alg. 1 line 11: ∪_i D*_i, D*_i = D_i (id i) ∪ the admitted rows of every D_j with id i and task i's rewards
    (`relabelled_rewards[i][j]`, over the admitted rows). Without masks: ∪_i D_i (MTCSAC)."""
    parts = []
    for i, data in enumerate(datasets):
        parts.append(with_task_ids(data, i))
        for j, other in enumerate(datasets):
            if masks is None or j == i or not masks[i][j].any():
                continue
            rows = with_task_ids({k: v[masks[i][j]] for k, v in other.items()}, i)
            rows["rewards"] = relabelled_rewards[i][j].astype(np.float32)
            parts.append(rows)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def q_over(agent, datasets: list[dict[str, np.ndarray]], i: int, j: int, device) -> np.ndarray:
    """min(Q_1, Q_2) of the multi-task `agent` for task i (id i) over the rows of D_j, in chunks."""
    obs, actions = datasets[j]["observations"], datasets[j]["actions"]
    out = []
    for start in range(0, len(obs), Q_CHUNK):
        rows = obs[start:start + Q_CHUNK]
        x = np.concatenate([rows, np.full((len(rows), 1), i, np.float32)], 1)[None]
        a = actions[None, start:start + Q_CHUNK]
        out.append(agent.q_min(*(torch.as_tensor(v, device=device) for v in (x, a)))[0].cpu().numpy())
    return np.concatenate(out)


def admitted_rewards(dist, datasets: list[dict[str, np.ndarray]], masks) -> list[list[np.ndarray | None]]:
    """[i][j]: task i's true rewards on the rows of D_j admitted to task i (`masks[i][j]`); None for j == i."""
    k = len(datasets)
    return [[None if j == i else dist.dataset_reward(dist.train_tasks[i], datasets[j], masks[i][j])
             for j in range(k)] for i in range(k)]


class TrainCQL(Stage):
    name = "train-cql"
    sections = ("cql",)
    not_covered = ("cql.methods",)  # the unit list; each unit's method is its parameter

    def units(self, config, run_dir):
        inputs = {"tasks": layout.tasks_input(run_dir)}
        k = n_train_tasks(config)
        return [Unit(f"{kind}-{method}", {"agent": Output(layout.cql(run_dir, kind, method), "cql")},
                     inputs | {f"dataset_{i}": layout.dataset_input(run_dir, i, kind) for i in range(k)},
                     params={"kind": kind, "method": method})
                for kind in config.data.kinds for method in config.cql.methods]

    def unused_keys(self, config, unit):
        """A unit reads its agent's section and HCSAC's relabelling keys only if it relabels."""
        method = METHODS[unit.params["method"]]
        unused = ["cql.bc" if method.section == "csac" else "cql.csac"]
        if not method.relabel:
            unused += ["cql.relabel_every", "cql.relabel_quantile"]
        return tuple(unused)

    def run_unit(self, ctx: UnitContext) -> None:
        cfg = ctx.config.cql
        method = METHODS[ctx.unit.params["method"]]
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, k = dist.spec, len(dist.train_tasks)
        datasets = []
        for i in range(k):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art, spec, infos=method.relabel))
        agent_cfg = getattr(cfg, method.section)
        batch_size = agent_cfg.batch_size
        tasks = 1 if method.multi_task else k
        agent = method.agent(agent_cfg, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device, tasks=tasks,
                             seeds=[ctx.seed + t for t in range(tasks)], task_ids=k if method.multi_task else 0)
        rng = np.random.default_rng(ctx.seed)
        run, masks = CQLProgress(), None
        saved = ctx.checkpointer.load()
        if saved is not None:
            agent.load_state_dict(to_torch_tree(saved["agent"], ctx.device))
            rng.bit_generator.state = saved["rng"]
            run, masks = CQLProgress(**saved["run"]), saved.get("masks")
            ctx.log.info(f"train-cql {ctx.unit.key}: resuming at epoch {run.epoch}")

        union = None
        if method.multi_task:
            current = _unpack(masks, k) if masks else None
            union = active_union(datasets, current, admitted_rewards(dist, datasets, current) if current else None)

        def sample() -> dict[str, torch.Tensor]:
            if union is not None:
                rows = sample_rows(union, rng.integers(0, len(union["rewards"]), batch_size))
                return to_torch({key: v[None] for key, v in rows.items()}, ctx.device)
            rows = [sample_rows(d, rng.integers(0, len(d["rewards"]), batch_size)) for d in datasets]
            return to_torch({key: np.stack([r[key] for r in rows]) for key in rows[0]}, ctx.device)

        def act(obs: np.ndarray) -> np.ndarray:  # obs [K, obs_dim], env t being task t
            if not method.multi_task:
                return agent.act(obs, deterministic=True)
            ids = np.arange(k, dtype=np.float32)[:, None]
            return agent.act(np.concatenate([obs, ids], 1)[None], deterministic=True)[0]

        envs = [dist.make_env(task) for task in dist.train_tasks]
        bar = ctx.progress(cfg.epochs * cfg.steps_per_epoch, unit="update", initial=run.epoch * cfg.steps_per_epoch)
        while run.epoch < cfg.epochs:
            sums: dict[str, torch.Tensor] = {}
            for _ in range(cfg.steps_per_epoch):
                with precision(cfg.precision, ctx.device):
                    metrics = agent.update(sample())
                for key, value in metrics.items():
                    sums[key] = sums[key] + value if key in sums else value
                bar.update(1)
            run.epoch += 1
            for key, total in sums.items():
                run.losses.setdefault(key, []).append(float(total.mean()) / cfg.steps_per_epoch)
            if run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs:
                with UnitContext.evaluating([ctx]):
                    returns = evaluate_lockstep(envs, lambda _: act, cfg.eval_episodes, CQL_EVAL_SEED)
                run.eval_curve.append([run.epoch, *returns.mean(1).tolist()])
                bar.set_postfix(eval_return=f"{returns.mean():.1f}")
            if method.relabel and run.epoch % cfg.relabel_every == 0 and run.epoch < cfg.epochs:
                new = relabel_masks(  # Alg. 1 after every L-th block of training
                    lambda i, j: q_over(agent, datasets, i, j, ctx.device), k, cfg.relabel_quantile)
                masks = _pack(new)
                union = active_union(datasets, new, admitted_rewards(dist, datasets, new))
                run.relabel_epochs.append(run.epoch)
                run.relabel_fractions.append([[1.0 if m is None else float(m.mean()) for m in row] for row in new])
                ctx.log.info(f"train-cql {ctx.unit.key} epoch {run.epoch}: relabelled fractions "
                             f"{np.round(run.relabel_fractions[-1], 3).tolist()}")
            if run.epoch % cfg.checkpoint_every == 0 and run.epoch < cfg.epochs:
                ctx.checkpointer.save({"agent": to_numpy_tree(agent.state_dict()), "rng": rng.bit_generator.state,
                                       "run": asdict(run)} | ({"masks": masks} if masks else {}))
        bar.close()

        weights = to_numpy_tree(agent.policy_state_dict())
        require_finite(weights, f"train-cql {ctx.unit.key}")
        curve = np.array(run.eval_curve, dtype=np.float64)
        final = curve[-cfg.final_evaluations:, 1:].mean(0)
        with ctx.writer("agent") as w:
            w.tree("weights", weights)
            w.curve("losses", {"epoch": np.arange(1, run.epoch + 1, dtype=np.float64)}
                    | {key: np.array(v) for key, v in run.losses.items()}, "epoch")
            w.curve("eval_curve", {"epochs": curve[:, 0]} | {f"task_{t:02d}": curve[:, 1 + t] for t in range(k)},
                    "epochs")
            if method.relabel:
                w.array("relabel_epochs", np.array(run.relabel_epochs, dtype=np.int64))
                w.array("relabel_fractions", np.array(run.relabel_fractions, dtype=np.float64).reshape(-1, k, k))
            w.array("final_returns", final)
            w.attrs["method"] = ctx.unit.params["method"]
            w.attrs["dataset_kind"] = ctx.unit.params["kind"]
            w.json("agent_config", to_dict(agent_cfg))


def _pack(masks) -> dict[str, np.ndarray]:
    """Alg. 1's masks as a flat dict (checkpoint trees store dicts of arrays)."""
    return {f"{i}_{j}": m for i, row in enumerate(masks) for j, m in enumerate(row) if m is not None}


def _unpack(packed: dict[str, np.ndarray], k: int):
    return [[None if i == j else np.asarray(packed[f"{i}_{j}"], bool) for j in range(k)] for i in range(k)]
