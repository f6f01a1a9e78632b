"""MBML's Table 9 beside ours: the per-task SAC that collects each training task's data and the BCQ trained on it,
per family, at Table 9's interaction counts (`make table9` makes the runs, then calls this).

Table 9 does not say which of a SAC's returns it reports, so ours is given under each reading it can have:
- final: the deterministic evaluation at the end of collection (`collect.eval_episodes` episodes);
- best: the highest of collection's deterministic evaluations (every `collect.eval_every` interactions);
- training: the mean return of the complete episodes the learning (stochastic) policy finished in the last 10 %
  of the interactions, i.e. the best data in the dataset.
BCQ: the best of its evaluations (the snapshot the official code keeps, and ours with `bcq.snapshot: best`) and
its final one. Per family: one row per training task, then mean ± std over the tasks (Table 9's spread is over
tasks too), then the time of each stage: the sum of its tasks' shares of their task-batched models' wall times,
which is the stage's wall time with one worker and about that over the number of workers with several (the
workers run side by side).

Usage: python scripts/table9.py RUN_DIR [RUN_DIR ...] [--out docs/results/table9.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mtrl.artifacts import open_artifact
from mtrl.config import Config, load_run_config
from mtrl.data import complete_episodes
from mtrl.envs.registry import get_family
from mtrl.pipeline import layout
from mtrl.pipeline.run_data import read_distribution
from mtrl.report.collect import collect_run

# MBML App. H, Table 9: interactions per task, SAC and BCQ returns (mean ± std over the training tasks)
TABLE9 = {
    "HalfCheetahVel": (60_000, (-121.3, 35.3), (-142.7, 29.9)),
    "AntDir": (200_000, (920.9, 85.4), (956.6, 83.8)),
    "AntGoal": (300_000, (-99.6, 33.9), (-127.8, 36.7)),
    "WalkerParam": (300_000, (671.1, 106.4), (692.6, 97.0)),
    "HumanoidDir-M": (600_000, (2116.1, 388.6), (2190.9, 370.9)),
    "UmazeGoal-M": (30_000, (252.8, 6.5), (258.3, 9.1)),
}
LATE_SHARE = 0.1  # "training" return: episodes finished in the last 10 % of the interactions
COLUMNS = ["SAC final", "SAC best", "SAC training", "BCQ best", "BCQ final"]


def late_training_return(rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, horizon: int) -> float:
    """Mean return of the complete episodes that end in the last LATE_SHARE of a collect dataset: the collecting
    SAC's own, stochastic episodes. NaN where none does."""
    starts, ends = complete_episodes(terminals, timeouts, horizon)
    late = [rewards[s:e + 1].sum(dtype=np.float64) for s, e in zip(starts, ends, strict=True)
            if e >= (1 - LATE_SHARE) * len(rewards)]
    return float(np.mean(late)) if late else float("nan")


def _dataset_late_return(path: Path, horizon: int) -> float:
    with open_artifact(path) as art:
        return late_training_return(*(art.array(k) for k in ("rewards", "terminals", "timeouts")), horizon)


def per_task_rows(run_dir: Path) -> tuple[Config, dict[int, dict[str, float]], dict[str, float], np.ndarray]:
    """The config, {task: {column: return}}, {stage: seconds} and the training tasks of one run directory."""
    config = load_run_config(run_dir)
    results = collect_run(run_dir)
    horizon = get_family(config.env.family).spec.horizon
    rows: dict[int, dict[str, float]] = {}
    for task, curve in sorted(results.sac_curves.items()):
        rows[task] = {"SAC final": results.sac_final[task], "SAC best": float(np.max(curve["return_mean"])),
                      "SAC training": _dataset_late_return(layout.dataset(run_dir, task), horizon)}
        rows[task] |= {f"BCQ {k}": v for k, v in results.bcq_returns.get(task, {}).items()}
    tasks = read_distribution(layout.tasks(run_dir)).train_tasks
    seconds = {stage: results.stage_seconds[stage] for stage in ("collect", "train-bcq")
               if stage in results.stage_seconds}
    return config, rows, seconds, tasks


def _num(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "—"


def _pm(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "—"


def family_section(run_dir: Path) -> str:
    config, rows, seconds, tasks = per_task_rows(run_dir)
    family = config.env.family
    interactions, sac, bcq = TABLE9.get(family, (None, None, None))
    lines = [f"### {family} (`{run_dir}`, {config.collect.steps:,} interactions per task, seed {config.seed})", "",
             "| task | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for task, row in rows.items():
        label = ", ".join(f"{x:.3g}" for x in np.ravel(tasks[task]))
        lines.append(f"| {task} ({label}) | " + " | ".join(_num(row.get(c, np.nan)) for c in COLUMNS)
                     + " |")
    lines.append(f"| **mean ± std over {len(rows)} tasks** | "
                 + " | ".join(_pm([row[c] for row in rows.values() if c in row]) for c in COLUMNS) + " |")
    if sac is not None:
        lines.append(f"| **Table 9** ({interactions // 1000}K) | {sac[0]} ± {sac[1]} | | | {bcq[0]} ± {bcq[1]} | |")
    lines += ["", "Stage time (summed over workers; wall time with --workers 1): "
              + ", ".join(f"{stage} {s / 60:.1f} min" for stage, s in seconds.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    text = "\n\n".join(family_section(run_dir) for run_dir in args.run_dirs) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
