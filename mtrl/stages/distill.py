"""Stage `distill`: one multi-task policy per variant from the per-task BCQs (MBML Alg. 1 and 4).

This stage only assembles batches: per task a training batch, context sets, and (for the relabel variants)
the same context rows relabelled by every other task's models, looked up in relabel.h5. The algorithm
(`mtrl.algos.mbml`) does the rest. Optional periodic evaluation (Alg. 5) gives return-vs-epoch curves.
"""

from __future__ import annotations

from mtrl.methods import GROUND_TRUTH_SUFFIX, get_method
from mtrl.nn import to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext
from mtrl.pipeline.run_data import load_dataset, n_train_tasks, picked_overrides, read_distribution
from mtrl.rl.batches import RelabelledContexts
from mtrl.rl.training import train_policy
from mtrl.stages.train_bcq import bcq_input


def policy_name(variant: str, relabel: str) -> str:
    """Artifact name of a distilled policy: the variant, suffixed for the ground-truth relabelling ablation."""
    return variant if relabel == "learned" or not get_method(variant).needs_relabel else variant + GROUND_TRUTH_SUFFIX


class Distill(Stage):
    name = "distill"
    sections = ("distill", "evaluate")
    # the variants to train are units; evaluation during training runs the protocol once (no repeats)
    # evaluation during training runs Alg. 5 once: not the repeats nor the offline protocol's keys
    not_covered = ("distill.variants", "evaluate.repeats", "evaluate.context", "evaluate.offline_context_size")

    def __init__(self, variants: tuple[str, ...] | None = None):
        self.variants = variants  # `mtrl distill --variant X` selects; None: the config's list

    def units(self, config, run_dir):
        """One unit per variant, with the config values its sweep picked (`mtrl sweep`), if it has one."""
        names = [policy_name(variant, config.distill.relabel) for variant in self.variants or config.distill.variants]
        return [self.unit_for(config, run_dir, name, picked_overrides(run_dir, name)) for name in names]

    @staticmethod
    def unit_for(config, run_dir, name: str, overrides: dict | None = None) -> Unit:
        """The unit that trains policy `name` (a variant, or its ground-truth version) with `overrides`."""
        k, relabel = n_train_tasks(config), config.distill.relabel
        variant = name.removesuffix(GROUND_TRUTH_SUFFIX)
        method = get_method(variant)
        inputs = {"tasks": layout.tasks_input(run_dir)}
        inputs |= {f"dataset_{i}": layout.dataset_input(run_dir, i, config.data.kind) for i in range(k)}
        inputs |= {f"bcq_{i}": bcq_input(run_dir, i) for i in range(k)}
        if method.needs_relabel:
            inputs["relabel"] = Input(layout.relabel(run_dir, relabel), "relabel", "relabel")
        params = {"variant": variant, "relabel": relabel if method.needs_relabel else None}
        return Unit(name, {"policy": Output(layout.policy(run_dir, name), "policy")}, inputs,
                    params=params | ({"overrides": overrides} if overrides else {}))

    def unused_keys(self, config, unit):
        """An ablation does not depend on the hyper-parameters of the parts it lacks (no-triplet: the margin;
        the variants without relabelling: the relabelling source and context sizes)."""
        method = get_method(unit.params["variant"])
        relabel = () if method.needs_relabel else ("distill.relabel",)
        return relabel + tuple(f"distill.algo.{name}" for name in method.unused_fields)

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.bcq import BCQPolicy

        method = get_method(ctx.unit.params["variant"])
        cfg, algo_cfg = ctx.config.distill, method.config(ctx.config)
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, k = dist.spec, len(dist.train_tasks)
        datasets, teacher_states = [], []
        for i in range(k):
            with ctx.read(f"dataset_{i}") as art:
                datasets.append(load_dataset(art, spec))
            with ctx.read(f"bcq_{i}") as art:
                teacher_states.append(art.tree("weights")[ctx.config.bcq.snapshot])
        # the K frozen teachers as one task-batched BCQ: one batched pass per network and update
        teachers = BCQPolicy.from_policy_state(
            ctx.config.bcq.algo, to_torch_tree(BCQPolicy.stack_policy_states(teacher_states)), ctx.device)
        relabelled = None
        if method.needs_relabel:
            with ctx.read("relabel") as art:
                relabelled = RelabelledContexts.load(art, datasets)
        algo = method.algo_class()(algo_cfg, spec.obs_dim, spec.act_dim, spec.max_action, teachers, ctx.device,
                                   variant=method.variant)
        train_policy(ctx, algo, method.make_sampler(datasets, algo_cfg, relabelled), cfg, dist, method.name, algo_cfg,
                     datasets)
