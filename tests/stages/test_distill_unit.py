"""What `distill` assembles for each variant, unit-sized: its units and artifact names, which inputs each
variant reads (relabel.h5 only for the relabelling variants, the ground-truth one for that ablation), which config
keys its fingerprint leaves out, and what it hands the algorithm and the training loop (the K frozen BCQ teachers
of the configured snapshot, the datasets in task order, the relabelled contexts). Training itself is replaced by a
recorder: the algorithms have tests of their own.
"""

import dataclasses
import logging

import numpy as np
import pytest
import torch
from test_relabel_unit import LENGTHS, build_run, code, make_config

from mtrl.algos.bcq import BCQPolicy
from mtrl.artifacts import ArtifactMeta, ArtifactWriter
from mtrl.pipeline import layout
from mtrl.pipeline.base import RunOptions, UnitContext
from mtrl.stages import distill
from mtrl.stages.distill import Distill, policy_name

K = 3



def test_policy_name_marks_ground_truth_relabelling_only_for_variants_that_relabel():
    assert policy_name("mbml", "learned") == "mbml"
    assert policy_name("mbml", "ground-truth") == "mbml-gt"
    assert policy_name("no-triplet", "ground-truth") == "no-triplet-gt"
    assert policy_name("no-relabel", "ground-truth") == "no-relabel"  # the same policy whatever the source
    assert policy_name("neither", "ground-truth") == "neither"


def test_one_unit_per_variant_reading_relabel_h5_only_where_it_relabels(tmp_path):
    units = Distill().units(make_config("data.kind=medium", "distill.variants=[mbml,no-triplet,no-relabel,neither]"),
                              tmp_path)
    assert [u.key for u in units] == ["mbml", "no-triplet", "no-relabel", "neither"]  # the config's variants
    for unit in units:
        relabels = unit.key in ("mbml", "no-triplet")
        assert unit.params == {"variant": unit.key, "relabel": "learned" if relabels else None}
        output = unit.outputs["policy"]
        assert (output.path, output.kind) == (tmp_path / "policies" / f"{unit.key}.h5", "policy")
        expected = ["tasks", *(f"dataset_{i}" for i in range(K)), *(f"bcq_{i}" for i in range(K))]
        assert list(unit.inputs) == expected + (["relabel"] if relabels else [])
        assert unit.inputs["tasks"] == layout.tasks_input(tmp_path)
        assert unit.inputs["dataset_2"].path == tmp_path / "datasets" / "medium" / "task_02.h5"
        bcq = unit.inputs["bcq_1"]
        assert (bcq.path, bcq.kind, bcq.stage) == (tmp_path / "bcq" / "task_01.h5", "bcq", "train-bcq")
        if relabels:
            relabel = unit.inputs["relabel"]
            assert (relabel.path, relabel.kind, relabel.stage) == (tmp_path / "relabel.h5", "relabel", "relabel")


def test_ground_truth_ablation_reads_its_own_relabel_file_under_its_own_name(tmp_path):
    units = Distill().units(make_config("distill.relabel=ground-truth", "distill.variants=[mbml,neither]"),
                            tmp_path)
    mbml, neither = units
    assert mbml.key == "mbml-gt" and mbml.params == {"variant": "mbml", "relabel": "ground-truth"}
    assert mbml.outputs["policy"].path == tmp_path / "policies" / "mbml-gt.h5"
    assert mbml.inputs["relabel"].path == tmp_path / "relabel_ground_truth.h5"
    assert neither.key == "neither" and neither.params == {"variant": "neither", "relabel": None}
    assert "relabel" not in neither.inputs


def test_selected_variants_replace_the_configs_list(tmp_path):
    config = make_config()
    assert [u.key for u in Distill(("no-relabel",)).units(config, tmp_path)] == ["no-relabel"]
    assert [u.key for u in Distill(None).units(config, tmp_path)] == list(config.distill.variants)


@pytest.mark.parametrize(("variant", "unused"), [
    ("mbml", ("distill.algo.no_relabel_context_size", "distill.algo.hard_negative_sets",
              "distill.algo.neither_context_size")),
    ("no-triplet", ("distill.algo.triplet_margin", "distill.algo.triplet_sets", "distill.algo.no_relabel_context_size",
                    "distill.algo.hard_negative_sets", "distill.algo.neither_context_size")),
    ("no-relabel", ("distill.relabel", "distill.algo.triplet_sets", "distill.algo.context_size",
                    "distill.algo.relabelled_context_size", "distill.algo.neither_context_size")),
    ("neither", ("distill.relabel", "distill.algo.triplet_margin", "distill.algo.triplet_sets",
                 "distill.algo.context_size", "distill.algo.relabelled_context_size",
                 "distill.algo.no_relabel_context_size", "distill.algo.hard_negative_sets")),
])
def test_a_variant_does_not_depend_on_the_keys_it_never_reads(tmp_path, variant, unused):
    config = make_config()
    stage = Distill((variant,))
    (unit,) = stage.units(config, tmp_path)
    assert stage.unused_keys(config, unit) == unused
    covered = stage.unit_config(config, unit)
    for key in unused:
        section, *rest = key.split(".")
        tree = covered[section]
        for part in rest[:-1]:
            tree = tree[part]
        assert rest[-1] not in tree, key
    assert "variants" not in covered["distill"] and "repeats" not in covered["evaluate"]
    assert ("relabel" in covered["distill"]) == (variant in ("mbml", "no-triplet"))


