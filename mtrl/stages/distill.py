"""Stage `distill`: one multi-task policy per variant from the per-task BCQs (MBML Alg. 1 and 4).

This stage only assembles batches: per task a training batch, context sets, and (for the relabel variants)
the same context rows relabelled by every other task's models, looked up in relabel.h5. The algorithm
(`mtrl.algos.mbml`) does the rest. Optional periodic evaluation (Alg. 5) gives return-vs-epoch curves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

from mtrl.algos.context import context_rows
from mtrl.configlib import to_dict
from mtrl.data import to_torch
from mtrl.errors import ConfigError
from mtrl.nn import to_numpy_tree, to_torch_tree
from mtrl.stages import layout
from mtrl.stages.base import Input, Output, Stage, Unit, UnitContext
from mtrl.stages.common import load_dataset, n_train_tasks, read_distribution
from mtrl.stages.evaluate import evaluation_seed, run_evaluation, training_evaluation_config
from mtrl.stages.policies import EmbeddingPolicy
from mtrl.stages.train_bcq import bcq_input

RELABEL_VARIANTS = ("mbml", "no-triplet")


def policy_name(variant: str, relabel: str) -> str:
    """Artifact name of a distilled policy: the variant, suffixed for the ground-truth relabelling ablation."""
    return variant if relabel == "learned" or variant not in RELABEL_VARIANTS else f"{variant}-gt"


@dataclass
class TrainingState:
    epoch: int = 0
    losses: dict[str, list[float]] = field(default_factory=dict)  # metric -> mean per epoch
    eval_curve: list[list[float]] = field(default_factory=list)  # [epoch, train score, test score]


class Distill(Stage):
    name = "distill"
    sections = ("distill",)

    def __init__(self, variants: tuple[str, ...] | None = None):
        self.variants = variants  # `mtrl distill --variant X` selects; None: the config's list

    def stage_config(self, config):
        section = to_dict(config.distill)
        del section["variants"], section["algo"]["variant"]  # the variant is a unit parameter
        return {"seed": config.seed, "distill": section, "evaluate": training_evaluation_config(config)}

    def units(self, config, run_dir):
        k, relabel = n_train_tasks(config), config.distill.relabel
        units = []
        for variant in self.variants or config.distill.variants:
            inputs = {"tasks": layout.tasks_input(run_dir)}
            inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i) for i in range(k)}
            inputs |= {f"bcq_{i}": bcq_input(run_dir, i) for i in range(k)}
            if variant in RELABEL_VARIANTS:
                inputs["relabel"] = Input(layout.relabel(run_dir, relabel), "relabel", "relabel")
            name = policy_name(variant, relabel)
            units.append(Unit(name, {"policy": Output(layout.policy(run_dir, name), "policy")}, inputs,
                              params={"variant": variant, "relabel": relabel if variant in RELABEL_VARIANTS else None}))
        return units

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.bcq import BCQPolicy
        from mtrl.algos.mbml import MBML

        cfg, variant = ctx.config.distill, ctx.unit.params["variant"]
        algo_cfg = dataclasses.replace(cfg.algo, variant=variant)
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, k = dist.spec, len(dist.train_tasks)
        datasets = []
        teachers = []
        for i in range(k):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art))
            with ctx.read(f"bcq_{i}") as art:
                bcq_cfg = ctx.config.bcq.algo
                teachers.append(BCQPolicy.from_policy_state(
                    bcq_cfg, to_torch_tree(art.tree("weights")[ctx.config.bcq.snapshot]), ctx.device))
        relabelled = None
        if variant in RELABEL_VARIANTS:
            with ctx.read("relabel") as art:
                relabelled = RelabelledContexts.load(art, datasets)
        sampler = BatchSampler(datasets, algo_cfg, relabelled)
        algo = MBML(algo_cfg, spec.obs_dim, spec.act_dim, spec.max_action, teachers, ctx.device)
        train_policy(ctx, algo, sampler.sample, cfg, dist, "mbml", algo_cfg)


def train_policy(ctx: UnitContext, algo, sample, cfg, dist, algo_name: str, algo_cfg) -> None:
    """The epoch loop of the multi-task stages (distill, train-baseline), ending in the unit's "policy" output.

    `algo` has the multi-task face (update, state_dict, policy_state_dict, sample_z, act); `sample(rng)` draws one
    batch of NumPy arrays; `cfg` gives epochs, steps_per_epoch, eval_every and checkpoint_every. Resumes from the
    unit's checkpoint. The artifact holds the weights, per-epoch mean losses, the Alg. 5 scores of the periodic
    evaluations, and attributes `algo` (which class `mtrl evaluate` builds) and `algo_config`.
    """
    rng = np.random.default_rng(ctx.seed)
    run = TrainingState()
    saved = ctx.checkpointer.load()
    if saved is not None:
        algo.load_state_dict(to_torch_tree(saved["algo"], ctx.device))
        rng.bit_generator.state = saved["rng"]
        run = TrainingState(**saved["run"])
        ctx.log.info(f"{ctx.stage.name} {ctx.unit.key}: resuming at epoch {run.epoch}")

    bar = ctx.progress(cfg.epochs * cfg.steps_per_epoch, unit="update", initial=run.epoch * cfg.steps_per_epoch)
    while run.epoch < cfg.epochs:
        sums: dict[str, float] = {}
        for _ in range(cfg.steps_per_epoch):
            metrics = algo.update(to_torch(sample(rng), ctx.device))
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
        run.epoch += 1
        for key, total in sums.items():
            run.losses.setdefault(key, []).append(total / cfg.steps_per_epoch)
        bar.set_postfix(loss=f"{run.losses['total'][-1]:.3g}" if "total" in run.losses else "")
        if cfg.eval_every and (run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs):
            policy = EmbeddingPolicy(algo, seed=ctx.seed + run.epoch)
            result = run_evaluation(dist, policy, ctx.config.evaluate, evaluation_seed(ctx.config))
            run.eval_curve.append([run.epoch, result["train_score"], result["test_score"]])
            ctx.log.info(f"{ctx.stage.name} {ctx.unit.key} epoch {run.epoch}: train {result['train_score']:.2f}, "
                         f"test {result['test_score']:.2f}")
        if run.epoch % cfg.checkpoint_every == 0 and run.epoch < cfg.epochs:
            ctx.checkpointer.save({"algo": to_numpy_tree(algo.state_dict()), "rng": rng.bit_generator.state,
                                   "run": asdict(run)})
    bar.close()
    curve = np.array(run.eval_curve, dtype=np.float64).reshape(-1, 3)
    with ctx.writer("policy") as w:
        w.tree("weights", to_numpy_tree(algo.policy_state_dict()))
        w.tree("losses", {key: np.array(values) for key, values in run.losses.items()})
        w.tree("eval_curve", {"epochs": curve[:, 0], "train_score": curve[:, 1], "test_score": curve[:, 2]})
        w.attrs["algo"] = algo_name
        w.json("algo_config", to_dict(algo_cfg))


class RelabelledContexts:
    """Per task j, the rows relabelled in relabel.h5 as context rows, and their relabelled versions per task i."""

    def __init__(self, rows: np.ndarray, rewards: np.ndarray, mask: np.ndarray, next_obs: np.ndarray | None,
                 obs_dim: int):
        self.rows = rows  # [K_j, M, D] original rows [s, a, s', r]
        self.rewards = rewards  # [K_i, K_j, M] relabelled rewards
        self.mask = mask  # [K_i, K_j, M] confident
        self.next_obs = next_obs  # [K_i, K_j, M, obs] relabelled next states (dynamics families) or None
        self.obs_dim = obs_dim

    @classmethod
    def load(cls, art, datasets: list[dict[str, np.ndarray]]) -> RelabelledContexts:
        indices = art.array("indices")  # [K, M] dataset rows that were relabelled
        rows = np.stack([context_rows(d["observations"][idx], d["actions"][idx], d["next_observations"][idx],
                                      d["rewards"][idx]) for d, idx in zip(datasets, indices, strict=True)])
        mask = art.array("reward_mask")
        next_obs = None
        if "next_observations" in art:
            next_obs = art.array("next_observations")
            mask = mask & art.array("next_state_mask")
        obs_dim = datasets[0]["observations"].shape[1]
        return cls(rows, art.array("rewards"), mask, next_obs, obs_dim)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Context c_j [K, size, D] and, for every i, c_{j→i} [K_i, K_j, size, D] with its confidence mask."""
        k, m, _ = self.rows.shape
        t = rng.integers(0, m, (k, size))
        context = np.take_along_axis(self.rows, t[:, :, None], 1)
        relabelled = np.broadcast_to(context, (k, *context.shape)).copy()
        tt = np.broadcast_to(t, (k, k, size))
        relabelled[..., -1] = np.take_along_axis(self.rewards, tt, 2)
        if self.next_obs is not None:
            o = self.obs_dim
            a = relabelled.shape[-1] - 2 * o - 1
            relabelled[..., o + a: 2 * o + a] = np.take_along_axis(self.next_obs, tt[..., None], 2)
        return context, relabelled, np.take_along_axis(self.mask, tt, 2)


