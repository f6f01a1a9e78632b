"""Dataset kinds (`mtrl datasets`, docs/datasets.md): each kind's rows come from the policy checkpoint its
definition names, the replay stays where it was, downstream stages train on the chosen kind, and new kinds are
added to a finished collect without rerunning SAC."""

import numpy as np
import pytest
from smoke import run_stages, smoke_config

from mtrl.algos.sac import SAC, SACConfig
from mtrl.artifacts import ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.configlib import build
from mtrl.data import episode_returns
from mtrl.errors import ConfigError, StageError
from mtrl.nn import to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.registry import get_stage
from mtrl.pipeline.run_data import load_dataset, read_distribution
from mtrl.stages.datasets import medium_step, mixed_steps, shares

ALL = "data.kinds=[medium-replay,random,medium,expert,mixed]"


@pytest.fixture(scope="module")
def kinds_run(tmp_path_factory):
    """A smoke collect (3 tasks, checkpoints at steps 0, 500, 1000) and every kind, rolled out deterministically
    so that each row's action identifies the policy that took it."""
    config = smoke_config(ALL, "data.deterministic=true", "data.transitions=300")
    run_dir = tmp_path_factory.mktemp("kinds")
    run_stages(config, run_dir, ["tasks", "collect", "datasets"])
    return config, run_dir


def read(run_dir, task, kind):
    spec = read_distribution(layout.tasks(run_dir)).spec
    with open_artifact(layout.dataset(run_dir, task, kind), "dataset") as art:
        info = art.meta("kind_info") if "kind_info" in art.attrs else {}
        return load_dataset(art, spec, infos=True), info, dict(art.attrs)


def checkpoint_actions(run_dir, task, step, obs):
    """The deterministic actions of collect's saved policy of `task` at `step`."""
    with open_artifact(layout.sac(run_dir, task), "sac") as art:
        state = art.tree("policy_checkpoints")[step]
        cfg = build(SACConfig, art.meta("config")["collect"]["sac"])
    agent = SAC(cfg, state["obs_dim"], state["act_dim"], state["max_action"], "cpu")
    agent.load_policy_state(to_torch_tree(state, "cpu"))
    return agent.act(obs[None], deterministic=True)[0]


def test_collect_saves_the_actor_at_step_0_and_every_evaluation(kinds_run):
    _, run_dir = kinds_run
    with open_artifact(layout.sac(run_dir, 1), "sac") as art:
        policies, steps = art.tree("policy_checkpoints"), art.tree("curve")["steps"]
        final = art.tree("weights")["actor"]
    assert sorted(policies) == [0, 500, 1000] and list(steps) == [500, 1000]
    for key, value in final.items():  # the last checkpoint is the final actor
        np.testing.assert_array_equal(policies[1000]["actor"][key], value)
    assert not np.array_equal(policies[0]["actor"]["net.layers.0.weight"], final["net.layers.0.weight"])


@pytest.mark.parametrize("task", [0, 2])
def test_each_kind_rolls_out_the_checkpoint_its_definition_names(kinds_run, task):
    _, run_dir = kinds_run
    for kind, step in (("random", 0), ("expert", 1000)):
        data, info, attrs = read(run_dir, task, kind)
        assert info["checkpoint_steps"] == [step] and attrs["dataset_kind"] == kind and len(data["rewards"]) == 300
        np.testing.assert_allclose(data["actions"], checkpoint_actions(run_dir, task, step, data["observations"]),
                                   atol=1e-6)
    data, info, _ = read(run_dir, task, "medium")
    with open_artifact(layout.sac(run_dir, task), "sac") as art:
        curve = art.tree("curve")
    expected = medium_step(curve["steps"], curve["return_mean"], info["random_return"], 1 / 3)
    assert info["checkpoint_steps"] == [info["medium_step"]] == [expected]
    np.testing.assert_allclose(data["actions"], checkpoint_actions(run_dir, task, expected, data["observations"]),
                               atol=1e-6)
    # mixed: equal shares of every checkpoint, in step order
    data, info, _ = read(run_dir, task, "mixed")
    assert info["checkpoint_steps"] == [0, 500, 1000] and info["rows_per_checkpoint"] == [100, 100, 100]
    for i, step in enumerate([0, 500, 1000]):
        rows = slice(100 * i, 100 * (i + 1))
        np.testing.assert_allclose(data["actions"][rows],
                                   checkpoint_actions(run_dir, task, step, data["observations"][rows]), atol=1e-6)
        assert data["timeouts"][rows][-1]  # every share ends an episode
    # the actions of one checkpoint are not those of another (the test above can fail)
    other = checkpoint_actions(run_dir, task, 0, data["observations"][200:300])
    assert np.abs(other - data["actions"][200:300]).max() > 1e-2


def test_medium_replay_is_the_replay_up_to_the_medium_checkpoint(kinds_run):
    _, run_dir = kinds_run
    replay, _, _ = read(run_dir, 1, "replay")
    data, info, _ = read(run_dir, 1, "medium-replay")
    _, medium, _ = read(run_dir, 1, "medium")
    assert info["medium_step"] == medium["medium_step"] and len(data["rewards"]) == info["medium_step"]
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(data[key], replay[key][: info["medium_step"]])
    assert data["timeouts"][-1]


