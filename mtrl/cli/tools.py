"""Commands that look at a run directory or an artifact without computing anything."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mtrl.cli.group import main
from mtrl.cli.options import parse_tasks
from mtrl.data import DATASET_KINDS
from mtrl.errors import ConfigError
from mtrl.export import MINARI_ID, MINARI_KIND_ID

if TYPE_CHECKING:
    from mtrl.pipeline.base import Stage, Unit


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--verify", is_flag=True, help="Also read every artifact in full through its checksums, as "
                                             "`mtrl verify` does (exit status 1 if one is damaged).")
def status(run_dir: Path, verify: bool) -> None:
    """Each expected artifact of RUN_DIR: missing, stale or up to date, with its fingerprint."""
    artifacts = expected_artifacts(run_dir)
    damaged = find_damage(run_dir, artifacts) if verify else {}
    rows = [(a.stage.name, str(a.path.relative_to(run_dir)), "damaged" if a.path in damaged else a.state,
             a.fingerprint or "-") for a in artifacts]
    width = [max(len(r[i]) for r in rows + [("stage", "artifact", "state", "fingerprint")]) for i in range(4)]
    for row in [("stage", "artifact", "state", "fingerprint"), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)).rstrip())
    done = sum(r[2] == "up to date" for r in rows)
    click.echo(f"\n{done} of {len(rows)} artifacts up to date")
    if verify:
        report_damage(damaged, artifacts)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def verify(run_dir: Path) -> None:
    """Read every artifact of RUN_DIR in full through its checksums (which `status` does not): one line per damaged
    file with the command that rewrites it, then a summary; exit status 1 if any is damaged, 0 if all are intact."""
    artifacts = expected_artifacts(run_dir)
    report_damage(find_damage(run_dir, artifacts), artifacts)


@dataclass(frozen=True)
class ExpectedArtifact:
    stage: Stage
    unit: Unit
    path: Path
    kind: str
    state: str  # as `mtrl status` shows it
    fingerprint: str | None


def expected_artifacts(run_dir: Path) -> list[ExpectedArtifact]:
    """Every artifact the run's config calls for, in pipeline order, with its state (`plan_pipeline`)."""
    from mtrl.config import load_run_config
    from mtrl.pipeline.registry import all_stages
    from mtrl.pipeline.runner import plan_pipeline

    artifacts = []
    for stage, plan in plan_pipeline(all_stages(), load_run_config(run_dir), run_dir):
        for name, out in plan.unit.outputs.items():
            state = plan.states[name]
            if plan.fingerprint is None and state != "missing":
                state = "stale (inputs missing)"
            artifacts.append(ExpectedArtifact(stage, plan.unit, out.path, out.kind, state, plan.fingerprint))
    return artifacts


def find_damage(run_dir: Path, artifacts: list[ExpectedArtifact]) -> dict[Path, str]:
    """Each existing artifact that fails to read in full -> one line naming it, why, and the command that
    rewrites it."""
    from mtrl.artifacts import damage

    damaged = {}
    for artifact in artifacts:
        if artifact.state == "missing":
            continue
        problem = damage(artifact.path, artifact.kind)
        if problem:
            reason = problem.removeprefix(f"{artifact.path}: ")
            damaged[artifact.path] = (f"damaged: {artifact.path.relative_to(run_dir)}: {reason}; stage "
                                      f"'{artifact.stage.name}' rewrites it: {rewrite_command(run_dir, artifact)}")
    return damaged


def rewrite_command(run_dir: Path, artifact: ExpectedArtifact) -> str:
    """The shell command that replaces a damaged artifact: remove it, then run its stage's command, which computes
    only the units whose outputs are not up to date (here, that one: `--tasks` names it where it is a task's)."""
    command = {"tasks": "collect"}.get(artifact.stage.name, artifact.stage.name)  # `mtrl collect` samples tasks.h5
    unit = artifact.unit
    tasks = f" --tasks {unit.task}" if unit.task is not None and unit.split == "train" else ""
    return f"rm {shlex.quote(str(artifact.path))} && mtrl {command} --run-dir {shlex.quote(str(run_dir))}{tasks}"


