"""results.md: every number behind the figures, per run and as mean ± std over runs, with the provenance
needed to trust them (seeds, config and its differences between runs, artifact fingerprints, stage wall times)
and what is missing.
"""

from __future__ import annotations

import math
from math import nan
from typing import Any

import yaml

from mtrl.report.aggregate import PAPER_LAST_EPOCH, PAPER_WINDOW_EPOCHS, Series, Stat, Summary, method_order, role
from mtrl.report.collect import RunResults
from mtrl.rl.health import failures, thresholds

SPREAD = "mean ± std over runs (seeds; std with ddof 0; n: the number of runs)"


def render(runs: list[RunResults], summary: Summary, figures: dict[str, str]) -> str:
    sections = [
        _runs(runs, summary),
        _missing(runs, summary),
        _methods(summary, figures),
        _sweeps(runs, summary),
        _cql(summary, figures),
        _probe(summary, figures),
        _health(runs, summary),
        _relabel(summary, figures),
        _sac_init(summary, figures),
        _per_task(runs, summary),
        _datasets(runs, summary),
        _wall_time(summary),
        _config(runs, summary),
        _fingerprints(runs, summary),
    ]
    return "\n\n".join(s.strip() for s in sections) + "\n"


def _runs(runs: list[RunResults], summary: Summary) -> str:
    rows = [[label, f"`{run.run_dir}`", _value(run.seed), _value(run.profile), str(len(run.fingerprints)),
             f"{min(run.created)} – {max(run.created)}"] for label, run in zip(summary.labels, runs, strict=True)]
    seeds = [run.seed for run in runs]
    repeated = " Some runs share a seed: they are not independent repetitions." if len(set(seeds)) < len(seeds) else ""
    return (f"# mtrl report: {summary.family}, profile {summary.profile}\n\n{_warnings(runs, summary)}"
            f"{len(runs)} run(s), seeds {', '.join(map(_value, seeds))}. Numbers are {SPREAD} "
            f"unless per run.{repeated}\n\n"
            + _table(["run", "directory", "seed", "profile", "artifacts read", "created (first – last)"], rows))


def _warnings(runs: list[RunResults], summary: Summary) -> str:
    """What the reader must know before any number: a smoke run is no result, and an unknown profile may be one."""
    parts = []
    if summary.smoke:
        parts.append("> **Smoke profile: these numbers are not results.** The `smoke` profile only checks that every "
                     "stage runs, with tiny networks and budgets; do not compare or quote its numbers.")
    unknown = [label for label, run in zip(summary.labels, runs, strict=True) if run.profile is None]
    if unknown:
        parts.append(f"> **Profile unknown** for {', '.join(unknown)}: its config.yaml records none (config key "
                     "`profile`: made from a config file without --profile, or by an mtrl before issue 14). Check how "
                     "the runs were made before reading these numbers as results.")
    return "".join(f"{p}\n\n" for p in parts)


def _missing(runs: list[RunResults], summary: Summary) -> str:
    parts = ["## Missing artifacts"]
    for label, run in zip(summary.labels, runs, strict=True):
        if run.missing:
            parts.append(f"{label}: {run.missing_count} expected artifact(s) missing or unreadable "
                         "(figures and tables below use what exists):\n\n"
                         + "\n".join(f"- `{item}`" for item in run.missing))
    if len(parts) == 1:
        parts.append("None: every artifact the runs' configs expect is present.")
    return "\n\n".join(parts)


FINAL_COLUMNS = {"test (evaluate)": "eval test", "train (evaluate)": "eval train",
                 "test (last training eval.)": "last test", "train (last training eval.)": "last train"}
OFFLINE_COLUMNS = {"test (offline context)": "offline test", "train (offline context)": "offline train"}
BEST_COLUMNS = {"test": "best-on-train test", "train (selected on)": "best-on-train train",
                "epoch (per run)": "best-on-train epoch"}
