"""Test-task datasets (data.test_tasks) and the offline-context evaluation (evaluate.context: offline, FOCAL Alg. 2)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.errors import ConfigError
from mtrl.pipeline import layout
from mtrl.pipeline.base import RunOptions
from mtrl.pipeline.registry import PIPELINE, get_stage
from mtrl.pipeline.run_data import load_dataset, read_distribution
from mtrl.pipeline.runner import check_stage

TRAINING_STAGES = ("train-bcq", "fit-rewards", "fit-dynamics", "relabel", "distill", "train-baseline")


def _unit_inputs(name: str, config, run_dir: Path) -> list[Path]:
    return [inp.path for unit in get_stage(name).units(config, run_dir) for inp in unit.inputs.values()]


@pytest.mark.parametrize("kind", ["replay", "medium"])
def test_training_stages_never_read_test_task_data(kind):
    run_dir = Path("/run")
    config = smoke_config("data.test_tasks=true", "evaluate.context=offline", f"data.kind={kind}")
    test_files = {out.path for name in ("collect", "datasets") for unit in get_stage(name).units(config, run_dir)
                  if unit.split == "test" for out in unit.outputs.values()}
    assert layout.dataset(run_dir, 0, kind, "test") in test_files and layout.sac(run_dir, 1, "test") in test_files
    for name in TRAINING_STAGES:
        inputs = _unit_inputs(name, config, run_dir)
        leaked = [p for p in inputs if p in test_files or "test" in p.relative_to(run_dir).parts]
        assert not leaked, f"{name} reads test-task data: {leaked}"
    # the offline evaluation is what reads them
    assert layout.dataset(run_dir, 1, kind, "test") in _unit_inputs("evaluate", config, run_dir)


def test_offline_context_needs_test_task_data():
    with pytest.raises(ConfigError, match="data.test_tasks: true"):
        smoke_config("evaluate.context=offline")


class RecordingPolicy:
    """A context policy stub: remembers every context it infers from; its belief is the context's mean reward."""

    def __init__(self):
        self.contexts = []

    def infer(self, context, explore=False):
        self.contexts.append(None if context is None else context.copy())
        return np.zeros(1, np.float32) if context is None else context[:, -1:].mean(0)

    def act(self, obs, beliefs):
        return np.zeros((len(obs), 2), np.float32)


def _fake_dataset(tag: int, rows: int, obs_dim: int, act_dim: int) -> dict:
    """Rows whose reward names the dataset (tag) and the row: tag * 1000 + row."""
    return {"observations": np.full((rows, obs_dim), tag, np.float32), "actions": np.zeros((rows, act_dim), np.float32),
            "next_observations": np.full((rows, obs_dim), tag, np.float32),
            "rewards": (tag * 1000 + np.arange(rows)).astype(np.float32)}