def test_the_replay_keeps_its_path_and_collect_its_fingerprint():
    """Runs made before kinds existed stay up to date: collect does not read the data section, and the replay
    lives at datasets/task_NN.h5."""
    base, medium = smoke_config(), smoke_config(ALL, "data.kind=medium", "data.transitions=7")
    collect = get_stage("collect")
    unit = collect.units(base, layout.Path("r"))[0]
    assert collect.unit_config(base, unit) == collect.unit_config(medium, unit)
    assert "data" not in collect.unit_config(base, unit)
    assert layout.dataset(layout.Path("r"), 3) == layout.Path("r/datasets/task_03.h5")
    assert get_stage("datasets").units(base, layout.Path("r")) == []  # the default makes nothing more


def test_training_stages_read_the_chosen_kind_and_fingerprints_keep_kinds_apart(kinds_run):
    config, run_dir = kinds_run
    from mtrl.pipeline.runner import plan_unit

    plans = {}
    for kind in ("replay", "medium", "expert"):
        cfg = smoke_config(ALL, "data.deterministic=true", "data.transitions=300", f"data.kind={kind}")
        for stage in ("train-bcq", "fit-rewards", "relabel", "distill", "train-baseline"):
            unit = get_stage(stage).units(cfg, run_dir)[0]
            paths = [inp.path for name, inp in unit.inputs.items() if name.startswith("dataset")]
            assert paths and all(p.parent == layout.dataset(run_dir, 0, kind).parent for p in paths), (stage, kind)
        plans[kind] = plan_unit(get_stage("train-bcq"), cfg, get_stage("train-bcq").units(cfg, run_dir)[0])
    assert len({plan.fingerprint for plan in plans.values()}) == 3
    # the kinds' own fingerprints differ by kind and by the keys each reads, not by the others
    datasets = get_stage("datasets")
    units = {u.key: u for u in datasets.units(config, run_dir)}
    changed = smoke_config(ALL, "data.deterministic=true", "data.transitions=300", "data.mixed_checkpoints=2")
    for key, same in (("medium_task_00", True), ("mixed_task_00", False), ("random_task_00", True)):
        before = plan_unit(datasets, config, units[key])
        assert before.up_to_date
        assert plan_unit(datasets, changed, units[key]).fingerprint == before.fingerprint if same else \
            plan_unit(datasets, changed, units[key]).fingerprint != before.fingerprint


def test_new_kinds_are_added_without_rerunning_collect(kinds_run, tmp_path):
    config, run_dir = kinds_run
    collected = (layout.sac(run_dir, 0).stat().st_mtime_ns, layout.dataset(run_dir, 0).stat().st_mtime_ns)
    more = smoke_config(ALL, "data.deterministic=true", "data.transitions=300", "data.kind=mixed",
                        "data.mixed_checkpoints=2")
    done = run_stages(more, run_dir, ["tasks", "collect", "datasets"])
    assert done["collect"] == [] and done["tasks"] == []  # up to date: SAC did not run again
    assert {r.key for r in done["datasets"]} == {"mixed_task_00", "mixed_task_01", "mixed_task_02"}
    assert (layout.sac(run_dir, 0).stat().st_mtime_ns, layout.dataset(run_dir, 0).stat().st_mtime_ns) == collected
    _, info, _ = read(run_dir, 0, "mixed")
    assert info["checkpoint_steps"] == [0, 1000]
    run_stages(config, run_dir, ["datasets"])  # back to the fixture's datasets for the other tests


def test_stochastic_rollouts_sample_the_policy_reproducibly(kinds_run, tmp_path):
    _, run_dir = kinds_run
    config = smoke_config("data.kinds=[expert]", "data.transitions=100")
    for name in ("config.yaml", "tasks.h5", "sac"):
        (tmp_path / name).symlink_to(run_dir / name)
    run_stages(config, tmp_path, ["datasets"])
    first, _, _ = read(tmp_path, 0, "expert")
    run_stages(config, tmp_path, ["datasets"], force=True)
    again, info, _ = read(tmp_path, 0, "expert")
    assert info["policy"] == "stochastic"
    np.testing.assert_array_equal(first["actions"], again["actions"])
    mean = checkpoint_actions(run_dir, 0, 1000, first["observations"])
    assert np.abs(mean - first["actions"]).mean() > 0.05


def test_a_sac_artifact_without_checkpoints_says_to_recollect(kinds_run, tmp_path):
    _, run_dir = kinds_run
    (tmp_path / "tasks.h5").symlink_to(run_dir / "tasks.h5")
    (tmp_path / "sac").mkdir()
    with open_artifact(layout.sac(run_dir, 0), "sac") as art:
        weights, curve, cfg = art.tree("weights"), art.tree("curve"), art.meta("config")
    with ArtifactWriter(layout.sac(tmp_path, 0), ArtifactMeta("sac", "collect", cfg)) as w:
        w.tree("weights", weights)
        w.tree("curve", curve)
    config = smoke_config("data.kinds=[random]", "env.n_train=1")
    with pytest.raises(StageError, match="no policy checkpoints.*mtrl collect --force --tasks 0"):
        run_stages(config, tmp_path, ["datasets"])


