"""Smoke-profile helpers for stage tests: the PointGoalArc config, a way to run named stages on it, and the
scripts/ modules the tests exercise on its runs."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = ROOT / "configs" / "point_goal_arc.yaml"


def smoke_config(*overrides: str):
    from mtrl.config import load_config

    return load_config(SMOKE_CONFIG, "smoke", overrides)


def run_stages(config, run_dir: Path, names, **options):
    from mtrl.config import save_config
    from mtrl.pipeline.base import RunOptions
    from mtrl.pipeline.registry import get_stage
    from mtrl.pipeline.runner import run_stage

    save_config(config, run_dir)
    opts = RunOptions(run_dir=run_dir, threads=1, **options)
    return {name: run_stage(get_stage(name), config, opts) for name in names}


def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
