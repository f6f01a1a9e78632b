"""Stage `relabel` (MBML Alg. 3, Eq. 7): every task's transitions relabelled by every task's models.

For each ordered pair (j → i), task i's reward ensemble predicts the rewards of task j's transitions; a
prediction is kept where the ensemble's std is below the distribution's threshold, with the ensemble mean as
the reward. Distributions whose tasks differ in dynamics also relabel next states with the next-state
ensembles (a row is kept when both are confident); as in the reference code, a next state is confident when
the mean over state dimensions of the members' std is below the threshold (`relabel.next_state_std_statistic`;
`max` asks it of every dimension). Each task contributes the same seeded random subset of
`relabel.max_transitions` rows; the triplet loss draws its context sets from them.

The `ground-truth` source relabels with the true reward functions instead (the paper's ablation). Where a
ground truth exists, the statistics include the error of the relabelled rewards on kept and on all rows
(the data of the paper's Fig. 7).
"""

from __future__ import annotations

import numpy as np

from mtrl.errors import ConfigError
from mtrl.nn import to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import env_spec, load_dataset, n_train_tasks, read_distribution
from mtrl.stages.fit_ensembles import ensemble_input


class Relabel(Stage):
    name = "relabel"
    sections = ("relabel",)

    def units(self, config, run_dir):
        spec, k = env_spec(config), n_train_tasks(config)
        sources = ["learned"] + (["ground-truth"] if config.distill.relabel == "ground-truth" else [])
        units = []
        for source in sources:
            inputs = {"tasks": layout.tasks_input(run_dir)}
            inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i, config.data.kind) for i in range(k)}
            if source == "learned":
                inputs |= {f"rewards_{i}": ensemble_input(run_dir, "rewards", i) for i in range(k)}
                if spec.varies == "dynamics":
                    inputs |= {f"dynamics_{i}": ensemble_input(run_dir, "dynamics", i) for i in range(k)}
            elif spec.varies != "reward":
                raise ConfigError(f"distill.relabel=ground-truth needs a family whose tasks differ in reward; "
                                  f"{spec.name} tasks differ in {spec.varies}")
            units.append(Unit(source, {"relabel": Output(layout.relabel(run_dir, source), "relabel")}, inputs,
                              params={"source": source}))
        return units

    def run_unit(self, ctx: UnitContext) -> None:
        cfg, source = ctx.config.relabel, ctx.unit.params["source"]
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, k = dist.spec, len(dist.train_tasks)
        datasets = []
        for j in range(k):
            with ctx.read(f"dataset_{j}") as art:
                datasets.append(load_dataset(art, spec, infos=True))
        m = min(cfg.max_transitions, *(len(d["rewards"]) for d in datasets))
        rng = np.random.default_rng(ctx.seed)
        indices = np.stack([np.sort(rng.choice(len(d["rewards"]), m, replace=False)) for d in datasets])
        subsets = [{key: values[idx] for key, values in d.items()} for d, idx in zip(datasets, indices, strict=True)]

        truth = None
        if spec.varies == "reward":  # the true reward of task i on task j's transitions
            truth = np.stack([[dist.dataset_reward(dist.train_tasks[i], s) for s in subsets] for i in range(k)])
        out: dict[str, np.ndarray] = {"indices": indices}
        if source == "ground-truth":
            out |= {"rewards": truth.astype(np.float32), "reward_std": np.zeros_like(truth, np.float32),
                    "reward_mask": np.ones(truth.shape, bool)}
        else:
            threshold = _threshold(cfg.reward_std_threshold, spec.reward_std_threshold)
            out |= self._relabel(ctx, "rewards", subsets, threshold, "max")
            if spec.varies == "dynamics":
                threshold = _threshold(cfg.next_state_std_threshold, spec.next_state_std_threshold)
                dyn = self._relabel(ctx, "dynamics", subsets, threshold, cfg.next_state_std_statistic)
                out |= {"next_observations": dyn["rewards"], "next_state_std": dyn["reward_std"],
                        "next_state_mask": dyn["reward_mask"]}
        stats = relabel_statistics(out, truth)
        with ctx.writer("relabel") as w:
            for key, values in out.items():
                w.array(key, values)
            if truth is not None:
                w.array("true_rewards", truth.astype(np.float32))
            w.tree("stats", stats)
            w.attrs["source"] = source
        off = ~np.eye(k, dtype=bool)
        ctx.log.info(f"relabel {source}: kept {stats['keep_fraction'][off].mean():.1%} of other tasks' rows"
                     + (f", |error| kept {np.nanmean(stats['error_kept'][off]):.4f} all "
                        f"{stats['error_all'][off].mean():.4f}" if truth is not None else ""))

    def _relabel(self, ctx: UnitContext, target: str, subsets: list[dict], threshold: float,
                 statistic: str) -> dict[str, np.ndarray]:
        """Alg. 3 for every (model i, data j): values [K, K, M(, dim)], the std statistic per row and the
        confidence mask. Rewards (a scalar target) lose their trailing dimension."""
        from mtrl.algos.ensemble import EnsembleRegressor, relabel_with_ensemble, row_std

        scalar = target == "rewards"
        cfg = getattr(ctx.config, target)
        values, stds, masks = [], [], []
        for i in range(len(subsets)):  # one model at a time: all K as one task-batched model is no faster on a CPU
            with ctx.read(f"{target}_{i}") as art:
                state = to_torch_tree(art.tree("weights"), ctx.device)
            ensemble = EnsembleRegressor.from_policy_state(cfg, state, ctx.device)
            row = [relabel_with_ensemble(ensemble, (s["observations"], s["actions"]), threshold, statistic)
                   for s in subsets]  # task axis of 1: [0] below
            values.append([v[0, :, 0] if scalar else v[0] for v, _, _ in row])
            stds.append([row_std(sd[0], statistic) for _, sd, _ in row])
            masks.append([mask[0] for _, _, mask in row])
        return {"rewards": np.array(values, np.float32), "reward_std": np.array(stds, np.float32),
                "reward_mask": np.array(masks, bool)}


def relabel_statistics(out: dict[str, np.ndarray], truth: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per pair [i, j]: fraction of rows kept and, with a ground truth, mean |relabelled − true reward|."""
    mask = out["reward_mask"] & out.get("next_state_mask", True)
    stats = {"keep_fraction": mask.mean(-1)}
    if truth is not None:
        error = np.abs(out["rewards"] - truth)
        kept = mask.sum(-1)
        stats["error_all"] = error.mean(-1)
        stats["error_kept"] = np.where(kept > 0, (error * mask).sum(-1) / np.maximum(kept, 1), np.nan)
    return stats


def _threshold(configured: float | None, family_default: float | None) -> float:
    return configured if configured is not None else family_default