class Recorder:
    """Stands in for the algorithm class, the batch sampler, the teachers' constructor and the training loop."""

    def __init__(self):
        self.calls = {}

    def algo(self, *args, **kwargs):
        self.calls["algo"] = (args, kwargs)
        return "the algorithm"

    def sampler(self, datasets, cfg, variant, relabelled):
        self.calls["sampler"] = (datasets, cfg, variant, relabelled)
        return "the sampler"

    def teachers(self, cfg, state, device):
        self.calls["teachers"] = (cfg, state, device)
        return "the teachers"

    def train(self, *args):
        self.calls["train"] = args


def write_teachers_and_relabel(run_dir):
    """bcq/task_NN.h5 whose snapshots say which task and snapshot they are; relabel.h5 and its ground-truth twin
    with rewards that say which file they come from."""
    for i in range(K):
        with ArtifactWriter(layout.bcq(run_dir, i), ArtifactMeta("bcq", "train-bcq", {})) as w:
            w.tree("weights", {snapshot: {"w": np.full((1, 2), 10.0 * i + s), "tasks": np.array(1)}
                               for s, snapshot in ((1, "best"), (2, "final"))})
            w.array("curve", np.zeros(1))
    m = 4
    for source, sign in (("learned", 1.0), ("ground-truth", -1.0)):
        with ArtifactWriter(layout.relabel(run_dir, source), ArtifactMeta("relabel", "relabel", {})) as w:
            w.array("indices", np.tile(np.arange(m), (K, 1)))
            w.array("rewards", np.full((K, K, m), sign, np.float32))
            w.array("reward_mask", np.ones((K, K, m), bool))


def run_distill(monkeypatch, tmp_path, config, variant):
    build_run(tmp_path)
    write_teachers_and_relabel(tmp_path)
    rec = Recorder()
    real_get_method = distill.get_method
    monkeypatch.setattr(distill, "get_method", lambda name: dataclasses.replace(
        real_get_method(name), algo=rec.algo, batches=rec.sampler))
    monkeypatch.setattr(BCQPolicy, "from_policy_state", staticmethod(rec.teachers))
    monkeypatch.setattr(distill, "train_policy", rec.train)
    stage = Distill((variant,))
    (unit,) = stage.units(config, tmp_path)
    ctx = UnitContext(stage, config, unit, RunOptions(run_dir=tmp_path, device="cpu"), {}, 5,
                      logging.getLogger("mtrl.test.distill"))
    stage.run_unit(ctx)
    return rec.calls, ctx


@pytest.mark.parametrize(("variant", "relabel", "snapshot"), [("mbml", "learned", "best"),
                                                                ("no-triplet", "ground-truth", "final"),
                                                                ("neither", "learned", "best")])
def test_run_unit_hands_the_algorithm_teachers_datasets_and_relabelled_contexts(monkeypatch, tmp_path, variant,
                                                                                relabel, snapshot):
    config = make_config(f"distill.relabel={relabel}", f"bcq.snapshot={snapshot}")
    calls, ctx = run_distill(monkeypatch, tmp_path, config, variant)

    cfg, state, device = calls["teachers"]  # the K teachers stacked in task order, of the configured snapshot
    assert cfg is config.bcq.algo and device == torch.device("cpu")
    s = 1 if snapshot == "best" else 2
    assert isinstance(state["w"], torch.Tensor)
    np.testing.assert_array_equal(state["w"].numpy(), [[s, s], [10 + s, 10 + s], [20 + s, 20 + s]])
    assert int(state["tasks"]) == K

    args, kwargs = calls["algo"]
    assert args[0] is config.distill.algo
    assert args[1:] == (2, 2, 1.0, "the teachers", torch.device("cpu")) and kwargs == {"variant": variant}

    datasets, algo_cfg, sampler_variant, relabelled = calls["sampler"]
    assert algo_cfg is config.distill.algo and sampler_variant == variant
    assert len(datasets) == K
    for j, data in enumerate(datasets):
        np.testing.assert_array_equal(data["observations"][:, 0], code(j, np.arange(LENGTHS[j])))
        assert "infos/dense_reward" not in data
    if variant == "neither":
        assert relabelled is None
    else:  # relabel.h5, or its ground-truth twin for that ablation
        np.testing.assert_array_equal(relabelled.rewards, 1.0 if relabel == "learned" else -1.0)
        np.testing.assert_array_equal(relabelled.rows[1, :, 0], code(1, np.arange(4)))

    run_ctx, algo, sample, distill_cfg, dist, name, train_algo_cfg, health_datasets = calls["train"]
    assert run_ctx is ctx and algo == "the algorithm" and sample == "the sampler"
    assert distill_cfg is config.distill and name == variant and train_algo_cfg is config.distill.algo
    assert health_datasets is datasets  # the training tasks' own data, for the health measured during training
    assert dist.name == "PointGoalArc" and len(dist.train_tasks) == K