TEST_SELECTED_COLUMNS = {f"test ({PAPER_WINDOW_EPOCHS}-epoch trailing mean, max)": "test-selected test",
                         "epoch (per run)": "test-selected epoch"}


def _methods(summary: Summary, figures: dict[str, str]) -> str:
    if not summary.method_scores:
        return "## Multi-task methods (Fig. 4, Fig. 6)\n\nNo multi-task policy or evaluation found."
    scores = summary.method_scores
    columns = {f"final: {name}": key for name, key in FINAL_COLUMNS.items()}
    columns |= {f"best-on-train: {name}": key for name, key in BEST_COLUMNS.items()}
    columns |= {f"selected on test: {name}": key for name, key in TEST_SELECTED_COLUMNS.items()}
    per_run = [[method, label, *(_num(s[key].per_run[label]) if key in s and label in s[key].per_run else "—"
                                 for key in columns.values())]
               for method, s in scores.items() for label in summary.labels]
    parts = ["## Multi-task methods (Fig. 4, Fig. 6)",
             _image(figures, "fig4", "Fig. 4: MBML and the baselines"),
             _image(figures, "fig6", "Fig. 6: MBML and its ablations"),
             "Average return over tasks (mean of the episodes after the skipped ones, Alg. 5). Each table names the "
             f"rule that picks the policy it scores. {SPREAD}.",
             "### Final policy",
             "**Rule: final policy**, the weights at the end of training. *evaluate*: `mtrl evaluate` "
             "(`eval/<method>.h5`, `evaluate.repeats` runs of the protocol); *last training eval.*: the last point "
             "of the evaluation during training (`policies/<method>.h5` eval_curve, one run of the protocol).",
             _score_table(scores, FINAL_COLUMNS),
             *_offline(summary),
             "### Best point during training, selected on the training tasks",
             "**Rule: best-on-train point.** In each run, the evaluation during training with the highest "
             "*training-task* score (the first of equals; `mtrl.report.aggregate.best_on_train`); the table gives "
             "that point's test-task score, its training-task score and its epoch. The test tasks play no part in "
             "the choice. The training score is optimistic, being the one selected on; the test score is not. "
             "Only the curve's scores exist for that point: its weights are not kept.",
             _score_table(scores, BEST_COLUMNS),
             *_test_selected(scores),
             "Per run:", _table(["method", "run", *columns], per_run),
             "Test-task score per evaluation during training (the curves of Fig. 4 and Fig. 6):",
             _series_table("test curve", "epoch", summary.test_curves, summary.labels),
             "Training-task score per evaluation during training (what the best-on-train rule selects on):",
             _series_table("train curve", "epoch", summary.train_curves, summary.labels)]
    return "\n\n".join(p for p in parts if p)


def _test_selected(scores: dict[str, dict[str, Stat]]) -> list[str]:
    """The papers' figures' rule, labelled as chosen on the test tasks, so our numbers can stand beside theirs."""
    return ["### Selected on test tasks (as the paper's figures)",
            f"**Rule: selected on test tasks (as the paper's figures).** The official plotting code's number: in each "
            f"run, the test-task score averaged over the evaluations of the last {PAPER_WINDOW_EPOCHS} epochs "
            f"(`{PAPER_WINDOW_EPOCHS} / eval_every` evaluations; complete windows only, or the whole curve when "
            f"training is shorter), at the epoch up to {PAPER_LAST_EPOCH} where that trailing mean is highest "
            "(`mtrl.report.aggregate.selected_on_test`). The test tasks choose the point, so the score is "
            "optimistic: it is not an estimate of how the method does on unseen tasks. Compare it with the papers' "
            "figures only; rank methods by the final-policy rule.",
            _score_table(scores, TEST_SELECTED_COLUMNS)]