def test_unknown_kinds_are_rejected_by_name():
    with pytest.raises(ConfigError, match="'data.kinds': 'medium-expert' is not a dataset kind"):
        smoke_config("data.kinds=[medium-expert]")
    with pytest.raises(ConfigError, match="'data.kind'"):
        smoke_config("data.kind=best")


def test_level_and_checkpoint_choices():
    steps, returns = np.array([100, 200, 300, 400]), np.array([-40.0, -30.0, -25.0, -10.0])
    assert medium_step(steps, returns, -50.0, 1 / 3) == 200  # threshold -50 + 40/3 = -36.7
    assert medium_step(steps, returns, -50.0, 0.0) == 100 and medium_step(steps, returns, -50.0, 1.0) == 400
    assert medium_step(steps, returns, 0.0, 1 / 3) == 400  # SAC ended below its start: as good as the final
    assert mixed_steps([0, 1, 2, 3, 4, 5, 6, 7, 8], 3) == [0, 4, 8] and mixed_steps([0, 5], None) == [0, 5]
    assert shares(10, 3) == [4, 3, 3]


def test_episode_returns_leave_out_episodes_a_budget_cut():
    rewards = np.ones(7, np.float32)
    terminals = np.array([0, 0, 1, 0, 0, 0, 0], bool)  # a terminated episode of 3, a full one of 3, a cut one
    timeouts = np.array([0, 0, 0, 0, 0, 1, 1], bool)
    np.testing.assert_array_equal(episode_returns(rewards, terminals, timeouts, horizon=3), [3.0, 3.0])


def test_medium_returns_lie_between_random_and_expert_on_the_toy(tmp_path):
    """A SAC that learns (PointGoalArc, 3000 steps: evaluation return -18 -> -7): the behaviour returns of the
    rolled-out kinds are ordered random < medium < expert."""
    config = smoke_config("env.n_train=1", "collect.steps=3000", "collect.eval_every=500", "collect.eval_episodes=5",
                          "data.kinds=[random,medium,expert]", "data.transitions=400")
    run_stages(config, tmp_path, ["tasks", "collect", "datasets"])
    means, infos = {}, {}
    for kind in ("random", "medium", "expert"):
        data, infos[kind], _ = read(tmp_path, 0, kind)
        means[kind] = episode_returns(data["rewards"], data["terminals"], data["timeouts"], 20).mean()
    assert 0 < infos["medium"]["medium_step"] < 3000  # an intermediate checkpoint, neither end
    assert means["random"] < means["medium"] < means["expert"], means


def test_report_tables_the_behaviour_returns_per_kind_and_task(kinds_run):
    from mtrl.report import collect as report_collect
    from mtrl.report.aggregate import summarise
    from mtrl.report.markdown import render

    _, run_dir = kinds_run
    run = report_collect.collect_run(run_dir)
    data, _, _ = read(run_dir, 2, "random")
    expected = episode_returns(data["rewards"], data["terminals"], data["timeouts"], 20)
    assert run.dataset_returns["random"][2]["mean"] == pytest.approx(expected.mean())
    assert run.dataset_returns["random"][2]["episodes"] == len(expected) == 15  # 300 rows of 20-step episodes
    text = render([run], summarise([run]), {})
    section = text.split("## Behaviour data per dataset kind")[1].split("\n## ")[0]
    assert "| task | replay | medium-replay | random | medium | expert | mixed |" in section


def test_export_writes_any_kind_with_its_kind_family_task_and_returns(kinds_run, tmp_path):
    import json

    from click.testing import CliRunner

    from mtrl.cli import main

    _, run_dir = kinds_run
    out = tmp_path / "{kind}-{task}.npz"
    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--kind", "medium", "--task", "1",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = np.load(tmp_path / "medium-task_01.npz")
    data, info, _ = read(run_dir, 1, "medium")
    np.testing.assert_array_equal(exported["actions"], data["actions"])
    assert str(exported["metadata/kind"]) == "medium" and str(exported["metadata/family"]) == "PointGoalArc"
    assert json.loads(str(exported["metadata/kind_info"]))["medium_step"] == info["medium_step"]
    with open_artifact(layout.tasks(run_dir), "tasks") as art:
        assert json.loads(str(exported["metadata/task"])) == art.array("train_tasks")[1].tolist()
    returns = episode_returns(data["rewards"], data["terminals"], data["timeouts"], 20)
    assert json.loads(str(exported["metadata/returns"]))["mean"] == pytest.approx(returns.mean())
    missing = CliRunner().invoke(main, ["export-dataset", str(tmp_path), "--kind", "expert"])
    assert missing.exit_code != 0
