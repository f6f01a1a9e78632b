"""Combining the runs (seeds) of a report: every number a figure or table shows is computed here, once.

A number is kept per run and summarised as mean ± std over the runs that have it (std with ddof 0, as in the
papers' shaded bands); curves are compared on the x values (epochs, interactions) that all runs share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np

from mtrl import methods
from mtrl.configlib import flatten
from mtrl.errors import ConfigError
from mtrl.report.collect import RunResults

PER_TASK_COLUMNS = {  # Table 9 column -> how to read it from a run: {training task: value}
    "SAC final return": lambda run: run.sac_final,
    "BCQ best return": lambda run: {t: r["best"] for t, r in run.bcq_returns.items()},
    "BCQ final return": lambda run: {t: r["final"] for t, r in run.bcq_returns.items()},
    "eval/sac score": lambda run: _eval_per_task(run, "sac"),
    "eval/bcq score": lambda run: _eval_per_task(run, "bcq"),
    "eval: BCQ − SAC": lambda run: _eval_gap(run),  # the goal: BCQ within 1.0 of SAC
}


def _eval_per_task(run: RunResults, name: str) -> dict[int, float]:
    return {t: float(score) for t, score in enumerate(run.eval_task_scores.get(name, ()))}


def _eval_gap(run: RunResults) -> dict[int, float]:
    """BCQ (the snapshot later stages use) minus the SAC that collected its data, both through `mtrl evaluate`:
    the same protocol and episodes for both, unlike the training-time returns (BCQ's best is a max over its
    evaluations)."""
    sac, bcq = _eval_per_task(run, "sac"), _eval_per_task(run, "bcq")
    return {t: bcq[t] - sac[t] for t in bcq if t in sac}


def best_on_train(curve: dict[str, np.ndarray]) -> int:
    """Index of the evaluation during training with the highest training-task score (the first of equals).

    Picking the "best point" of a curve is a choice made after seeing scores. Picked on the test tasks, the reported
    test score would be the maximum of noisy numbers, selected on itself, and no longer an estimate of how the
    method does on unseen tasks. The training tasks are what a user of the method can see, so the choice is made on
    them alone; the test score at that point stays honest (its training score does not: it was selected on).
    """
    return int(np.argmax(curve["train_score"]))


PAPER_WINDOW_EPOCHS = 30  # the official plotting code's trailing window, in epochs (MBML Fig. 4)
PAPER_LAST_EPOCH = 600  # the papers' figures stop there: the maximum is taken over the first 600 epochs


def trailing_test_means(curve: dict[str, np.ndarray], window: int = PAPER_WINDOW_EPOCHS) -> np.ndarray:
    """At each evaluation during training (epoch e), the mean test-task score over the evaluations of epochs
    (e − window, e]: with `eval_every` epochs between evaluations, window / eval_every of them. NaN where the window
    is not yet full (e < window), as in a trailing mean over complete windows; a curve shorter than the window
    has one window, its whole length, at its last evaluation."""
    epochs, test = curve["epochs"], curve["test_score"]
    full = epochs >= min(window, epochs[-1])
    return np.array([test[(epochs > e - window) & (epochs <= e)].mean() if ok else np.nan
                     for e, ok in zip(epochs, full, strict=True)])


def selected_on_test(curve: dict[str, np.ndarray], window: int = PAPER_WINDOW_EPOCHS,
                     last_epoch: int = PAPER_LAST_EPOCH) -> int:
    """Index of the evaluation, among those up to `last_epoch` (the first one when none is), whose trailing mean of
    test-task scores (`trailing_test_means`) is the highest: the rule of the papers' figures (the maximum of a
    smoothed test curve over their first 600 epochs; the first of equals). Unlike `best_on_train`, it chooses on
    the test tasks, so its score is optimistic; the report labels it so and shows it only beside the two honest
    rules, so that our numbers can stand next to the papers'."""
    means = trailing_test_means(curve, window)
    shown = curve["epochs"] <= max(last_epoch, curve["epochs"][0])
    return int(np.nanargmax(np.where(shown, means, np.nan)))