def _sweeps(runs: list[RunResults], summary: Summary) -> str:
    """The trials of each `mtrl sweep` and the training-task scores that chose the method's policy, per run."""
    if not any(run.sweeps for run in runs):
        return ""
    parts = ["## Sweeps (`mtrl sweep`)",
             "Each swept method was trained once per setting of its grid; each trial is scored on the training tasks "
             "only, and the pick (✓, the highest score) is the method's policy in every table above. Test-task "
             "scores play no part in the choice."]
    for label, run in zip(summary.labels, runs, strict=True):
        for name, sweep in run.sweeps.items():
            keys = list(dict.fromkeys(key for trial in sweep["trials"] for key in trial["values"]))
            rows = [[f"`{trial['artifact']}`", *(_value(trial["values"].get(key)) for key in keys),
                     _num(trial["train_score"]), "✓" if i == sweep["pick"] else ""]
                    for i, trial in enumerate(sweep["trials"])]
            parts += [f"{name}, run {label} (score: {sweep['score_rule']}):",
                      _table(["trial", *(f"`{key}`" for key in keys), "training-task score", "picked"], rows)]
    return "\n\n".join(parts)


def _offline(summary: Summary) -> list[str]:
    """FOCAL's meta-test scores, a table of their own: a different protocol from the online ones above."""
    if not summary.offline_scores:
        return []
    return ["### Final policy, offline context (FOCAL's meta-test)",
            "**Rule: final policy**, evaluated with `evaluate.context: offline` (`eval/offline/<method>.h5`): each "
            "task's z is inferred once from `evaluate.offline_context_size` rows of that task's own offline dataset "
            "(test tasks: `datasets/test/`, made with `data.test_tasks`), every episode counted. Not comparable "
            "with the online-context scores above, which gather their context in the task (Alg. 5).",
            _score_table(summary.offline_scores, OFFLINE_COLUMNS)]


def _score_table(scores: dict[str, dict[str, Stat]], columns: dict[str, str]) -> str:
    """One row per method; epochs are listed per run (a mean epoch is no point of any curve)."""
    def cell(stat: Stat | None, key: str) -> str:
        if stat is None:
            return "—"
        return ", ".join(map(_num, stat.per_run.values())) if key.endswith("epoch") else _pm(stat)

    rows = [[method, *(cell(s.get(key), key) for key in columns.values())] for method, s in scores.items()]
    return _table(["method", *columns], rows)


HEALTH_COLUMNS = ["method", "KL (nats)", "separability: training / scored episodes",
                  "identification: offline / online (scored episodes)", "train score: offline context / online",
                  "gap to the BCQ teachers: offline / online"]


def _health(runs: list[RunResults], summary: Summary) -> str:
    """Per run, whether each context method's task embedding tells the training tasks apart (`mtrl.rl.health`),
    and how far each distilled student is from its teachers on the training tasks; a line per failed threshold."""
    parts = []
    for label, run in zip(summary.labels, runs, strict=True):
        if not run.health:
            continue
        rows, warnings = [], []
        teachers = run.eval_summaries.get("bcq", {}).get("train_score")
        for method in method_order(run.health):
            health, k = run.health[method], len(run.health[method]["centroids"])
            skip = health["skip_episodes"]
            online = run.eval_summaries[method]["train_score"]
            offline = float(health["train_offline_scores"].mean())
            distilled = teachers is not None and role(method) in ("method", "ablation")
            rows.append([method, _num(health["kl"][0]),
                         f"{_num(health['separability'][0])} / {_num(min(health['separability'][1:], default=nan))}",
                         f"{_num(health['identification'][0])} / "
                         f"{_num(float(health['identification_online'][skip:].mean()))}",
                         f"{_num(offline)} / {_num(online)}",
                         f"{_num(teachers - offline)} / {_num(teachers - online)}" if distilled else "—"])
            warnings += [f"- **{method}**: {line}" for line in failures(health, k, skip)]
        k = len(next(iter(run.health.values()))["centroids"])
        parts += [f"### {label}", _table(HEALTH_COLUMNS, rows),
                  "Failed thresholds:\n\n" + "\n".join(warnings) if warnings else "Every threshold passed."]
    if not parts:
        return ""
    limits = thresholds(k)
    return "\n\n".join([
        "## Task-inference health (`mtrl.rl.health`)",
        "Does each context method's task embedding z tell the training tasks apart? Measured by `mtrl evaluate` "
        "on the training tasks' own offline data and on the beliefs the protocol acted with "
        f"(`evaluate.belief`). *KL*: KL(q(z|c) ‖ N(0, I)) of training-size contexts, at least ln K = "
        f"{limits['kl']:.2f} to name one of K tasks (— for deterministic encoders). *Separability*: distance between "
        "task centroids over the per-dimension spread of one task's beliefs, at the training context size and "
        f"(the worst of) the sizes the scored episodes see; at least {limits['separability']:g}. *Identification*: "
        "share of beliefs nearest their own task's centroid, from training-size offline contexts and online in the "
        f"scored episodes; at least {limits['identification']:g}. *Train score, offline context*: the policy on the "
        "training tasks with z from a training-size context of the task's own data; *online*: `mtrl evaluate`'s "
        "training-task score. *Gap*: the per-task BCQ teachers' training-task score (`eval/bcq.h5`, the same "
        "episodes) minus the student's, for MBML and its ablations.",
        *parts])


