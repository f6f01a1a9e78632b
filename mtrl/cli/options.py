"""Options shared by every stage command and their translation into a Config and RunOptions."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from mtrl.errors import ConfigError
from mtrl.runlog import NORMAL
from mtrl.tblog import LOG_CHOICES, check_available

DEVICES = ("auto", "cpu", "cuda")


def parse_tasks(text: str | None, option: str = "--tasks") -> tuple[int, ...] | None:
    """'3,4' or '0-3' or '0-3,7' → task indices (for sharding per-task stages across shell scripts)."""
    if text is None:
        return None
    tasks: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            if sep and int(lo) > int(hi):
                raise ConfigError(f"{option} {text!r}: the range {part.strip()} is empty; write it as {hi}-{lo}")
            tasks += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected task indices like 3,4 or 0-3") from None
    return tuple(sorted(set(tasks)))


def stage_options(fn):
    """The options every stage command takes (see `mtrl <stage> --help`)."""
    options = [
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run directory: all artifacts and the resolved config live here."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Experiment YAML (configs/*.yaml). Default: the run directory's config.yaml."),
        click.option("--profile", help="Named profile in the config file, e.g. smoke, cpu, paper."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. --set distill.epochs=10 (repeatable)."),
        click.option("--seed", type=click.IntRange(min=0), help="Run seed (config key `seed`)."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="Torch device."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes for per-task stages; cores are split between them."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="Torch threads per worker (default: the cores split between workers; tiny networks "
                          "are fastest on 1)."),
        click.option("--group-size", type=click.IntRange(min=1),
                     help="Tasks trained together as one task-batched model by collect, train-bcq, fit-rewards, "
                          "fit-dynamics and sac-init (default: the tasks split evenly between workers; 1: one "
                          "model per task). Each task's results are those of its own model, up to float rounding."),
        click.option("--tasks", help="Only these training tasks, e.g. 0-3 or 3,4 (cluster sharding)."),
        click.option("--force", is_flag=True, help="Recompute even when outputs are up to date."),
        click.option("--progress-every", type=click.FloatRange(min=0), default=60.0, show_default=True,
                     metavar="SECONDS", help="When stderr is not a terminal (Slurm, nohup): seconds between "
                                             "progress log lines of long units; 0: none."),
        click.option("--log", "log", multiple=True, type=click.Choice(LOG_CHOICES),
                     help="Also write every training curve as TensorBoard scalars, under "
                          "RUN_DIR/tensorboard/<artifact>/ (needs pip install 'mtrl-batch[tensorboard]')."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def resolve(run_dir: Path, config_path: Path | None, profile: str | None, overrides: tuple[str, ...],
            seed: int | None, device: str, workers: int, threads: int | None, group_size: int | None,
            tasks: str | None, force: bool, progress_every: float = 60.0, log: tuple[str, ...] = (),
            extra: tuple[str, ...] = (), verbosity: int = NORMAL):
    """Load and validate the config and options; return (config, options, header). Nothing is written: the
    caller saves the config (`save_config(config, run_dir, header=header)`) once the command's work can start."""
    from mtrl.config import load_config, load_run_config
    from mtrl.pipeline.base import RunOptions

    overrides = tuple(extra) + tuple(overrides) + ((f"seed={seed}",) if seed is not None else ())
    if config_path is not None:
        config = load_config(config_path, profile, overrides)
    elif profile is not None:
        raise ConfigError("--profile needs --config (profiles are defined in the config file)")
    else:
        config = load_run_config(run_dir, overrides)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    if "tensorboard" in log:
        check_available()
    options = RunOptions(run_dir=run_dir, device=device, workers=workers, tasks=parse_tasks(tasks), force=force,
                         threads=threads, group_size=group_size, progress_every=progress_every,
                         log_to=tuple(sorted(set(log))), verbosity=verbosity)
    source = f"from {config_path}" + (f" profile {profile}" if profile else "") if config_path else "from run dir"
    return config, options, f"resolved config ({source}{', ' + ' '.join(overrides) if overrides else ''})"
