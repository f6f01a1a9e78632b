"""Reading one run directory's artifacts into plain data (arrays, floats, dicts) for the report.

Every artifact under the run directory is opened once: its fingerprint, creation time and wall time are
recorded, and the contents the figures and tables need are kept. The artifacts that the run's config expects
but that are absent or unreadable are listed, so a partial run still gets a report that says what it lacks.
Nothing here combines runs; that is `mtrl.report.aggregate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtrl.artifacts import Artifact, open_artifact
from mtrl.configlib import to_dict
from mtrl.errors import ArtifactError, MtrlError

if TYPE_CHECKING:
    from mtrl.config import Config

Curve = dict[str, np.ndarray]  # a stored curve tree, e.g. {"steps": ..., "return_mean": ...}


class ReportError(MtrlError):
    """A run directory the report cannot use at all (not a directory, or without a single artifact)."""


@dataclass
class RunResults:
    """What one run directory holds, as plain data."""

    run_dir: Path
    config: dict[str, Any] | None  # the resolved config (config.yaml), None if absent
    profile: str | None = None  # the config profile the run was made with (config key `profile`), None: not recorded
    fingerprints: dict[str, str] = field(default_factory=dict)  # path relative to the run dir -> fingerprint
    created: list[str] = field(default_factory=list)  # creation times of the artifacts read
    # (stage, unit params) -> seconds. A unit's outputs share its params and each records the unit's time so
    # far, so the largest is the unit's time; summing every artifact would count collect's two outputs twice.
    unit_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    unit_eval_seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # of which evaluation
    missing: list[str] = field(default_factory=list)  # "path (why)" per expected artifact not read, or a stage
    missing_count: int = 0  # expected artifacts not read (a stage the run has not reached is one line of `missing`)
    policy_curves: dict[str, Curve] = field(default_factory=dict)  # method -> eval_curve {epochs, *_score}
    eval_summaries: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {train_score, test_score}
    eval_task_scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> train_scores per task
    # name -> {train_score, test_score} under the offline protocol (eval/offline/, evaluate.context: offline)
    offline_eval_summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    probes: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> task-inference probe summary
    # method -> task-inference health (`mtrl.rl.health`, eval/<method>.h5 "health") and its eval's skip_episodes
    health: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # method -> probe's own-set z [K, sets, z]
    relabel_stats: dict[str, np.ndarray] | None = None  # learned relabelling: keep_fraction, error_* [K, K]
    sac_init: dict[str, dict[int, Curve]] = field(default_factory=dict)  # run name -> test task -> curves
    sac_final: dict[int, float] = field(default_factory=dict)  # training task -> final SAC evaluation return
    sac_curves: dict[int, Curve] = field(default_factory=dict)  # training task -> collection SAC's eval curve
    bcq_returns: dict[int, dict[str, float]] = field(default_factory=dict)  # training task -> {best, final}
    bcq_curves: dict[int, Curve] = field(default_factory=dict)  # training task -> BCQ's eval curve (updates)
    # dataset kind -> training task -> behaviour return statistics (`mtrl.data.return_stats`)
    dataset_returns: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    # (dataset kind, method) -> the CQL family's results (train-cql): final_returns [K], eval_curve, and HCSAC's
    # relabel_epochs [R], relabel_fractions [R, K, K]
    cql: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # policy name -> its sweep (`mtrl sweep`): trials [{values, train_score, artifact, ...}], pick, score_rule
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        return None if self.config is None else self.config["seed"]

    @property
    def stage_seconds(self) -> dict[str, float]:
        return _per_stage(self.unit_seconds)

    @property
    def stage_eval_seconds(self) -> dict[str, float]:
        """Of `stage_seconds`, the evaluations during training (artifacts that record it: `eval_seconds`)."""
        return _per_stage(self.unit_eval_seconds)


def _per_stage(unit_values: dict[tuple[str, str], float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (stage, _), seconds in unit_values.items():
        totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def collect_run(run_dir: Path) -> RunResults:
    """Read everything the report needs from `run_dir` (raises ReportError when it holds no artifact)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    config = _read_config(run_dir)
    results = RunResults(run_dir, None if config is None else to_dict(config),
                         None if config is None else config.profile)
    unreadable: dict[Path, str] = {}
    for path in _artifact_files(run_dir):
        try:
            with open_artifact(path) as art:
                _read(results, art, path.relative_to(run_dir).as_posix())
        except ArtifactError as e:
            unreadable[path] = str(e).removeprefix(f"{path}: ")
    if not results.fingerprints:
        found = f" ({len(unreadable)} unreadable .h5 files)" if unreadable else ""
        raise ReportError(f"{run_dir}: no mtrl artifacts to report on{found}; run `mtrl run --run-dir {run_dir}` "
                          "first")
    if config is None:
        results.missing.append("config.yaml (absent: the expected artifacts are unknown)")
        results.missing_count += 1
    else:
        not_run, not_run_paths = [], []  # stages without any output, e.g. a run made with --until: one line
        for stage, paths in _expected_artifacts(config, run_dir).items():
            if paths and not any(path.exists() for path in paths):
                not_run.append(stage)
                not_run_paths += paths
                results.missing_count += len(paths)
                continue
            for path in paths:
                if path in unreadable:
                    results.missing.append(f"{path.relative_to(run_dir).as_posix()} ({unreadable.pop(path)})")
                elif not path.exists():
                    results.missing.append(f"{path.relative_to(run_dir).as_posix()} (missing)")
                else:
                    continue
                results.missing_count += 1
        if not_run:
            example = not_run_paths[0].relative_to(run_dir).as_posix()
            results.missing.insert(0, f"stages not run: {', '.join(not_run)} ({len(not_run_paths)} outputs, e.g. "
                                      f"{example}; mtrl run, or each stage's own command, makes them)")
    results.missing += [f"{p.relative_to(run_dir).as_posix()} ({why})" for p, why in unreadable.items()]
    results.missing_count += len(unreadable)
    return results