def _probe(summary: Summary, figures: dict[str, str]) -> str:
    if not summary.probes:
        return ""
    keys = list(next(iter(summary.probes.values())))
    rows = [[method, *(_pm(stats[key]) for key in keys)] for method, stats in summary.probes.items()]
    return "\n\n".join([
        "## Does task inference read the rewards? (`mtrl.rl.probe`)",
        "Context sets from task j's transitions carrying the rewards of task i (its true reward function), placed "
        "by each method's encoder: *follows rewards* is the share assigned to task i's embedding, *follows "
        "state-actions* the share assigned to task j's (mean over ordered pairs i ≠ j); *own-task accuracy*: "
        f"unaltered sets assigned to their own task. {SPREAD}.",
        _table(["method", *keys], rows),
        *([_image(figures, "embeddings", "task embeddings"),
           f"The embeddings (posterior means; FOCAL's deterministic z) of `evaluate.probe_sets` context sets of "
           f"`evaluate.probe_context_size` rows from each training task's own data, run {summary.embeddings_run}, "
           "projected on their first two principal components per method (axis labels: the share of variance "
           "each keeps), coloured by task (FOCAL's Fig. 2a)."] if "embeddings" in figures else [])])


def _relabel(summary: Summary, figures: dict[str, str]) -> str:
    relabel = summary.relabel
    if relabel is None:
        return "## Relabelling (Fig. 7)\n\nNo relabel.h5 found."
    parts = ["## Relabelling (Fig. 7)", _image(figures, "fig7", "Fig. 7"),
             f"Learned relabelling (`relabel.h5` stats) averaged over {', '.join(relabel.runs)}. Per ordered "
             "pair (model of task i, data of task j): mean |relabelled − true reward| over all rows and over the "
             "rows kept (ensemble std below the threshold), and the fraction kept. The figure leaves the diagonal "
             "(a task's own data) blank; the tables below include it."]
    if "error_all" not in relabel.matrices:
        parts.append("These tasks differ in dynamics: there is no single true reward to compare with, so only the "
                     "keep fraction is shown.")
    rows = [[key, _pm(stat), *(_num(stat.per_run[label]) for label in relabel.runs)]
            for key, stat in relabel.off_diagonal.items()]
    parts += ["Mean over pairs i ≠ j:", _table(["statistic", "mean ± std", *relabel.runs], rows)]
    for key, matrix in relabel.matrices.items():
        k = len(matrix)
        parts += [f"`{key}` per pair (rows: model i, columns: data j; mean over runs):",
                  _table(["i \\ j", *map(str, range(k))], [[str(i), *map(_num, matrix[i])] for i in range(k)])]
    return "\n\n".join(p for p in parts if p)


