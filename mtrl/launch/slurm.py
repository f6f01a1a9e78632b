"""Slurm executor: submits Python callables as job arrays and dependent jobs through submitit.

It knows nothing of stages (`mtrl.pipeline.cluster` decides what to submit). `cluster` is submitit's executor
name: "slurm" submits with sbatch; "local" runs each job as a subprocess of this machine and "debug" in this
process, so the same submission path runs, and is tested, without a cluster. Neither of those two knows
dependencies, so their jobs are awaited before the next ones are submitted.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtrl.errors import ConfigError, StageError

CLUSTERS = ("slurm", "local", "debug")
SLURM_COMMANDS = ("sbatch", "srun", "squeue")  # submitit submits with sbatch and starts each job with srun


def check_cluster(cluster: str) -> None:
    """ConfigError naming the fix when `cluster` cannot be used from this machine."""
    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {cluster}: choose one of {', '.join(CLUSTERS)}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError("submitit is not installed: pip install 'mtrl-batch[slurm]'") from None
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None] if cluster == "slurm" else []
    if missing:
        raise ConfigError(f"{missing[0]} is not on PATH: run this on a Slurm login node (or load its module), "
                          "or use --cluster local to run the jobs on this machine")


def check_resources(resources: Mapping[str, Any], account: str | None, what: str) -> None:
    """Ask Slurm whether it would accept a job with `resources` (sbatch --test-only submits nothing), so that a
    wrong partition, a GPU request on a cluster without GPUs or an unreachable controller is said before anything
    is written or submitted."""
    flags = [f"--time={resources['time_min']}", f"--cpus-per-task={resources['cpus']}",
             f"--mem={int(resources['mem_gb'] * 1024)}M"]
    flags += [f"--partition={resources['partition']}"] if resources.get("partition") else []
    flags += [f"--gpus-per-node={resources['gpus']}"] if resources["gpus"] else []
    flags += [f"--account={account}"] if account else []
    out = subprocess.run(["sbatch", "--test-only", *flags, "--wrap", "true"], capture_output=True, text=True)
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()] or [f"exit status {out.returncode}"]
        reason = lines[-1].removeprefix("sbatch: error: ").removeprefix("sbatch: fatal: ")
        raise ConfigError(f"Slurm refuses the {what} jobs ({' '.join(flags)}): {reason} (resources: "
                          f"config section slurm.{what.replace('-', '_')}, or --partition, --cpus, ...)")


def executor(folder: Path, cluster: str, name: str, resources: Mapping[str, Any], account: str | None = None,
             array_parallelism: int = 64, after: Sequence[str] = ()) -> Any:
    """A submitit executor whose jobs get `resources` (a `SlurmResources` as a dict) and start once every job
    of `after` (job or array ids) has succeeded; a job whose dependency failed is cancelled, not left pending.
    Logs, submission scripts and pickles go to `folder`, one set of files per job id."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    slurm: dict[str, Any] = {"slurm_array_parallelism": array_parallelism}
    if resources.get("partition"):
        slurm["slurm_partition"] = resources["partition"]
    if account:
        slurm["slurm_account"] = account
    if after:
        slurm["slurm_dependency"] = "afterok:" + ":".join(after)
        slurm["slurm_additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    gpus = {"gpus_per_node": resources["gpus"]} if resources["gpus"] else {}  # no GPU request where none is wanted
    if cluster != "slurm":  # the other executors do not take slurm_* parameters
        slurm = {}
    ex.update_parameters(name=name, timeout_min=resources["time_min"], cpus_per_task=resources["cpus"],
                         mem_gb=resources["mem_gb"], **gpus, **slurm)
    return ex


def submit(ex: Any, fn: Callable[..., Any], args: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Submit `fn(*a)` for every `a` of `args`: one job, or one job array when there are several. The jobs."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:
        with contextlib.redirect_stderr(io.StringIO()), ex.batch():  # submitit echoes sbatch's stderr: said below
            return [ex.submit(fn, *a) for a in args]
    except (FailedJobError, FailedSubmissionError) as e:  # sbatch's own message says why (partition, limits)
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise StageError(f"sbatch refused the job: {lines[-1] if lines else type(e).__name__}") from None


def job_id(jobs: Sequence[Any]) -> str:
    """The Slurm id to depend on: the array's id for an array (its elements are '<array>_<index>')."""
    return str(jobs[0].job_id).split("_")[0]


def wait_local(jobs: Sequence[Any], what: str) -> None:
    """Wait for jobs of the local or debug executor; StageError naming the first failure and its log."""
    for job in jobs:
        try:
            job.result()
        except Exception as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            raise StageError(f"{what} job {job.job_id} failed: {lines[-1] if lines else type(e).__name__} "
                             f"(log: {job.paths.stdout})") from None


def wait_slurm(ids: Sequence[str], poll_s: float = 5.0) -> None:
    """Return once Slurm lists none of the jobs `ids` (finished, failed or cancelled) in its queue."""
    while True:
        out = subprocess.run(["squeue", "--noheader", "--format=%i", "--jobs", ",".join(ids)],
                             capture_output=True, text=True)
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise StageError(f"squeue failed: {out.stderr.strip() or out.returncode}")
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(poll_s)
