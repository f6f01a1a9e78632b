"""Mutation testing of one module with mutmut (`make mutation MODULE=mtrl/algos/mbml.py`; all of them:
`make mutation`). Slow: not part of `make test`.

Each module runs in its own scratch copy, `.mutation/<module>/` (git-ignored): the package and the tests are
copied there with a pyproject whose `[tool.mutmut]` section mutates only that module and runs only its unit
tests (the table below), so one module's cache and results never touch another's, and a rerun resumes where
the last one stopped (mutmut keeps its results in the copy's `mutants/`). The summary line it prints is what
docs/mutation.md records; `--show` lists the survivors (then `mutmut show NAME` in the scratch directory shows
the diff of one).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> the unit tests that own it (run for each of its mutants, only those that reach the mutated function)
MODULES: dict[str, list[str]] = {
    "mtrl/algos/mbml.py": ["tests/algos/test_mbml.py", "tests/algos/test_loss_terms.py",
                           "tests/algos/test_mbml_survivors.py", "tests/envs/test_task_sampling.py"],
    "mtrl/algos/bcq.py": ["tests/algos/test_bcq.py", "tests/algos/test_targets.py", "tests/algos/test_bcq_steps.py",
                          "tests/algos/test_contextual_bcq.py"],
    "mtrl/algos/sac.py": ["tests/algos/test_sac.py", "tests/algos/test_targets.py", "tests/algos/test_sac_steps.py"],
    "mtrl/algos/contextual_bcq.py": ["tests/algos/test_contextual_bcq.py", "tests/algos/test_contextual_bcq_steps.py"],
    "mtrl/algos/batch_pearl.py": ["tests/algos/test_batch_pearl.py", "tests/algos/test_targets.py",
                                  "tests/algos/test_loss_terms.py", "tests/algos/test_batch_pearl_steps.py"],
    "mtrl/algos/ensemble.py": ["tests/algos/test_ensemble.py", "tests/algos/test_ensemble_maths.py"],
    "mtrl/algos/context.py": ["tests/algos/test_context.py", "tests/algos/test_loss_terms.py",
                              "tests/algos/test_context_maths.py"],
    "mtrl/algos/focal.py": ["tests/algos/test_focal.py", "tests/algos/test_focal_steps.py"],
    "mtrl/algos/cql.py": ["tests/algos/test_cql.py", "tests/algos/test_cql_steps.py"],
    "mtrl/algos/iwpl.py": ["tests/algos/test_iwpl.py", "tests/algos/test_iwpl_terms.py"],
    "mtrl/rl/batches.py": ["tests/stages/test_relabelled_batches.py"],
    "mtrl/rl/evaluation.py": ["tests/stages/test_mbml_stages.py::test_protocol_uses_the_prior_first_then_all_collected_"
                              "context_and_skips_two_episodes",
                              "tests/stages/test_mbml_stages.py::test_repeated_evaluation_averages_independent_protocol_runs",
                              "tests/stages/test_mbml_stages.py::test_a_split_without_tasks_has_empty_returns_and_a_nan_score",
                              "tests/stages/test_mbml_stages.py::test_evaluation_seed_is_derived_from_the_run_seed",
                              "tests/stages/test_mbml_stages.py::test_run_evaluation_runs_the_protocol_on_the_train_and_"
                              "the_test_tasks"],
    "mtrl/artifacts/store.py": ["tests/foundation/test_artifacts.py",
                                "tests/foundation/test_writer_and_checkpoints.py",
                                "tests/foundation/test_store_details.py"],
    # the stages' own unit tests (tiny artifacts, fakes for the models and training; seconds): their pipeline-run
    # tests (test_offline_stages.py, test_mbml_stages.py) take minutes per mutant
    "mtrl/stages/relabel.py": ["tests/stages/test_relabel_unit.py"],
    "mtrl/stages/distill.py": ["tests/stages/test_distill_unit.py"],
    "mtrl/stages/sac_init.py": ["tests/stages/test_sac_init_conditioning.py", "tests/stages/test_sac_init_runs.py"],
}

MUTMUT_SECTION = """
[tool.mutmut]
source_paths = ["mtrl/"]
only_mutate = ["{module}"]
pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-q"]
pytest_add_cli_args_test_selection = {tests}
use_git_change_detection = false
"""


def scratch_dir(module: str, base: str | None = None) -> Path:
    name = module.removesuffix(".py").replace("/", ".")
    return ROOT / ".mutation" / (name if base is None else f"{name}@{base}")


def prepare(module: str, tests: list[str], base: str | None = None) -> Path:
    """A fresh copy of the package and the tests, of the working tree or of commit `base` (kept: mutmut's own
    `mutants/` results, to resume)."""
    work = scratch_dir(module, base)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("mtrl", "tests"):
        shutil.rmtree(work / name, ignore_errors=True)
    if base is None:
        for name in ("mtrl", "tests"):
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        pyproject = (ROOT / "pyproject.toml").read_text()
    else:  # the code and tests of an older commit: the "before" of a score
        archive = subprocess.run(["git", "archive", base, "mtrl", "tests"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        pyproject = subprocess.run(["git", "show", f"{base}:pyproject.toml"], cwd=ROOT, check=True, text=True,
                                   capture_output=True).stdout
        tests = [t for t in tests if (work / t.split("::")[0]).exists()]
    quoted = "[" + ", ".join(f'"{t}"' for t in tests) + "]"
    (work / "pyproject.toml").write_text(pyproject + MUTMUT_SECTION.format(module=module, tests=quoted))
    # mutmut writes the mutated package here; it must exist before Python starts, or the PYTHONPATH entry that
    # points at it is cached as empty and the tests import the unmutated copy (mutmut then finds no test to run)
    (work / "mutants").mkdir(exist_ok=True)
    return work


def summary(work: Path, show: bool) -> str:
    """Counts per status from `mutmut results --all true`."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, text=True,
                         capture_output=True, env=_env(work)).stdout
    statuses: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match:
            statuses.setdefault(match.group(2).strip(), []).append(match.group(1))
    if show:
        for name in statuses.get("survived", []):
            print("  survived:", name)
    counts = {status: len(names) for status, names in statuses.items()}
    killed = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("segfault", 0)
    total = sum(counts.values())
    score = f"{100 * killed / total:.1f} %" if total else "n/a"
    return f"{counts} -> killed {killed}/{total} ({score})"


def _env(work: Path) -> dict[str, str]:
    # one thread per test process (tiny networks; a forked child must not inherit a busy OpenMP pool)
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(work / "mutants"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {len(MODULES)})")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutants (mutmut's --max-children)")
    parser.add_argument("--show", action="store_true", help="list the surviving mutants")
    parser.add_argument("--results-only", action="store_true", help="summarise the last run, run nothing")
    parser.add_argument("--fresh", action="store_true",
                        help="discard the module's earlier results (mutmut does not notice changed tests)")
    parser.add_argument("--base", help="measure the code and tests of this commit instead (the score before)")
    args = parser.parse_args()
    status = 0
    for module in args.modules or list(MODULES):
        if module not in MODULES:
            parser.error(f"unknown module {module}; known: {', '.join(MODULES)}")
        if args.fresh and not args.results_only:
            shutil.rmtree(scratch_dir(module, args.base), ignore_errors=True)
        work = scratch_dir(module, args.base) if args.results_only else prepare(module, MODULES[module], args.base)
        start = time.monotonic()
        if not args.results_only:
            rc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
                                cwd=work, env=_env(work)).returncode
            status = status or rc
        print(f"{module}: {summary(work, args.show)} in {time.monotonic() - start:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