def _sac_init(summary: Summary, figures: dict[str, str]) -> str:
    if not summary.sac_init:
        return "## Adaptation on test tasks (Fig. 8)\n\nNo sac_init or adapt artifacts found."
    rows = [[name, ", ".join(f"{lb}: {n}" for lb, n in summary.sac_init_tasks[name].items()),
             *([_num(s.x[-1]), _pm(Stat({lb: float(y[-1]) for lb, y in s.per_run.items()}))]
               if len(s.x) else ["—", "—"]),
             str(len(s.per_run))]
            for name, s in summary.sac_init.items()]
    return "\n\n".join(p for p in [
        "## Adaptation on test tasks (Fig. 8)", _image(figures, "fig8", "Fig. 8"),
        "SAC on the unseen test tasks (`sac_init/<run>/task_NN.h5`) and IWPA's variants (`adapt/<variant>/"
        "task_NN.h5`, run `iwpa-<variant>`): evaluation return averaged over the test tasks of a run, then "
        f"{SPREAD}. Interactions are the run's own: IWPA's prior warm-up included; the SAC-initialised runs' "
        "rollout comes on top (IWPA's pretraining is on the training tasks).",
        _table(["run", "test tasks per run", "last interactions", "return", "runs"], rows),
        _reach_table(summary),
        "Per evaluation:", _series_table("run", "interactions", summary.sac_init, summary.labels)] if p)


def _reach_table(summary: Summary) -> str:
    """Interactions to reach adapt.target_return, and the ratio to SAC from scratch (seed 003's claim)."""
    if summary.reach_target is None:
        return ""
    rows = [[name, f"{len(stat.per_run)} of {len(summary.sac_init[name].per_run)}",
             _pm(stat) if stat.per_run else "not reached",
             _pm(summary.reach_ratio[name]) if summary.reach_ratio[name].per_run else "—"]
            for name, stat in summary.reach.items()]
    return "\n\n".join([
        f"Interactions until the mean return over the test tasks first reaches {_num(summary.reach_target)} "
        f"(adapt.target_return; seeds that never do are left out of the mean), and SAC from scratch's "
        f"(`random`) interactions divided by the run's, seed by seed (> 1: faster than from scratch):",
        _table(["run", "seeds reaching it", "interactions", "ratio scratch / run"], rows)])


def _cql(summary: Summary, figures: dict[str, str]) -> str:
    """Seed 004's Table 1 (and Fig. 4's curves, HCSAC's relabelled fractions, a Fig. 7-like record)."""
    if not summary.cql_table:
        return ""
    methods = list(dict.fromkeys(m for by_method in summary.cql_table.values() for m in by_method))
    rows = []
    for kind, by_method in summary.cql_table.items():
        tasks = sorted({t for cells in by_method.values() for t in cells if t != "average"})
        for t in [*tasks, "average"]:
            rows.append([kind, t if t == "average" else f"task_{t:02d}",
                         *(_pm(by_method[m][t]) if m in by_method and t in by_method[m] else "—" for m in methods)])
    curves = {f"{kind} task_{t:02d} {method}": series for (kind, t), by_method in summary.cql_curves.items()
              for method, series in by_method.items()}
    parts = [
        "## The CQL family (seed 004, Table 1)",
        "Return on each training task of the agent after training (`cql/<kind>/<method>.h5`: the mean of the last "
        "`cql.final_evaluations` online evaluations, `cql.eval_episodes` episodes each, mean action), per dataset "
        f"kind; *average* averages a run's tasks first. {SPREAD}. On WalkerWalkRun task_00 is walk, task_01 run.",
        _table(["dataset", "task", *methods], rows),
        *(_image(figures, f"cql_{kind}_{t}", f"{kind} task_{t:02d}") for kind, t in summary.cql_curves),
        "Evaluation return during training (Fig. 4):", _series_table("curve", "epoch", curves, summary.labels)]
    for kind, pairs in summary.cql_relabel.items():
        parts += [f"HCSAC on {kind}: fraction of task j's transitions admitted to task i (j → i) at each "
                  "relabelling (Alg. 1):", _image(figures, f"cql_relabel_{kind}", f"HCSAC relabelling, {kind}"),
                  _series_table("j → i", "epoch", pairs, summary.labels)]
    return "\n\n".join(p for p in parts if p)