@dataclass(frozen=True)
class Stat:
    """One number per run (run label -> value)."""

    per_run: dict[str, float]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_run.values())))

    @property
    def std(self) -> float:
        return float(np.std(list(self.per_run.values())))


@dataclass(frozen=True)
class Series:
    """One curve per run (run label -> y), on the x values that all of them share."""

    x: np.ndarray
    per_run: dict[str, np.ndarray]

    @property
    def mean(self) -> np.ndarray:
        return np.mean(list(self.per_run.values()), axis=0)

    @property
    def std(self) -> np.ndarray:
        return np.std(list(self.per_run.values()), axis=0)


def align(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Series:
    """Curves given as label -> (x, y), restricted to the x values common to all of them."""
    x = reduce(np.intersect1d, [cx for cx, _ in curves.values()])
    return Series(x, {label: cy[np.isin(cx, x)] for label, (cx, cy) in curves.items()})


@dataclass(frozen=True)
class RelabelSummary:
    matrices: dict[str, np.ndarray]  # statistic -> [K, K] (model task i, data task j), mean over runs
    off_diagonal: dict[str, Stat]  # statistic -> per run, the mean over ordered pairs i != j
    runs: list[str]  # the runs averaged (those whose task count matches the first run's)


@dataclass
class Summary:
    labels: list[str]  # one per run directory, in the order given
    family: str = "unknown"  # env.family of the runs ("A, B" if they differ)
    profile: str = "unknown"  # the runs' profile(s) (config key `profile`), "unknown" where not recorded
    smoke: bool = False  # some run used the `smoke` profile: its numbers are not results
    test_curves: dict[str, Series] = field(default_factory=dict)  # multi-task method -> test score vs epoch
    train_curves: dict[str, Series] = field(default_factory=dict)  # multi-task method -> training score vs epoch
    method_scores: dict[str, dict[str, Stat]] = field(default_factory=dict)  # method -> score name -> Stat
    # method -> "offline test"/"offline train" -> Stat: evaluate.context offline (eval/offline/), kept apart
    offline_scores: dict[str, dict[str, Stat]] = field(default_factory=dict)
    probes: dict[str, dict[str, Stat]] = field(default_factory=dict)  # method -> probe statistic -> Stat
    # method -> the probe's embeddings [K, sets, z] of the first run that has them (one run: a picture, not a mean)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings_run: str | None = None
    sac_init: dict[str, Series] = field(default_factory=dict)  # sac-init run -> mean return over test tasks
    sac_init_tasks: dict[str, dict[str, int]] = field(default_factory=dict)  # sac-init run -> run label -> tasks
    reach_target: float | None = None  # adapt.target_return: the return `reach` counts interactions to
    reach: dict[str, Stat] = field(default_factory=dict)  # adaptation run -> interactions to reach it (runs that did)
    reach_ratio: dict[str, Stat] = field(default_factory=dict)  # run -> SAC from scratch's interactions / its own
    collection: Series | None = None  # the collection SACs' evaluation return vs steps, mean over training tasks
    relabel: RelabelSummary | None = None
    per_task: dict[str, dict[int, Stat]] = field(default_factory=dict)  # Table 9 column -> task -> Stat
    per_task_mean: dict[str, Stat] = field(default_factory=dict)  # Table 9 column -> mean over tasks per run
    datasets: dict[str, dict[int, Stat]] = field(default_factory=dict)  # dataset kind -> task -> mean return
    stage_seconds: dict[str, Stat] = field(default_factory=dict)
    stage_eval_seconds: dict[str, Stat] = field(default_factory=dict)  # of which evaluation during training
    config_differences: dict[str, dict[str, Any]] = field(default_factory=dict)  # dotted key -> label -> value
    # the CQL family (seed 004): dataset kind -> method -> task index or "average" -> Stat (Table 1) ...
    cql_table: dict[str, dict[str, dict[int | str, Stat]]] = field(default_factory=dict)
    # ... (kind, task) -> method -> evaluation return vs epoch (Fig. 4) ...
    cql_curves: dict[tuple[str, int], dict[str, Series]] = field(default_factory=dict)
    # ... and HCSAC's admitted fraction of task j's data for task i at each relabelling: kind -> "j → i" -> Series
    cql_relabel: dict[str, dict[str, Series]] = field(default_factory=dict)

    @property
    def methods(self) -> dict[str, Series]:
        """Fig. 4: MBML and the baselines. The ablations would crowd it and belong to Fig. 6."""
        return {name: s for name, s in self.test_curves.items() if role(name) in ("method", "baseline")}

    @property
    def ablations(self) -> dict[str, Series]:
        """Fig. 6: MBML and its ablations, and their ground-truth-relabelling versions where trained."""
        return {name: s for name, s in self.test_curves.items() if role(name) in ("method", "ablation")}


def role(name: str) -> str:
    """The registry's role of a policy name; a name no longer registered is shown with the baselines."""
    try:
        return methods.get_method(name.removesuffix(methods.GROUND_TRUTH_SUFFIX)).role
    except ConfigError:
        return "baseline"


def summarise(runs: list[RunResults]) -> Summary:
    labels = run_labels(runs)
    by_label = dict(zip(labels, runs, strict=True))
    summary = Summary(labels, family=_joined(run.config["env"]["family"] if run.config else None for run in runs),
                      profile=_joined(run.profile for run in runs), smoke=any(run.profile == "smoke" for run in runs))
    _methods(summary, by_label)
    _embeddings(summary, by_label)
    _sac_init(summary, by_label)
    summary.relabel = _relabel(by_label)
    _per_task(summary, by_label)
    summary.datasets = _datasets(by_label)
    collection = {label: run.sac_curves for label, run in by_label.items() if run.sac_curves}
    summary.collection = _mean_over_tasks(collection) if collection else None
    summary.stage_seconds = _stage_seconds({label: run.stage_seconds for label, run in by_label.items()})
    summary.stage_eval_seconds = _stage_seconds({label: run.stage_eval_seconds for label, run in by_label.items()})
    summary.config_differences = _config_differences(by_label)
    _cql(summary, by_label)
    return summary


def _cql(summary: Summary, by_label: dict[str, RunResults]) -> None:
    """Table 1 (final returns per kind, method and task, and their mean over tasks per run first), Fig. 4's
    curves and HCSAC's relabelled fractions, from the train-cql artifacts."""
    from mtrl.algos.cql import CQL_METHODS

    found = sorted({key for run in by_label.values() for key in run.cql},
                   key=lambda km: (km[0], CQL_METHODS.index(km[1]) if km[1] in CQL_METHODS else len(CQL_METHODS)))
    for kind, method in found:
        runs = {label: run.cql[kind, method] for label, run in by_label.items() if (kind, method) in run.cql}
        finals = {label: r["final_returns"] for label, r in runs.items()}
        cells: dict[int | str, Stat] = {t: Stat({label: float(f[t]) for label, f in finals.items() if t < len(f)})
                                        for t in range(max(len(f) for f in finals.values()))}
        cells["average"] = Stat({label: float(f.mean()) for label, f in finals.items()})
        summary.cql_table.setdefault(kind, {})[method] = cells
        for t in range(len(cells) - 1):
            key = f"task_{t:02d}"
            curves = {label: (r["eval_curve"]["epochs"], r["eval_curve"][key]) for label, r in runs.items()
                      if key in r["eval_curve"]}
            summary.cql_curves.setdefault((kind, t), {})[method] = align(curves)
        rounds = {label: r for label, r in runs.items() if "relabel_fractions" in r}
        k = len(cells) - 1
        for i, j in ((i, j) for i in range(k) for j in range(k) if i != j and rounds):
            summary.cql_relabel.setdefault(kind, {})[f"{j} → {i}"] = align(
                {label: (r["relabel_epochs"], r["relabel_fractions"][:, i, j]) for label, r in rounds.items()})


def run_labels(runs: list[RunResults]) -> list[str]:
    """Run directory names, or their full paths where two names coincide."""
    names = [run.run_dir.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run.run_dir) for run in runs]


