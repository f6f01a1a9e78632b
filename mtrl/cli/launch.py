"""`mtrl launch slurm`: the pipeline's remaining work as Slurm job arrays and dependent jobs."""

from __future__ import annotations

import click

from mtrl.cli.group import main
from mtrl.cli.options import resolve, stage_options
from mtrl.cli.stages import overrides
from mtrl.errors import StageError
from mtrl.pipeline.registry import PIPELINE

RESOURCES = ("partition", "time_min", "cpus", "gpus", "mem_gb")


@main.group()
def launch() -> None:
    """Submit the pipeline's remaining work to a cluster scheduler."""


@launch.command("slurm")
@click.option("--until", type=click.Choice(list(PIPELINE)), help="Stop after this stage.")
@click.option("--partition", help="Partition of every job (config slurm.per_task/multi_task.partition).")
@click.option("--time-min", type=int, help="Time limit of every job in minutes (config slurm.*.time_min).")
@click.option("--cpus", type=int, help="CPUs of every job (config slurm.*.cpus).")
@click.option("--gpus", type=int, help="GPUs of every job (config slurm.*.gpus; default 0).")
@click.option("--mem-gb", type=float, help="Memory of every job in GB (config slurm.*.mem_gb).")
@click.option("--account", help="Account to charge (config slurm.account).")
@click.option("--cluster", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="local: run the same jobs as processes of this machine, one group after the other.")
@click.option("--dry-run", is_flag=True, help="Print what would be submitted (and the array's size); submit nothing.")
@click.option("--wait", is_flag=True, help="Return once the jobs have ended; fail unless everything is up to date.")
@stage_options
def slurm(until, partition, time_min, cpus, gpus, mem_gb, account, cluster, dry_run, wait, **opts) -> None:
    """Submit the per-task stages (collect, train-bcq, fit-rewards, fit-dynamics) as one job array with an
    element per training task that has work left, then each multi-task stage with work left as a job that
    starts once the jobs before it succeeded (afterok). Resources come from the config's `slurm` section
    (per_task and multi_task); the options here set them for both. Logs go to RUN_DIR/logs/slurm/. Only what
    is missing or stale is submitted, so running the same command again resubmits what failed.

    --tasks submits those tasks' per-task work only (no multi-task job); --force submits everything."""
    from mtrl.config import save_config
    from mtrl.configlib import to_dict
    from mtrl.launch.slurm import check_cluster, check_resources, wait_slurm
    from mtrl.pipeline.cluster import compact, launch, plan_launch

    values = dict(zip(RESOURCES, (partition, time_min, cpus, gpus, mem_gb), strict=True))
    extra = overrides(**{f"slurm.{group}.{key}": value for group in ("per_task", "multi_task")
                         for key, value in values.items()}, **{"slurm.account": account})
    config, options, header = resolve(extra=extra, **opts)
    if not dry_run:
        check_cluster(cluster)
        if cluster == "slurm":
            for what, resources in (("per-task", config.slurm.per_task), ("multi-task", config.slurm.multi_task)):
                check_resources(to_dict(resources), config.slurm.account, what)
    plan = plan_launch(config, options, until)
    run_dir = options.run_dir
    if dry_run:
        click.echo(f"{run_dir}: {plan.n_train} training tasks; per-task stages {', '.join(plan.per_task) or 'none'}")
        jobs = f" ({len(plan.tasks)} job{'s' * (len(plan.tasks) > 1)})" if plan.tasks else ""
        click.echo(f"array: {compact(plan.tasks) or 'none'}{jobs}")
        click.echo(f"multi-task jobs: {', '.join(plan.multi_task) or 'none'}")
        return
    if plan.empty:
        click.echo(f"nothing to submit: everything{' up to ' + until if until else ''} is up to date in {run_dir}")
        return
    save_config(config, run_dir, header=header)
    submitted = launch(config, options, plan, cluster)
    for job in submitted:
        click.echo(f"submitted {job.what}: job {job.job_id}")
    ids = ",".join(job.job_id for job in submitted)
    if cluster == "slurm" and submitted:
        click.echo(f"watch: squeue --jobs {ids}   (afterwards: sacct --jobs {ids})")
    click.echo(f"logs: {run_dir / 'logs' / 'slurm'}   status: mtrl status {run_dir}")
    if wait and cluster == "slurm" and submitted:
        wait_slurm([job.job_id for job in submitted])
    if wait or cluster != "slurm":
        left = plan_launch(config, options, until)
        if not left.empty:
            raise StageError(f"the jobs ended with work left (tasks {compact(left.tasks) or 'none'}; stages "
                             f"{', '.join(left.multi_task) or 'none'}): see {run_dir / 'logs' / 'slurm'}")
        click.echo(f"done: everything{' up to ' + until if until else ''} is up to date in {run_dir}")