def _by_task_rows(table: dict) -> tuple[list, list[int], list[list[str]]]:
    """The columns, the tasks and one row per task (mean ± std, — where a column lacks the task) of a
    {column: {task: Stat}} table."""
    columns = list(table)
    tasks = sorted({t for by_task in table.values() for t in by_task})
    rows = [[f"task_{t:02d}", *(_pm(table[c][t]) if t in table[c] else "—" for c in columns)] for t in tasks]
    return columns, tasks, rows


def _per_task(runs: list[RunResults], summary: Summary) -> str:
    if not summary.per_task:
        return "## Per-task SAC and BCQ (Table 9)\n\nNo sac/, bcq/, eval/sac.h5 or eval/bcq.h5 artifacts found."
    columns, tasks, rows = _by_task_rows(summary.per_task)
    rows.append(["mean over tasks", *(_pm(summary.per_task_mean[c]) for c in columns)])
    per_run = [[f"task_{t:02d}", label, *(_num(summary.per_task[c][t].per_run[label])
                                         if t in summary.per_task[c] and label in summary.per_task[c][t].per_run
                                         else "—" for c in columns)]
               for t in tasks for label in summary.labels]
    snapshots = ", ".join(sorted({str(run.config["bcq"]["snapshot"]) for run in runs if run.config})) or "unknown"
    return "\n\n".join([
        "## Per-task SAC and BCQ (Table 9)",
        "Per training task: the final evaluation return of the SAC that collected its data (`sac/task_NN.h5`), "
        "the best and final evaluation return of its BCQ (`bcq/task_NN.h5`; *best* is the maximum over its "
        "evaluations, so optimistic), and the `mtrl evaluate` scores of both (`eval/sac.h5`, `eval/bcq.h5`), "
        f"where BCQ is the snapshot later stages use (`bcq.snapshot`: {snapshots}). *eval: BCQ − SAC* compares "
        f"the two on the same protocol. {SPREAD}; the last row averages the tasks of each run first.",
        _table(["task", *columns], rows), "Per run:", _table(["task", "run", *columns], per_run),
        *_collection(summary)])


def _datasets(runs: list[RunResults], summary: Summary) -> str:
    if not summary.datasets:
        return ""
    kinds, tasks, rows = _by_task_rows(summary.datasets)
    per_run = []
    for run, label in zip(runs, summary.labels, strict=True):
        for t in tasks:
            cells = []
            for k in kinds:
                stats = run.dataset_returns.get(k, {}).get(t)
                cells.append("—" if stats is None else
                             f"{_num(stats['mean'])} ± {_num(stats['std'])} [{_num(stats['min'])}, "
                             f"{_num(stats['max'])}] ({stats['episodes']} ep.)")
            per_run.append([f"task_{t:02d}", label, *cells])
    return "\n\n".join([
        "## Behaviour data per dataset kind",
        "Return of the behaviour data in each training task's dataset of each kind (docs/datasets.md): the mean "
        "over its complete episodes (those ending by termination or at the horizon; an episode cut by the "
        f"dataset's size is left out). {SPREAD}.",
        _table(["task", *kinds], rows),
        "Per run: mean ± std over episodes [min, max] (episodes):", _table(["dataset of", "run", *kinds], per_run)])


def _collection(summary: Summary) -> list[str]:
    """Did the SACs that collected the data learn? Their evaluation during collection, the first check of a run."""
    if summary.collection is None:
        return []
    return ["Collection SAC during training: deterministic evaluation return (`collect.eval_episodes` episodes) "
            f"averaged over the training tasks of a run, then {SPREAD}.",
            _series_table("collection", "interactions", {"SAC": summary.collection}, summary.labels)]


