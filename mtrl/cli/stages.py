"""One command per pipeline stage. Each resolves the config, then runs its stage(s) through the runner."""

from __future__ import annotations

import click

from mtrl import methods
from mtrl.cli.group import main, verbosity
from mtrl.cli.options import resolve, stage_options
from mtrl.data import DATASET_KINDS
from mtrl.pipeline.registry import PIPELINE


def run_stages(names: list[str], extra: tuple[str, ...] = (), stages: dict | None = None, **opts) -> None:
    """Resolve the config (plus stage-specific overrides `extra`) and bring the named stages up to date.

    `stages` may give a pre-built stage for a name (e.g. a distill stage restricted to some variants).
    """
    from mtrl.config import save_config
    from mtrl.fsio import require_writable
    from mtrl.pipeline.registry import get_stage
    from mtrl.pipeline.runner import check_stage, run_stage

    config, options, header = resolve(extra=extra, verbosity=verbosity(), **opts)
    chosen = [(stages or {}).get(name) or get_stage(name) for name in names]
    for i, stage in enumerate(chosen):  # a command that cannot start must not rewrite the run's config
        check_stage(stage, config, options, inputs=i == 0)
    if read_only_and_up_to_date(chosen, config, options):
        click.echo(f"done: {', '.join(names)} up to date in {options.run_dir}; nothing to write (the run directory "
                   "is read-only)", err=True)
        return
    require_writable(options.run_dir, "--run-dir")
    save_config(config, options.run_dir, header=header)
    for stage in chosen:
        run_stage(stage, config, options)
    click.echo(f"done: {', '.join(names)} up to date in {options.run_dir}", err=True)


def read_only_and_up_to_date(stages: list, config, options) -> bool:
    """Whether the run directory cannot be written and the command has nothing to write there (its config saved,
    every unit up to date): a complete run on a read-only disk is a success, not a "cannot write" error."""
    from mtrl.config import config_saved
    from mtrl.fsio import writable
    from mtrl.pipeline.runner import nothing_to_do

    return not writable(options.run_dir) and config_saved(config, options.run_dir) and nothing_to_do(
        stages, config, options)


def overrides(**values) -> tuple[str, ...]:
    """Stage flags as config overrides: {'distill.algo.triplet_margin': 2.0} → ('distill.algo.triplet_margin=2.0',)."""
    return tuple(f"{key}={value}" for key, value in values.items() if value is not None)


relabel_option = click.option(
    "--relabel", type=click.Choice(["learned", "ground-truth"]),
    help="Relabel with the learned ensembles or the true reward functions (config distill.relabel).")


@main.command()
@stage_options
def collect(**opts) -> None:
    """Sample the task split (tasks.h5), then run SAC on each training task and keep everything it saw
    (datasets/task_NN.h5) with its learning curve and final weights (sac/task_NN.h5)."""
    run_stages(["tasks", "collect"], **opts)


@main.command(short_help="Make the dataset kinds of data.kinds (medium, expert, ...) from collect's saved policies.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice([k for k in DATASET_KINDS if k != "replay"]),
              help="Kind(s) to make, instead of config data.kinds (docs/datasets.md).")
@stage_options
def datasets(kinds, **opts) -> None:
    """Make the dataset kinds of config data.kinds besides the replay (datasets/<kind>/task_NN.h5) from the
    policies collect saved during its SAC runs, without rerunning SAC (docs/datasets.md)."""
    run_stages(["datasets"], overrides(**{"data.kinds": kind_list(kinds)}), **opts)


def kind_list(kinds: tuple[str, ...]) -> str | None:
    return None if not kinds else "[" + ",".join(kinds) + "]"


@main.command("train-bcq", short_help="Train one BCQ per training task on its dataset (bcq/task_NN.h5).")
@stage_options
def train_bcq(**opts) -> None:
    """Train one BCQ per training task on its dataset (bcq/task_NN.h5: best and final networks, eval curve)."""
    run_stages(["train-bcq"], **opts)


@main.command("fit-rewards", short_help="Fit a reward ensemble per training task (rewards/task_NN.h5).")
@stage_options
def fit_rewards(**opts) -> None:
    """Fit a reward ensemble per training task on its own data (rewards/task_NN.h5, with held-out error)."""
    run_stages(["fit-rewards"], **opts)