class BatchSampler:
    """Draws one distillation batch (the keys of `MBML.batch_shapes`) with a NumPy generator."""

    def __init__(self, datasets: list[dict[str, np.ndarray]], cfg, relabelled: RelabelledContexts | None):
        self.datasets, self.cfg, self.relabelled = datasets, cfg, relabelled
        if cfg.variant in RELABEL_VARIANTS and relabelled is None:
            raise ConfigError(f"variant {cfg.variant} needs relabel.h5; run `mtrl relabel` first")

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.cfg
        idx = [rng.integers(0, len(d["rewards"]), cfg.batch_size) for d in self.datasets]
        batch = {
            "observations": np.stack([d["observations"][i] for d, i in zip(self.datasets, idx, strict=True)]),
            "actions": np.stack([d["actions"][i] for d, i in zip(self.datasets, idx, strict=True)]),
        }
        if cfg.variant in RELABEL_VARIANTS:
            context, relabelled, mask = self.relabelled.sample(rng, cfg.context_size)
            batch |= {"context": context, "relabelled_context": relabelled, "relabel_mask": mask}
        elif cfg.variant == "no-relabel":
            batch["context"] = context_sets(self.datasets, rng, (cfg.hard_negative_sets, cfg.no_relabel_context_size))
        else:
            batch["context"] = context_sets(self.datasets, rng, (cfg.neither_context_size,))
        return batch


def context_sets(datasets: list[dict[str, np.ndarray]], rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Context rows [s, a, s', r] drawn uniformly (with replacement) from each task's own data: [K, *shape, D]."""
    rows = []
    for d in datasets:
        idx = rng.integers(0, len(d["rewards"]), shape)
        rows.append(context_rows(d["observations"][idx], d["actions"][idx], d["next_observations"][idx],
                                 d["rewards"][idx]))
    return np.stack(rows)