def _wall_time(summary: Summary) -> str:
    evaluation = summary.stage_eval_seconds

    def of_which(stage: str) -> str:
        stat = evaluation.get(stage)
        return "—" if stat is None or stat.mean == 0 else _num(stat.mean)

    rows = [[stage, _num(stat.mean), of_which(stage),
             *(_num(stat.per_run.get(label, math.nan)) for label in summary.labels)]
            for stage, stat in summary.stage_seconds.items()]
    totals = [sum(stat.per_run.get(label, 0.0) for stat in summary.stage_seconds.values())
              for label in summary.labels]
    eval_total = sum(stat.mean for stat in evaluation.values())
    rows.append(["total", _num(sum(totals) / len(totals)), _num(eval_total) if eval_total else "—",
                 *map(_num, totals)])
    return ("## Stage wall time\n\nSeconds per stage: the sum over its units of each unit's `wall_seconds` "
            "(recorded in its artifacts), mean over runs; *of which evaluation*: the part spent evaluating during "
            "training (`eval_seconds`; — where none was recorded).\n\n"
            + _table(["stage", "mean", "of which evaluation", *summary.labels], rows))


def _config(runs: list[RunResults], summary: Summary) -> str:
    if summary.config_differences:
        rows = [[f"`{key}`", *(_value(values.get(label, "(no config)")) for label in summary.labels)]
                for key, values in summary.config_differences.items()]
        differences = "The runs' configs differ (apart from the seed) in:\n\n" + _table(["key", *summary.labels], rows)
    else:
        differences = "The runs' configs are identical apart from the seed."
    configured = [(label, run.config) for label, run in zip(summary.labels, runs, strict=True) if run.config]
    if not configured:
        return f"## Config\n\n{differences}\n\nNo run has a config.yaml."
    label, config = configured[0]
    text = yaml.safe_dump(config, sort_keys=False).strip()
    return f"## Config\n\n{differences}\n\nResolved config of {label}:\n\n```yaml\n{text}\n```"


def _fingerprints(runs: list[RunResults], summary: Summary) -> str:
    paths = sorted({p for run in runs for p in run.fingerprints})
    rows = [[f"`{p}`", *(f"`{run.fingerprints[p]}`" if p in run.fingerprints else "—" for run in runs)]
            for p in paths]
    return "## Artifact fingerprints\n\nEvery artifact read, per run.\n\n" + _table(["artifact", *summary.labels],
                                                                                    rows)


def _series_table(name: str, x_name: str, series: dict[str, Series], labels: list[str]) -> str:
    rows = [[name, _num(x), _num(s.mean[i]), _num(s.std[i]),
             *(_num(s.per_run[lb][i]) if lb in s.per_run else "—" for lb in labels)]
            for name, s in series.items() for i, x in enumerate(s.x)]
    return _table([name, x_name, "mean", "std", *labels], rows)


def _image(figures: dict[str, str], key: str, caption: str) -> str:
    return f"![{caption}]({figures[key]})" if key in figures else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _pm(stat: Stat) -> str:
    """Mean ± std (n=...), rounded where the spread over seeds makes further digits noise: the std to two
    significant figures and the mean to the same decimal place (−9.1 ± 1.8, −20.04 ± 0.35)."""
    n = len(stat.per_run)
    if n == 1:
        return f"{_num(stat.mean)} (n=1)"
    if not (math.isfinite(stat.std) and stat.std > 0):
        return f"{_num(stat.mean)} ± {_num(stat.std)} (n={n})"
    decimals = min(6, max(0, 1 - math.floor(math.log10(stat.std))))
    return f"{stat.mean:.{decimals}f} ± {stat.std:.{decimals}f} (n={n})"


def _num(x: float) -> str:
    """Whole numbers as they are, others to three significant figures (−7.73, −11.5, 0.0123, 1234): no single
    return, error or duration measured here carries more."""
    if not math.isfinite(x):
        return "—"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(round(x)) if abs(x) >= 100 else f"{x:#.3g}".rstrip(".")


def _value(value: Any) -> str:
    return "unknown" if value is None else str(value)
