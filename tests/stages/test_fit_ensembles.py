"""fit-rewards and fit-dynamics are task-batched: how tasks are grouped (`--group-size`) does not change a task's
artifact, and `--tasks` writes only the selected tasks'."""

import shutil

import numpy as np
import pytest
import torch
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.nn import to_torch_tree

STAGES = ["fit-rewards", "fit-dynamics"]
TASKS = 3


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """(config, run_dir) with the datasets of 3 PointRobotWind tasks (tasks differ in dynamics, so both stages
    apply); ensembles small and short."""
    config = smoke_config("env.family=PointRobotWind", f"env.n_train={TASKS}", "collect.steps=400",
                          "rewards.steps=60", "dynamics.steps=60", "dynamics.hidden=[16]")
    run_dir = tmp_path_factory.mktemp("collected")
    run_stages(config, run_dir, ["tasks", "collect"])
    return config, run_dir


def fit(collected, tmp_path, name, **options):
    config, source = collected
    run_dir = tmp_path / name
    shutil.copytree(source, run_dir)
    results = run_stages(config, run_dir, STAGES, **options)
    return run_dir, {stage: [r.key for r in jobs] for stage, jobs in results.items()}


def read(run_dir, target, task):
    with open_artifact(run_dir / target / f"task_{task:02d}.h5", "ensemble") as art:
        return {"weights": art.tree("weights"), "holdout": art.meta("holdout"), "fingerprint": art.fingerprint,
                "seed": art.seed, "dims": (art.attrs["in_dim"], art.attrs["out_dim"])}


def test_grouping_does_not_change_the_artifacts_and_tasks_selects_them(collected, tmp_path):
    grouped, jobs = fit(collected, tmp_path, "grouped", group_size=2)
    assert jobs == {stage: ["task_00..task_01 (2 tasks)", "task_02"] for stage in STAGES}
    alone, jobs = fit(collected, tmp_path, "alone", group_size=1)
    assert jobs == {stage: ["task_00", "task_01", "task_02"] for stage in STAGES}

    for target in ("rewards", "dynamics"):
        seen = []
        for task in range(TASKS):
            a, b = read(grouped, target, task), read(alone, target, task)
            assert a["fingerprint"] == b["fingerprint"] and a["seed"] == b["seed"] and a["dims"] == b["dims"]
            weights = a["weights"]
            assert weights["tasks"] == 1 and weights["model"]["net.layers.0.weight"].shape[:2] == (1, 5)
            # to float rounding: fused Adam rounds a block that does not start on a SIMD boundary differently
            torch.testing.assert_close(to_torch_tree(weights), to_torch_tree(b["weights"]), rtol=1e-5, atol=1e-6)
            assert a["holdout"].keys() == b["holdout"].keys() == {"train_loss", "holdout_mse", "holdout_member_mse"}
            for key, value in b["holdout"].items():
                np.testing.assert_allclose(a["holdout"][key], value, rtol=1e-5, atol=1e-7)
            seen.append(weights["model"]["input_std"][0])
        # tasks are not copies of one another: own seeds, own data, own standardisation
        assert not np.allclose(seen[0], seen[1]) and not np.allclose(seen[1], seen[2])

    only, jobs = fit(collected, tmp_path, "only", tasks=(1,))
    assert jobs == {stage: ["task_01"] for stage in STAGES}
    for target in ("rewards", "dynamics"):
        assert sorted(p.name for p in (only / target).iterdir()) == ["task_01.h5"]
        a, b = read(only, target, 1), read(alone, target, 1)
        assert a["fingerprint"] == b["fingerprint"]
        torch.testing.assert_close(to_torch_tree(a["weights"]), to_torch_tree(b["weights"]), rtol=0, atol=0)
