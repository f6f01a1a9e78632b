"""`mtrl sweep`: one method trained at every setting of a grid of its config keys, the pick chosen on the training
tasks only, and installed as the method's policy.

A trial is the method's own training unit (distill or train-baseline) with the trial's values as `overrides`
(`mtrl.pipeline.overrides`), written to sweeps/<name>/trial_NN.h5: the runner fingerprints, skips, checkpoints and
resumes it like any unit, and every trial takes the seed of the method's own unit, so that trials differ in their
values alone. A trial's score is the mean training-task score of its last `SCORE_EVALUATIONS` evaluations during
training (`train_score`); the test-task scores are never read. sweeps/<name>.h5 records every trial and the pick
(the highest score, the first of equals); the picked trial is copied to policies/<name>.h5, which the training
stage then finds up to date (its unit carries the pick's overrides), so `mtrl status`, `mtrl evaluate` and
`mtrl report` take the pick as the method's policy.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.artifacts import ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.artifacts.store import csv_path
from mtrl.configlib import flatten, parse_override
from mtrl.errors import ConfigError, StageError
from mtrl.fsio import atomic_path
from mtrl.methods import GROUND_TRUTH_SUFFIX, get_method
from mtrl.pipeline import layout
from mtrl.pipeline.base import Output, RunOptions, Stage, Unit
from mtrl.pipeline.overrides import config_value, with_overrides
from mtrl.pipeline.runner import check_stage, output_state, plan_unit, run_stage

SCORE_EVALUATIONS = 3  # a trial's score: the mean training-task score of its last 3 evaluations during training
# distill.relabel names another policy (mbml-gt): sweep that one with --method under its config. The evaluation
# schedule decides how many evaluations make a trial's score, and the checkpoint interval changes nothing learned.
NOT_SWEPT = {"distill.relabel"} | {f"{section}.{key}" for section in ("distill", "baselines")
                                   for key in ("eval_every", "checkpoint_every")}
POLICY_CURVES = ("losses", "eval_curve")  # the curves a policy artifact also writes as CSV beside it


@dataclass(frozen=True)
class Trial:
    values: dict[str, Any]  # dotted key -> value, as the config holds it
    unit: Unit


def parse_grid(texts: tuple[str, ...]) -> dict[str, list[Any]]:
    """`("distill.algo.kl_beta=0.1,0.03",)` → {"distill.algo.kl_beta": [0.1, 0.03]} (each value parsed as YAML)."""
    if not texts:
        raise ConfigError("mtrl sweep needs at least one --grid KEY=V1,V2,...")
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key or not all(v.strip() for v in values.split(",")):
            raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. --grid distill.algo.kl_beta=0.1,0.01")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        grid[key] = [parse_override(f"{key}={value}")[1] for value in values.split(",")]
    return grid


def training_stage(name: str) -> Stage:
    """The stage that trains policy `name` (a registered method, or a distilled one's ground-truth version)."""
    from mtrl.stages.distill import Distill
    from mtrl.stages.train_baseline import TrainBaseline

    method = get_method(name.removesuffix(GROUND_TRUTH_SUFFIX))
    return Distill((method.name,)) if method.stage == "distill" else TrainBaseline((method.name,))


def _section(stage: Stage) -> str:
    return "distill" if stage.name == "distill" else "baselines"


def sweepable_keys(stage: Stage, config, unit: Unit) -> set[str]:
    """The keys of its training section that a method's unit reads: those its fingerprint covers, and its method
    config (a train-baseline parameter). Not the evaluation settings: they make the score every trial is judged by."""
    covered = set(flatten(stage.unit_config(config, unit)))
    if "algo_config" in unit.params:
        covered |= set(flatten(unit.params["algo_config"], f"baselines.{unit.params['algo']}."))
    return {key for key in covered if key.split(".")[0] == _section(stage)} - NOT_SWEPT


def plan_trials(name: str, grid: dict[str, list[Any]], config, run_dir: Path) -> list[Trial]:
    """Every setting of the grid (the cartesian product, in the order given) as a trial unit, each validated: a
    ConfigError names an unknown key, a key the method does not read or an invalid value, before any work."""
    stage = training_stage(name)
    allowed = sweepable_keys(stage, config, stage.unit_for(config, run_dir, name))
    for key, values in grid.items():
        if key not in allowed:
            with_overrides(config, {key: values[0]})  # an unknown key gets the config's own message
            raise ConfigError(f"--grid {key}: not a training key of {name} (the evaluation settings score every "
                              f"trial alike); sweepable keys: {', '.join(sorted(allowed))}")
    trials = []
    for i, setting in enumerate(itertools.product(*grid.values())):
        trial_config = with_overrides(config, dict(zip(grid, setting, strict=True)))
        if not getattr(trial_config, _section(stage)).eval_every:
            raise ConfigError(f"mtrl sweep scores trials by their evaluations during training on the training "
                              f"tasks; set {_section(stage)}.eval_every > 0")
        values = {key: config_value(trial_config, key) for key in grid}
        unit = stage.unit_for(config, run_dir, name, values)
        output = Output(layout.sweep_trial(run_dir, name, i), "policy")
        trials.append(Trial(values, replace(unit, key=f"{name}.trial_{i:02d}", outputs={"policy": output},
                                            seed_key=unit.key)))
    return trials


class TrialStage:
    """A method's training stage with the sweep's trials as its units (the runner's face of a stage)."""

    def __init__(self, stage: Stage, trials: list[Trial]):
        self._stage, self._units = stage, [t.unit for t in trials]

    def units(self, config, run_dir) -> list[Unit]:
        return self._units

    def __getattr__(self, attribute: str):
        if attribute.startswith("_"):  # unpickling in a worker looks these up before __init__ has run
            raise AttributeError(attribute)
        return getattr(self._stage, attribute)


def train_score(path: Path) -> float:
    """A trial's score: the mean training-task score of its last `SCORE_EVALUATIONS` evaluations during training.
    It reads the training scores only: the test tasks take no part in the choice."""
    with open_artifact(path, "policy") as art:
        scores = art.array("eval_curve/train_score")
    if not len(scores):
        raise StageError(f"{path}: no evaluation during training to score it by")
    return float(np.mean(scores[-SCORE_EVALUATIONS:]))


def pick(scores: list[float]) -> int:
    """The trial with the highest training-task score; the first of equals (the grid's order)."""
    return int(np.argmax(scores))


@dataclass(frozen=True)
class SweepResult:
    name: str
    trials: list[Trial]
    scores: list[float]
    picked: int


def run_sweep(name: str, trials: list[Trial], config, options: RunOptions) -> SweepResult:
    """Bring every trial up to date, score them, record the sweep and install the pick as policies/<name>.h5."""
    stage = training_stage(name)
    run_stage(TrialStage(stage, trials), config, options)
    paths = [t.unit.outputs["policy"].path for t in trials]
    result = SweepResult(name, trials, [train_score(p) for p in paths], 0)
    result = replace(result, picked=pick(result.scores))
    _record(result, config, options.run_dir)
    _install(paths[result.picked], layout.policy(options.run_dir, name))
    installed = plan_unit(stage, config, stage.units(config, options.run_dir)[0])
    if not installed.up_to_date:  # the training stage must see the pick as its own output
        raise RuntimeError(f"sweep {name}: policies/{name}.h5 is {installed.states['policy']} after installing "
                           "the pick")
    return result


def _record(result: SweepResult, config, run_dir: Path) -> None:
    """sweeps/<name>.h5: every trial (values, score, artifact, fingerprint) and the pick's values."""
    fingerprints = {}
    for trial in result.trials:
        with open_artifact(trial.unit.outputs["policy"].path, "policy") as art:
            fingerprints[trial.unit.key] = art.fingerprint
    rule = f"mean training-task score of the last {SCORE_EVALUATIONS} evaluations during training"
    meta = ArtifactMeta("sweep", "sweep", {"score": rule}, fingerprints, {"method": result.name}, config.seed)
    with ArtifactWriter(layout.sweep(run_dir, result.name), meta) as w:
        w.array("train_scores", np.array(result.scores))
        w.json("trials", [{"values": t.values, "train_score": score, "fingerprint": fingerprints[t.unit.key],
                           "artifact": t.unit.outputs["policy"].path.relative_to(run_dir).as_posix()}
                          for t, score in zip(result.trials, result.scores, strict=True)])
        w.json("picked", result.trials[result.picked].values)
        w.attrs["pick"] = result.picked
        w.attrs["score_rule"] = rule


def _install(trial: Path, policy: Path) -> None:
    """Copy the picked trial's artifact (and its curve files) to the method's policy path, atomically; the CSVs
    first, so that a complete policy artifact always has its curve files beside it."""
    for curve in POLICY_CURVES:
        if csv_path(trial, curve).exists():
            with atomic_path(csv_path(policy, curve)) as tmp:
                shutil.copyfile(csv_path(trial, curve), tmp)
    if output_state(policy, "policy", _fingerprint(trial)) != "up to date":
        with atomic_path(policy) as tmp:
            shutil.copyfile(trial, tmp)


def _fingerprint(path: Path) -> str:
    with open_artifact(path, "policy") as art:
        return art.fingerprint


def check_trials(name: str, trials: list[Trial], config, options: RunOptions) -> None:
    """StageError if a trial's inputs are missing (before the command writes anything)."""
    check_stage(TrialStage(training_stage(name), trials), config, options)
