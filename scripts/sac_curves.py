"""Our collection SAC's learning curves beside the reference SAC's (scripts/reference_sac.py), per task and seed:
the deterministic evaluation return at chosen interaction counts and the best one (docs/results_table9.md).

Ours are read from run directories (`sac/task_NN.h5` of `mtrl collect`; a task is named by its target, so runs of
other splits or `--tasks` selections line up), the reference from the JSON files reference_sac.py writes. With
`--learner bcq`, the per-task BCQs' curves instead (`bcq/task_NN.h5` of `mtrl train-bcq`, at gradient updates).

Usage: python scripts/sac_curves.py --ours runs/t9/hcv_s0 runs/t9/c150_s1 --reference runs/t9/ref/*.json \
           --at 20000 40000 60000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mtrl.config import load_run_config
from mtrl.pipeline import layout
from mtrl.pipeline.run_data import read_distribution
from mtrl.report.collect import collect_run


def ours(run_dir: Path, learner: str = "sac") -> dict[tuple[str, float, int], dict[int, float]]:
    """{("ours" and its precision, task target, run seed): {interactions (sac) or updates (bcq): evaluation
    return}} of one run's collection SACs or per-task BCQs."""
    config, results = load_run_config(run_dir), collect_run(run_dir)
    precision, curves = ((config.collect.precision, results.sac_curves) if learner == "sac"
                         else (config.bcq.precision, results.bcq_curves))
    who = "ours" if precision == "fp32" else f"ours, {precision}"
    tasks = read_distribution(layout.tasks(run_dir)).train_tasks
    return {(who, round(float(np.ravel(tasks[t])[0]), 3), config.seed):
            dict(zip(curve["steps"].astype(int).tolist(), curve["return_mean"].tolist(), strict=True))
            for t, curve in curves.items()}


def reference(path: Path) -> dict[tuple[str, float, int], dict[int, float]]:
    record = json.loads(path.read_text())
    return {("reference", round(record["task"][0], 3), record["seed"]):
            {int(s): float(r) for s, r in record["curve"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", type=Path, nargs="*", default=[])
    parser.add_argument("--reference", type=Path, nargs="*", default=[])
    parser.add_argument("--at", type=int, nargs="+", default=[20_000, 40_000, 60_000])
    parser.add_argument("--learner", choices=["sac", "bcq"], default="sac",
                        help="the collection SACs' curves (interactions) or the per-task BCQs' (updates)")
    args = parser.parse_args()
    curves = {key: c for run in args.ours for key, c in ours(run, args.learner).items()}
    curves |= {key: c for path in args.reference for key, c in reference(path).items()}
    last = max(args.at)  # runs longer than the table (the 150K curves) are judged over the same span
    print(f"| v* | seed | {args.learner.upper()} | " + " | ".join(f"{n / 1000:g}K" for n in args.at)
          + f" | best to {last / 1000:g}K |")
    print("|---|---|---|" + "---|" * (len(args.at) + 1))
    for (who, task, seed), curve in sorted(curves.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        cells = [f"{curve[n]:.0f}" if n in curve else "—" for n in args.at]
        best = max(r for n, r in curve.items() if n <= last)
        print(f"| {task} | {seed} | {who} | " + " | ".join(cells) + f" | {best:.0f} |")


if __name__ == "__main__":
    main()