def report_damage(damaged: dict[Path, str], artifacts: list[ExpectedArtifact]) -> None:
    """Print each damaged artifact's line and a summary; exit status 1 if any is damaged."""
    for line in damaged.values():
        click.echo(line)
    present = sum(a.state != "missing" for a in artifacts)
    missing = f", {len(artifacts) - present} missing (not checked)" if present < len(artifacts) else ""
    click.echo(f"verify: {present - len(damaged)} of {present} artifacts intact, {len(damaged)} damaged{missing}")
    if damaged:
        click.get_current_context().exit(1)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(file: Path, as_json: bool) -> None:
    """Kind, schema version, stage, config, inputs, size and datasets (with shapes) of an artifact FILE."""
    from mtrl.artifacts import describe

    info = describe(file)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=list))
        return
    click.echo(f"{info['path']}: {info['kind']} (schema v{info['schema_version']}), "
               f"{info['size_bytes'] / 1e6:.2f} MB")
    for key in ("stage", "fingerprint", "created", "seed"):
        click.echo(f"  {key}: {info[key]}")
    click.echo("  versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    click.echo("  inputs: " + (", ".join(f"{k}={v}" for k, v in info["inputs"].items()) or "none"))
    if info["params"]:
        click.echo(f"  params: {json.dumps(info['params'])}")
    click.echo("  config: " + json.dumps(info["config"], sort_keys=True))
    click.echo(f"  datasets ({len(info['datasets'])}):")
    for name, shape, dtype in info["datasets"]:
        click.echo(f"    {name:40s} {str(tuple(shape)):18s} {dtype}")


@main.command("config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Experiment YAML (configs/*.yaml); default: the papers' values.")
@click.option("--profile", help="Named profile in the config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key (repeatable).")
@click.option("--keys", is_flag=True, help="List every key with its meaning instead of the resolved values.")
def show_config(config_path: Path | None, profile: str | None, overrides: tuple[str, ...], keys: bool) -> None:
    """Print the resolved, validated config (what a stage would run with), or every key with its help."""
    import yaml

    from mtrl.config import Config, load_config
    from mtrl.configlib import field_help, to_dict

    if keys:
        for key, help_text, default in field_help(Config):
            click.echo(f"{key} = {json.dumps(default)}\n    {help_text}")
        return
    if profile is not None and config_path is None:
        raise ConfigError("--profile needs --config (profiles are defined in the config file)")
    config = load_config(config_path, profile, overrides) if config_path else load_config(None, None, overrides)
    click.echo(yaml.safe_dump(to_dict(config), sort_keys=False), nl=False)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the figures and results.md (default: <first RUN_DIR>/report).")
def report(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Figures and results.md from one or more RUN_DIRs (seeds), as mean ± std over them.

    MBML's Fig. 4, 6, 7 and 8 as PNG files; results.md holds every number behind them, a Table 9 of per-task
    SAC and BCQ returns, the config and seeds, the fingerprint of every artifact read, stage wall times and
    the artifacts that are missing."""
    from mtrl.report import write_report

    click.echo(f"wrote {write_report(list(run_dirs), out, lambda m: click.echo(f'warning: {m}', err=True))}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--curve", required=True, help="Curve file relative to the run dir without .csv, e.g. "
                                             "policies/mbml.eval_curve, sac/task_00.curve, policies/mbml.losses.")
@click.option("--y", "columns", multiple=True, help="Column(s) to draw (default: all but the x axis).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file (default: <first RUN_DIR>/plots/<curve>.png).")
def plot(run_dirs: tuple[Path, ...], curve: str, columns: tuple[str, ...], out: Path | None) -> None:
    """Draw a training curve of one or more RUN_DIRs (seeds): mean ± std over them, from the CSV files that
    every training stage writes beside its artifacts."""
    from mtrl.report.plot import plot_curve

    click.echo(f"wrote {plot_curve(list(run_dirs), curve, columns, out)}")


@main.command("export-dataset")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--task", "task_text", default="all", show_default=True,
              help="Tasks of the split to export: all, or indices like 0-3,7.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Training tasks, or the test tasks' datasets (made with data.test_tasks; their {task} key is "
                   "test_task_NN).")
@click.option("--format", "fmt", type=click.Choice(["npz", "minari"]), default="npz", show_default=True,
              help="npz: the flat D4RL dict per task; minari: a local Minari dataset per task (in "
                   "$MINARI_DATASETS_PATH, default ~/.minari/datasets) that recovers its task's env.")
@click.option("--kind", type=click.Choice(DATASET_KINDS), default="replay", show_default=True,
              help="Dataset kind to export (docs/datasets.md; kinds other than replay come from `mtrl datasets`).")
@click.option("--out", help="npz file to write; {task} becomes the task key, e.g. task_03, {kind} the kind "
                            "(default: RUN_DIR/export/{task}.npz for the replay, RUN_DIR/export/{kind}/{task}.npz "
                            "for other kinds).")
@click.option("--dataset-id", help=f"Minari dataset id; {{family}}, {{run}} (the run directory's name), {{kind}} and "
                                   f"{{task}} (e.g. task_03) are filled in (default: {MINARI_ID} for the replay, "
                                   f"{MINARI_KIND_ID} for other kinds).")
@click.option("--overwrite", is_flag=True, help="Replace Minari datasets that have the same ids (default: refuse).")
def export_dataset(run_dir: Path, task_text: str, split: str, fmt: str, kind: str, out: str | None,
                   dataset_id: str | None, overwrite: bool) -> None:
    """Write a run's datasets of one kind (training tasks, or test tasks with --split test) in a form another
    offline-RL tool reads directly, with their kind, family, task parameters and behaviour returns as metadata."""
    from mtrl.artifacts import open_artifact
    from mtrl.export import check_minari_ids, dataset_metadata, fill, to_minari, to_npz
    from mtrl.pipeline import layout
    from mtrl.pipeline.base import task_key
    from mtrl.pipeline.run_data import load_dataset, read_distribution, split_tasks

    dist = read_distribution(layout.tasks(run_dir))
    count = len(split_tasks(dist, split))
    tasks = range(count) if task_text == "all" else parse_tasks(task_text, "--task")
    if any(task >= count for task in tasks):
        raise ConfigError(f"--task {task_text}: {run_dir} has {'training' if split == 'train' else 'test'} tasks "
                          f"0..{count - 1}")
    keys = [("test_" if split == "test" else "") + task_key(task) for task in tasks]
    missing = [task for task in tasks if not layout.dataset(run_dir, task, kind, split).exists()]
    if missing:
        make = "mtrl collect" if kind == "replay" else f"mtrl datasets --kind {kind}"
        test = " --set data.test_tasks=true" if split == "test" else ""
        raise ConfigError(f"--kind {kind}: {layout.dataset(run_dir, missing[0], kind, split)} does not exist; run "
                          f"`{make} --run-dir {run_dir}{test}` first")
    if fmt == "npz":
        default = "export/{task}.npz" if kind == "replay" else "export/{kind}/{task}.npz"
        targets = fill(out or str(run_dir / default), "--out", keys, kind=kind)
    else:
        template = dataset_id or (MINARI_ID if kind == "replay" else MINARI_KIND_ID)
        targets = fill(template, "--dataset-id", keys, family=dist.name, run=run_dir.name, kind=kind)
        check_minari_ids(targets, overwrite)
    for task, target in zip(tasks, targets, strict=True):
        with open_artifact(layout.dataset(run_dir, task, kind, split), "dataset") as art:
            data = load_dataset(art, dist.spec, infos=True)
            info = art.meta("kind_info") if "kind_info" in art.attrs else {"kind": kind}
            metadata = dataset_metadata(dist, task, kind, run_dir.name, art.fingerprint, data, info, split)
        if fmt == "npz":
            click.echo(f"wrote {to_npz(data, Path(target), metadata)} ({len(data['rewards'])} transitions)")
            continue
        dataset = to_minari(data, target, dist, task, metadata, overwrite)
        click.echo(f"created Minari dataset {target} ({dataset.total_episodes} episodes, {dataset.total_steps} "
                   "steps)")