def _joined(values) -> str:
    """The distinct values in first-seen order, "unknown" for None, joined by commas."""
    return ", ".join(dict.fromkeys("unknown" if v is None else str(v) for v in values))


def method_order(names) -> list[str]:
    """The registry's order (MBML, its ablations, the baselines), ground-truth versions after the learned ones,
    then any unregistered name alphabetically."""
    registered = methods.names()
    ordered = [*registered, *(n + methods.GROUND_TRUTH_SUFFIX for n in methods.names("distill"))]
    rank = {name: i for i, name in enumerate(ordered)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def _methods(summary: Summary, runs: dict[str, RunResults]) -> None:
    names = {name for run in runs.values() for name in (*run.policy_curves, *run.eval_summaries)}
    offline = {name for run in runs.values() for name in run.offline_eval_summaries}
    for method in method_order(offline):
        stats = {f"offline {split}": Stat({label: run.offline_eval_summaries[method][f"{split}_score"]
                                           for label, run in runs.items() if method in run.offline_eval_summaries})
                 for split in ("test", "train")}
        summary.offline_scores[method] = stats
    for method in method_order(names - set(methods.PER_TASK_BASELINES)):
        curves = {label: run.policy_curves[method] for label, run in runs.items() if method in run.policy_curves}
        if curves:
            summary.test_curves[method] = align({label: (c["epochs"], c["test_score"]) for label, c in curves.items()})
            summary.train_curves[method] = align({lb: (c["epochs"], c["train_score"]) for lb, c in curves.items()})
        best = {label: best_on_train(c) for label, c in curves.items()}
        scores = {}
        for split in ("test", "train"):  # final policy: `mtrl evaluate`, and the curve's last point
            scores[f"eval {split}"] = Stat({label: run.eval_summaries[method][f"{split}_score"]
                                            for label, run in runs.items() if method in run.eval_summaries})
            scores[f"last {split}"] = Stat({lb: float(c[f"{split}_score"][-1]) for lb, c in curves.items()})
        scores["best-on-train epoch"] = Stat({lb: float(c["epochs"][best[lb]]) for lb, c in curves.items()})
        for split in ("test", "train"):
            scores[f"best-on-train {split}"] = Stat({lb: float(c[f"{split}_score"][best[lb]])
                                                     for lb, c in curves.items()})
        chosen = {label: selected_on_test(c) for label, c in curves.items()}
        scores["test-selected test"] = Stat({lb: float(trailing_test_means(c)[chosen[lb]]) for lb, c in curves.items()})
        scores["test-selected epoch"] = Stat({lb: float(c["epochs"][chosen[lb]]) for lb, c in curves.items()})
        summary.method_scores[method] = {name: stat for name, stat in scores.items() if stat.per_run}
        probes = {label: run.probes[method] for label, run in runs.items() if method in run.probes}
        if probes:
            keys = next(iter(probes.values()))
            summary.probes[method] = {key: Stat({lb: p[key] for lb, p in probes.items()}) for key in keys}


def _embeddings(summary: Summary, runs: dict[str, RunResults]) -> None:
    """Every method's embeddings from one run, the first that has any, so the methods share one run's data."""
    label = next((label for label, run in runs.items() if run.embeddings), None)
    if label is not None:
        summary.embeddings_run = label
        summary.embeddings = {m: runs[label].embeddings[m] for m in method_order(runs[label].embeddings)}


def _sac_init(summary: Summary, runs: dict[str, RunResults]) -> None:
    names = {name for run in runs.values() for name in run.sac_init}
    for name in method_order(names):
        per_run = {label: run.sac_init[name] for label, run in runs.items() if run.sac_init.get(name)}
        summary.sac_init_tasks[name] = {label: len(tasks) for label, tasks in per_run.items()}
        summary.sac_init[name] = _mean_over_tasks(per_run)
    targets = [run.config.get("adapt", {}).get("target_return") for run in runs.values() if run.config]
    summary.reach_target = next((t for t in targets if t is not None), None)
    if summary.reach_target is not None:
        _reach(summary, summary.reach_target)


SCRATCH = "random"  # sac-init's SAC from scratch: the reference of the interactions ratio


def _reach(summary: Summary, target: float) -> None:
    """Per adaptation run and seed, the interactions of the first evaluation whose mean over test tasks reaches
    `target` (seeds that never do are left out), and SAC from scratch's count divided by it, seed by seed."""
    for name, series in summary.sac_init.items():
        reached = {label: float(series.x[np.argmax(y >= target)]) for label, y in series.per_run.items()
                   if (y >= target).any()}
        summary.reach[name] = Stat(reached)
    scratch = summary.reach.get(SCRATCH, Stat({})).per_run
    for name, stat in summary.reach.items():
        summary.reach_ratio[name] = Stat({label: scratch[label] / steps for label, steps in stat.per_run.items()
                                          if label in scratch and steps > 0})


def _mean_over_tasks(curves: dict[str, dict[int, dict[str, np.ndarray]]]) -> Series:
    """Online SAC curves (run label -> task -> {steps, return_mean}): per run, the mean over its tasks at the
    steps they share; then aligned across runs."""
    per_run = {}
    for label, tasks in curves.items():
        over_tasks = align({str(t): (c["steps"], c["return_mean"]) for t, c in tasks.items()})
        per_run[label] = (over_tasks.x, over_tasks.mean)
    return align(per_run)


def _relabel(runs: dict[str, RunResults]) -> RelabelSummary | None:
    stats = {label: run.relabel_stats for label, run in runs.items() if run.relabel_stats is not None}
    if not stats:
        return None
    shape = next(iter(stats.values()))["keep_fraction"].shape
    stats = {label: s for label, s in stats.items() if s["keep_fraction"].shape == shape}
    off = ~np.eye(shape[0], dtype=bool)
    keys = [k for k in ("error_all", "error_kept", "keep_fraction") if all(k in s for s in stats.values())]
    return RelabelSummary(
        matrices={k: np.mean([s[k] for s in stats.values()], axis=0) for k in keys},
        off_diagonal={k: Stat({label: float(np.nanmean(s[k][off])) for label, s in stats.items()}) for k in keys},
        runs=list(stats))


def _per_task(summary: Summary, runs: dict[str, RunResults]) -> None:
    for column, read in PER_TASK_COLUMNS.items():
        values = {label: read(run) for label, run in runs.items()}
        values = {label: v for label, v in values.items() if v}
        if not values:
            continue
        tasks = sorted({t for v in values.values() for t in v})
        summary.per_task[column] = {t: Stat({lb: float(v[t]) for lb, v in values.items() if t in v}) for t in tasks}
        summary.per_task_mean[column] = Stat({lb: float(np.mean(list(v.values()))) for lb, v in values.items()})


def _datasets(runs: dict[str, RunResults]) -> dict[str, dict[int, Stat]]:
    """Mean behaviour return per dataset kind (in `DATASET_KINDS` order) and task, as Stats over runs."""
    from mtrl.data import DATASET_KINDS

    found = {kind for run in runs.values() for kind in run.dataset_returns}
    return {kind: {task: Stat({label: run.dataset_returns[kind][task]["mean"] for label, run in runs.items()
                               if task in run.dataset_returns.get(kind, {})})
                   for task in sorted({t for run in runs.values() for t in run.dataset_returns.get(kind, {})})}
            for kind in DATASET_KINDS if kind in found}


def _stage_seconds(per_run: dict[str, dict[str, float]]) -> dict[str, Stat]:
    """Run label -> stage -> seconds, as stage -> Stat, in pipeline order."""
    from mtrl.pipeline.registry import PIPELINE

    stages = sorted({s for seconds in per_run.values() for s in seconds},
                    key=lambda s: (list(PIPELINE).index(s) if s in PIPELINE else len(PIPELINE), s))
    return {s: Stat({label: seconds[s] for label, seconds in per_run.items() if s in seconds}) for s in stages}


def _config_differences(runs: dict[str, RunResults]) -> dict[str, dict[str, Any]]:
    """Config keys (dotted) whose values differ between runs, other than the seed."""
    flat = {label: flatten(run.config) for label, run in runs.items() if run.config is not None}
    keys = sorted({k for f in flat.values() for k in f} - {"seed"})
    return {k: {label: f.get(k, "(absent)") for label, f in flat.items()} for k in keys
            if len({repr(f.get(k, "(absent)")) for f in flat.values()}) > 1}