def test_offline_protocol_infers_once_per_task_from_its_own_rows():
    from mtrl.envs import make_distribution
    from mtrl.rl.evaluation import run_evaluation

    config = smoke_config("data.test_tasks=true", "evaluate.context=offline", "evaluate.offline_context_size=8",
                          "evaluate.episodes=3", "evaluate.skip_episodes=2")
    dist = make_distribution("PointGoalArc", 3, 2, 0)
    spec = dist.spec
    datasets = {"train": [_fake_dataset(t, 50, spec.obs_dim, spec.act_dim) for t in range(3)],
                "test": [_fake_dataset(10 + t, 50, spec.obs_dim, spec.act_dim) for t in range(2)]}
    policy = RecordingPolicy()
    result = run_evaluation(dist, policy, config.evaluate, seed=5, repeats=2, datasets=datasets)
    # one inference per task and repeat, never from online rows or the prior
    assert len(policy.contexts) == 2 * (3 + 2) and all(c is not None for c in policy.contexts)
    tags = [0, 1, 2] * 2 + [10, 11] * 2  # train split first (both repeats), then test
    for context, tag in zip(policy.contexts, tags, strict=True):
        assert context.shape == (8, 2 * spec.obs_dim + spec.act_dim + 1)
        assert (context[:, -1] // 1000 == tag).all(), "a context row from another task's data"
        assert len(np.unique(context[:, -1])) == 8  # drawn without replacement
    assert not np.array_equal(policy.contexts[0], policy.contexts[3])  # repeats draw afresh
    # every episode counts (no context-gathering episodes): the score is the mean of all of them
    assert result["test_returns"].shape == (2, 2, 3)
    assert np.allclose(result["test_scores"], result["test_returns"].mean((1, 2)))
    again = RecordingPolicy()
    run_evaluation(dist, again, config.evaluate, seed=5, repeats=2, datasets=datasets)
    assert all(np.array_equal(a, b) for a, b in zip(policy.contexts, again.contexts, strict=True))  # seeded


def _state(config, run_dir: Path, names=PIPELINE) -> dict:
    opts = RunOptions(run_dir=run_dir, threads=1)
    return {(name, p.unit.key): p.up_to_date for name in names for p in check_stage(get_stage(name), config, opts)}


def test_default_config_unchanged_and_offline_evaluation_end_to_end(smoke_run, tmp_path, monkeypatch):
    config, source = smoke_run
    # the default (no test-task data, online context) keeps every path and fingerprint: the run is up to date
    assert all(_state(config, source).values())
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.h5") if "checkpoints" not in p.parts}
    offline = smoke_config("data.test_tasks=true", "evaluate.context=offline")

    from mtrl.rl import policies

    seen: list = []
    infer = policies.EmbeddingPolicy.infer
    monkeypatch.setattr(policies.EmbeddingPolicy, "infer",
                        lambda self, c, **kw: (seen.append(c), infer(self, c, **kw))[1])
    run_stages(offline, run_dir, ["collect", "datasets", "evaluate"])

    # nothing made before was rewritten, and only the new units ran
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "an existing artifact was rewritten"
    for i in range(2):
        with open_artifact(layout.dataset(run_dir, i, split="test"), "dataset") as art:
            assert art.attrs["split"] == "test" and art.meta("params") == {"task": i, "split": "test"}
    state = _state(offline, run_dir)
    assert all(state.values()), [k for k, ok in state.items() if not ok]
    assert all(_state(config, run_dir).values())  # the online config still finds everything up to date

    # evaluate.context offline writes eval/offline/<name>.h5 beside the online eval/<name>.h5
    methods = [u.params["policy"] for u in get_stage("evaluate").units(offline, run_dir) if "context" in u.params]
    assert methods and not {"sac", "bcq"} & set(methods)  # per-task policies stay online
    test_rows = [_rows(run_dir, i, "test") for i in range(2)]
    train_rows = [_rows(run_dir, i, "train") for i in range(3)]
    assert len(seen) == len(methods) * (3 + 2)  # one inference per task, online never asked
    assert sorted(p.stem for p in (run_dir / "eval" / "offline").glob("*.h5")) == sorted(methods)
    for name in methods:
        with open_artifact(layout.evaluation(run_dir, name, "offline"), "eval") as art:
            assert art.attrs["context"] == "offline"
        assert layout.evaluation(run_dir, name).exists()
    for u in range(len(methods)):
        calls = seen[u * 5:(u + 1) * 5]
        for context, rows in zip(calls, train_rows + test_rows, strict=True):
            assert context is not None and len(context) == offline.evaluate.offline_context_size
            assert all(tuple(row) in rows for row in context), "a context row not from that task's offline data"

    from mtrl.report.collect import collect_run

    results = collect_run(run_dir)
    assert set(results.offline_eval_summaries) == set(methods)
    assert all(results.eval_summaries[name] != results.offline_eval_summaries[name] for name in methods)
    assert sorted(results.sac_final) == [0, 1, 2]  # test tasks' SAC runs are not training-task baselines
    assert sorted(results.dataset_returns["replay"]) == [0, 1, 2]  # nor their datasets training tasks' data

    from mtrl.report import write_report

    text = write_report([run_dir], tmp_path / "report").read_text()
    final, offline_table = text.split("### Final policy, offline context")[0], text.split("### Final policy, offline "
                                                                                          "context")[1]
    offline_table = offline_table.split("###")[0]
    assert "test (offline context)" in offline_table and "test (offline context)" not in final
    assert all(name in offline_table for name in methods)

    # `export-dataset --split test`: a test task's own data, with its split and task in the metadata
    from click.testing import CliRunner

    from mtrl.cli import main

    result = CliRunner().invoke(main, ["export-dataset", str(run_dir), "--split", "test", "--task", "1"])
    assert result.exit_code == 0, result.output
    exported = np.load(run_dir / "export" / "test_task_01.npz")
    dist = read_distribution(run_dir / "tasks.h5")
    with open_artifact(layout.dataset(run_dir, 1, split="test"), "dataset") as art:
        np.testing.assert_array_equal(exported["observations"], load_dataset(art, dist.spec)["observations"])
    assert str(exported["metadata/split"]) == "test"
    np.testing.assert_array_equal(json.loads(str(exported["metadata/task"])), dist.test_tasks[1])


def _rows(run_dir: Path, task: int, split: str) -> set:
    from mtrl.algos.context import context_rows

    with open_artifact(layout.dataset(run_dir, task, split=split), "dataset") as art:
        rows = context_rows(art.array("observations"), art.array("actions"), art.array("next_observations"),
                            art.array("rewards"))
    return {tuple(row) for row in rows}


def test_new_keys_stay_out_of_default_fingerprints():
    """The keys this feature adds are in no unit's fingerprint under the default config (old runs stay valid)."""
    config = smoke_config()
    for name in PIPELINE:
        stage = get_stage(name)
        for unit in stage.units(config, Path("/run")):
            covered = stage.unit_config(config, unit)
            assert "test_tasks" not in covered.get("data", {}), name
            assert not {"context", "offline_context_size"} & set(covered.get("evaluate", {})), (name, unit.key)
            assert unit.split == "train" and "split" not in unit.params
