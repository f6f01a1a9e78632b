"""Shared fixtures: one smoke-profile pipeline run, computed once per test session."""

import pytest
from smoke import run_stages, smoke_config


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(config, run_dir) of the whole smoke pipeline on PointGoalArc (3 train and 2 test tasks)."""
    from mtrl.pipeline.registry import PIPELINE

    config = smoke_config()
    run_dir = tmp_path_factory.mktemp("smoke")
    run_stages(config, run_dir, list(PIPELINE))
    return config, run_dir