def _read_config(run_dir: Path) -> Config | None:
    from mtrl.config import RESOLVED_NAME, load_run_config

    return load_run_config(run_dir) if (run_dir / RESOLVED_NAME).exists() else None


def _artifact_files(run_dir: Path) -> list[Path]:
    """Every artifact file of the run: not checkpoints (unfinished work) nor writers' hidden temporaries."""
    return sorted(p for p in run_dir.rglob("*.h5")
                  if p.relative_to(run_dir).parts[0] != "checkpoints" and not p.name.startswith("."))


def _expected_artifacts(config: Config, run_dir: Path) -> dict[str, list[Path]]:
    """The outputs of every stage's units under the run's config, by stage: what `mtrl run` would produce."""
    from mtrl.pipeline.registry import all_stages

    return {stage.name: [out.path for unit in stage.units(config, run_dir) for out in unit.outputs.values()]
            for stage in all_stages()}


def _read(results: RunResults, art: Artifact, rel_path: str) -> None:
    attrs = art.attrs
    results.fingerprints[rel_path] = art.fingerprint
    results.created.append(str(attrs["created"]))
    if "wall_seconds" in attrs:
        unit = (str(attrs["stage"]), str(attrs["params"]))
        results.unit_seconds[unit] = max(results.unit_seconds.get(unit, 0.0), float(attrs["wall_seconds"]))
        if "eval_seconds" in attrs:
            results.unit_eval_seconds[unit] = max(results.unit_eval_seconds.get(unit, 0.0),
                                                  float(attrs["eval_seconds"]))
    reader = _READERS.get(art.kind)
    if reader is not None:
        reader(results, art, Path(rel_path).stem)


def _read_policy(results: RunResults, art: Artifact, name: str) -> None:
    if Path(art.path).parent.parent.name == "sweeps":  # a sweep's trial: its sweep record reports it
        return
    curve = art.tree("eval_curve") if "eval_curve" in art else None
    if curve is not None and len(curve["epochs"]):  # empty when distill.eval_every is 0
        results.policy_curves[name] = curve