@main.command("fit-dynamics")
@stage_options
def fit_dynamics(**opts) -> None:
    """Fit a next-state ensemble per training task (dynamics/task_NN.h5); only for families whose tasks
    differ in dynamics (WalkerParam, PointRobotWind), a no-op otherwise."""
    run_stages(["fit-dynamics"], **opts)


@main.command(short_help="Relabel every task's transitions with every other task's models (relabel.h5).")
@relabel_option
@stage_options
def relabel(relabel: str | None, **opts) -> None:
    """Relabel every task's transitions with every other task's models, keeping confident predictions
    (relabel.h5: values, masks, keep fractions and, where a true reward exists, relabelling error)."""
    run_stages(["relabel"], overrides(**{"distill.relabel": relabel}), **opts)


@main.command(short_help="Distil the per-task BCQs into one multi-task policy (MBML or an ablation).")
@click.option("--variant", "variants", multiple=True, type=click.Choice(methods.names("distill")),
              help="Variant(s) to train (default: config distill.variants).")
@click.option("--triplet-margin", type=float, help="Triplet margin m (config distill.algo.triplet_margin).")
@click.option("--kl-beta", type=float, help="KL weight beta (config distill.algo.kl_beta).")
@click.option("--epochs", type=int, help="Training epochs (config distill.epochs).")
@relabel_option
@stage_options
def distill(variants, triplet_margin, kl_beta, epochs, relabel, **opts) -> None:
    """Distil the per-task BCQs into one multi-task policy with the triplet loss, or an ablation
    (policies/<variant>.h5: weights, loss curves, optional evaluation curve)."""
    from mtrl.stages.distill import Distill

    extra = overrides(**{"distill.algo.triplet_margin": triplet_margin, "distill.algo.kl_beta": kl_beta,
                         "distill.epochs": epochs, "distill.relabel": relabel})
    run_stages(["distill"], extra, stages={"distill": Distill(tuple(variants) or None)}, **opts)


@main.command("train-baseline", short_help="Train the multi-task baselines: Contextual BCQ, Batch PEARL, FOCAL.")
@click.option("--algo", "algos", multiple=True, type=click.Choice(methods.names("train-baseline")),
              help="Baseline(s) to train (default: config baselines.algos).")
@click.option("--epochs", type=int, help="Training epochs (config baselines.epochs).")
@stage_options
def train_baseline(algos, epochs, **opts) -> None:
    """Train the multi-task baselines, Contextual BCQ and Batch PEARL (MBML's Fig. 4) and FOCAL, on all training
    tasks' datasets (policies/<algo>.h5: weights, loss curves, optional evaluation curve)."""
    from mtrl.stages.train_baseline import TrainBaseline

    extra = overrides(**{"baselines.epochs": epochs})
    run_stages(["train-baseline"], extra, stages={"train-baseline": TrainBaseline(tuple(algos) or None)}, **opts)


@main.command(short_help="Train one method at every setting of a grid of config keys; keep the best on training tasks.")
@click.option("--method", required=True, type=click.Choice(methods.names()),
              help="The method to train (a distill variant or a train-baseline method).")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="A config key of the method's training and its values, e.g. distill.algo.kl_beta=0.1,0.01 "
                   "(repeatable: every combination is a trial).")
@stage_options
def sweep(method, grid, **opts) -> None:
    """Train METHOD once per setting of the grid on the run's inputs (sweeps/<method>/trial_NN.h5), score each
    trial on the training tasks only (its last evaluations during training), record them and the pick
    (sweeps/<method>.h5) and install the pick as policies/<method>.h5 for evaluate and report (docs/sweep.md)."""
    from mtrl.config import save_config
    from mtrl.fsio import require_writable
    from mtrl.stages.distill import policy_name
    from mtrl.stages.sweep import SCORE_EVALUATIONS, check_trials, parse_grid, plan_trials, run_sweep

    config, options, header = resolve(verbosity=verbosity(), **opts)
    name = policy_name(method, config.distill.relabel) if method in methods.names("distill") else method
    trials = plan_trials(name, parse_grid(grid), config, options.run_dir)
    check_trials(name, trials, config, options)
    require_writable(options.run_dir, "--run-dir")
    save_config(config, options.run_dir, header=header)
    result = run_sweep(name, trials, config, options)
    click.echo(f"{name}: training-task score (mean of the last {SCORE_EVALUATIONS} evaluations) per trial")
    for i, (trial, score) in enumerate(zip(result.trials, result.scores, strict=True)):
        values = " ".join(f"{key}={value}" for key, value in trial.values.items())
        click.echo(f"{'*' if i == result.picked else ' '} trial_{i:02d} {values}: {score:.4g}")
    click.echo(f"done: picked trial_{result.picked:02d}, installed as {options.run_dir / 'policies' / name}.h5",
               err=True)


