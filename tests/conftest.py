"""Shared fixtures: one smoke-profile pipeline run, computed once per test session."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "configs" / "point_goal_arc.yaml"


def smoke_config(*overrides: str):
    from mtrl.config import load_config

    return load_config(SMOKE_CONFIG, "smoke", overrides)


def run_stages(config, run_dir: Path, names, **options):
    from mtrl.config import save_config
    from mtrl.stages.base import RunOptions
    from mtrl.stages.registry import get_stage
    from mtrl.stages.runner import run_stage

    save_config(config, run_dir)
    opts = RunOptions(run_dir=run_dir, threads=1, **options)
    return {name: run_stage(get_stage(name), config, opts) for name in names}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(config, run_dir) of the whole smoke pipeline on PointGoalArc (3 train and 2 test tasks)."""
    from mtrl.stages.registry import PIPELINE

    config = smoke_config()
    run_dir = tmp_path_factory.mktemp("smoke")
    run_stages(config, run_dir, list(PIPELINE))
    return config, run_dir