def _read_eval(results: RunResults, art: Artifact, name: str) -> None:
    if art.attrs.get("context", "online") == "offline":  # never mixed with the online scores
        results.offline_eval_summaries[name] = art.meta("summary")
        return
    results.eval_summaries[name] = art.meta("summary")
    results.eval_task_scores[name] = art.tree("returns")["train_scores"]
    if "health" in art:
        results.health[name] = art.tree("health") | {"skip_episodes": int(art.attrs["skip_episodes"])}
    if "task_inference" in art:  # mtrl.rl.probe: does task inference follow the rewards?
        probe = art.tree("task_inference")
        off = ~np.eye(len(probe["own_accuracy"]), dtype=bool)
        results.probes[name] = {"follows rewards": float(probe["reward_following"][off].mean()),
                                "follows state-actions": float(probe["state_following"][off].mean()),
                                "own-task accuracy": float(probe["own_accuracy"].mean())}
        if "embeddings" in probe:  # evaluations before the report drew embeddings do not have them
            results.embeddings[name] = probe["embeddings"]


def _read_relabel(results: RunResults, art: Artifact, name: str) -> None:
    if str(art.attrs["source"]) == "learned":  # the ground-truth relabelling has no error to show
        results.relabel_stats = art.tree("stats")


def _read_sac_init(results: RunResults, art: Artifact, name: str) -> None:
    """sac-init's runs, and adapt's IWPA variants beside them (run `iwpa-<variant>`): one adaptation figure."""
    run, task = str(art.attrs["run"]), int(art.attrs["test_task"])
    results.sac_init.setdefault(run, {})[task] = art.tree("curves")


def _read_sac(results: RunResults, art: Artifact, name: str) -> None:
    if art.meta("params").get("split", "train") == "test":  # a test task's SAC (data.test_tasks): no baseline
        return
    task = art.meta("params")["task"]
    results.sac_final[task] = float(art.attrs["final_return"])
    results.sac_curves[task] = art.tree("curve")


def _read_bcq(results: RunResults, art: Artifact, name: str) -> None:
    task = art.meta("params")["task"]
    results.bcq_returns[task] = {"best": float(art.attrs["best_return"]), "final": float(art.attrs["final_return"])}
    results.bcq_curves[task] = art.tree("curve")


def _read_dataset(results: RunResults, art: Artifact, name: str) -> None:
    """Behaviour returns of a dataset's complete episodes, the D4RL-style check of what the data is worth."""
    from mtrl.data import episode_returns, return_stats
    from mtrl.envs.registry import get_family

    if results.config is None or art.attrs.get("split", "train") == "test":
        return  # the family's horizon, which tells complete episodes from cut ones, is unknown
    horizon = get_family(results.config["env"]["family"]).spec.horizon
    returns = episode_returns(art.array("rewards"), art.array("terminals"), art.array("timeouts"), horizon)
    kind = str(art.attrs["dataset_kind"]) if "dataset_kind" in art.attrs else "replay"
    results.dataset_returns.setdefault(kind, {})[int(art.attrs["task"])] = return_stats(returns)


def _read_cql(results: RunResults, art: Artifact, name: str) -> None:
    found = {"final_returns": art.array("final_returns"), "eval_curve": art.tree("eval_curve")}
    if "relabel_fractions" in art:
        found |= {key: art.array(key) for key in ("relabel_epochs", "relabel_fractions")}
    results.cql[str(art.attrs["dataset_kind"]), str(art.attrs["method"])] = found


def _read_sweep(results: RunResults, art: Artifact, name: str) -> None:
    results.sweeps[name] = {"trials": art.meta("trials"), "pick": int(art.attrs["pick"]),
                            "score_rule": str(art.attrs["score_rule"])}


_READERS = {"cql": _read_cql, "dataset": _read_dataset, "policy": _read_policy, "eval": _read_eval,
            "sweep": _read_sweep, "relabel": _read_relabel, "sac_init": _read_sac_init, "adapt": _read_sac_init,
            "sac": _read_sac, "bcq": _read_bcq}