@main.command("train-cql", short_help="Train the CQL family of HCSAC (BC, CSAC, MTCSAC, HCSAC) on each data kind.")
@click.option("--method", "cql_methods", multiple=True,
              help="Method(s) to train: bc, csac, mt-bc, mtcsac, hcsac (default: config cql.methods).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(list(DATASET_KINDS)),
              help="Dataset kind(s) to train on (default: config data.kinds).")
@click.option("--epochs", type=int, help="Training epochs (config cql.epochs).")
@stage_options
def train_cql(cql_methods, kinds, epochs, **opts) -> None:
    """Train seed 004's methods on every dataset kind of data.kinds (cql/<kind>/<method>.h5: weights, loss
    curves, evaluation curve on the training tasks, HCSAC's relabelled fractions); docs/algorithms.md."""
    extra = overrides(**{"cql.methods": kind_list(cql_methods), "data.kinds": kind_list(kinds),
                         "cql.epochs": epochs})
    run_stages(["train-cql"], extra, **opts)


@main.command(short_help="Evaluate policies on train and unseen test tasks with MBML's protocol.")
@click.option("--policy", "policies", multiple=True,
              help="Policy to evaluate: sac, bcq or a policies/<name>.h5 name (default: all the config trains).")
@stage_options
def evaluate(policies, **opts) -> None:
    """Evaluate policies with MBML's protocol (Alg. 5) on train and unseen test tasks (eval/<name>.h5)."""
    from mtrl.stages.evaluate import Evaluate

    run_stages(["evaluate"], stages={"evaluate": Evaluate(tuple(policies) or None)}, **opts)


@main.command("sac-init", short_help="SAC on each test task from the multi-task policy, beside its baselines.")
@stage_options
def sac_init(**opts) -> None:
    """On each unseen test task, train SAC started from the multi-task policy (Alg. 8-9) beside the random and
    App. J.2 baselines (sac_init/<run>/task_NN.h5: learning curves). --tasks selects test tasks here."""
    run_stages(["sac-init"], **opts)


@main.command("train-iwpl", short_help="IWPL (seed 003): behaviour prior and Q features on the training tasks.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(list(methods.ADAPT_VARIANTS)),
              help="IWPA variant(s) the prior and features are for, instead of config adapt.variants.")
@stage_options
def train_iwpl(variants, **opts) -> None:
    """Train IWPL (seed 003, Alg. 1) online on all training tasks, one env per task in lockstep: the shared
    behaviour prior, the Q features and each task's Q (iwpl.h5); samples the task split first (tasks.h5) if needed.
    Needs IWPA variants (--variant or config adapt.variants); `mtrl run` trains it when the config names some."""
    from mtrl.stages.iwpl import TrainIWPL

    run_stages(["tasks", "train-iwpl"], overrides(**{"adapt.variants": kind_list(variants)}),
               stages={"train-iwpl": TrainIWPL(explicit=True)}, **opts)


@main.command(short_help="IWPA (seed 003): adapt the IWPL prior and features on each test task.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(list(methods.ADAPT_VARIANTS)),
              help="IWPA variant(s) to run, instead of config adapt.variants.")
@stage_options
def adapt(variants, **opts) -> None:
    """On each unseen test task, adapt train-iwpl's prior and features (seed 003, Alg. 2) on sac-init's budget
    (adapt/<variant>/task_NN.h5: learning curves, drawn beside sac-init's by `mtrl report`)."""
    from mtrl.stages.iwpl import Adapt

    run_stages(["adapt"], overrides(**{"adapt.variants": kind_list(variants)}), stages={"adapt": Adapt(explicit=True)},
               **opts)


@main.command("run")
@click.option("--until", type=click.Choice(list(PIPELINE)), help="Stop after this stage.")
@stage_options
def run_pipeline(until: str | None, **opts) -> None:
    """Every stage in dependency order, skipping what is up to date: an interrupted run continues with the
    same command. The variants and baselines to train are listed in the config."""
    names = list(PIPELINE)
    run_stages(names[: names.index(until) + 1] if until else names, **opts)
