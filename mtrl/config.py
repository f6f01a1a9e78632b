"""The experiment configuration: one typed tree with a section per stage, loaded from `configs/*.yaml`.

Dataclass defaults are the papers' values (and their reference code's, docs/algorithms.md); a YAML file names
the task distribution and its profiles (`smoke` for tests, `paper` for paper scale, ...) override what they
need. Algorithm hyper-parameters live beside their algorithm (`mtrl.algos.*Config`) and are nested here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtrl import methods
from mtrl.algos.bcq import BCQConfig
from mtrl.algos.cql import CQL_METHODS, BCConfig, CSACConfig
from mtrl.algos.ensemble import EnsembleConfig
from mtrl.algos.iwpl import IWPLConfig
from mtrl.algos.mbml import MBMLConfig
from mtrl.algos.sac import SACConfig
from mtrl.configlib import (
    build,
    parse_override,
    read_config_file,
    read_yaml,
    sections_field,
    select_profile,
    set_path,
    to_dict,
)
from mtrl.data import DATASET_KINDS
from mtrl.errors import ConfigError
from mtrl.fsio import write_text
from mtrl.nn import Precision

SAC_INIT_BASELINES = ("random", "variation")
RESOLVED_NAME = "config.yaml"


PRECISION_HELP = ("arithmetic of the training updates: fp32, tf32 (CUDA; fp32 on a CPU) or bf16 autocast "
                  "(docs/algorithms.md, Precision); in the fingerprint unless fp32")


def _f(default: Any, help: str, min: float | None = None, max: float | None = None) -> Any:
    """A config field with its one-line help and inclusive range."""
    return field(default=default, metadata={"help": help, "min": min, "max": max})


@dataclass(frozen=True)
class EnvConfig:
    family: str = _f("HalfCheetahVel", "task distribution (see docs/envs.md)")
    n_train: int | None = _f(None, "training tasks (default: the paper's number for the family)", min=1)
    n_test: int | None = _f(None, "unseen test tasks (default: the paper's number for the family)", min=1)
    task_seed: int = _f(0, "seed of the task split; fixed across run seeds so that seeds vary training only", min=0)


@dataclass(frozen=True)
class CollectConfig:
    steps: int = _f(60_000, "environment interactions per training task (MBML Table 9)", min=1)
    eval_every: int = _f(5_000, "steps between deterministic evaluations of the learning SAC", min=1)
    eval_episodes: int = _f(5, "episodes per evaluation", min=1)
    checkpoint_every: int = _f(10_000, "steps between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    sac: SACConfig = field(default_factory=SACConfig)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset kinds a run makes and which one the training stages learn from (docs/datasets.md)."""

    kinds: tuple[str, ...] = _f(("replay",), "dataset kinds `mtrl datasets` makes from collect's SAC run besides "
                                             f"the replay ({', '.join(DATASET_KINDS)}; docs/datasets.md)")
    kind: str = _f("replay", "the kind every training stage learns from (made even if not in data.kinds)")
    transitions: int | None = _f(None, "transitions per task of a rolled-out kind (random, medium, expert, mixed); "
                                       "default: collect.steps, the replay's size", min=1)
    medium_level: float = _f(1 / 3, "medium = the first evaluated checkpoint whose D4RL-normalised return (0: the "
                                     "step-0 policy, 1: the final one) reaches this level (D4RL: about 1/3)",
                             min=0.0, max=1.0)
    mixed_checkpoints: int | None = _f(None, "evenly spaced checkpoints (step 0 to final) the mixed kind rolls out, "
                                             "equal shares each (default: all of them, FOCAL)", min=2)
    deterministic: bool = _f(False, "roll out the mean action instead of sampling the policy (D4RL samples)")
    test_tasks: bool = _f(False, "also make offline data for the test tasks (collect's SAC and every kind), under "
                                 "datasets/test/ and sac/test/; no training stage reads it (evaluate.context offline "
                                 "draws test contexts from it)")


@dataclass(frozen=True)
class BCQStageConfig:
    steps: int = _f(300_000, "BCQ gradient steps per training task", min=1)
    eval_every: int = _f(5_000, "gradient steps between online evaluations", min=1)
    eval_episodes: int = _f(5, "episodes per evaluation", min=1)
    snapshot: Literal["best", "final"] = _f("best", "which BCQ snapshot later stages use (reference: best)")
    checkpoint_every: int = _f(20_000, "gradient steps between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    algo: BCQConfig = field(default_factory=BCQConfig)


def _dynamics_ensemble() -> EnsembleConfig:
    """Next-state ensembles are deeper than reward ensembles: 20 × MLP 6×256 (MBML Table 3)."""
    return EnsembleConfig(hidden=(256,) * 6, predict_delta=True)


@dataclass(frozen=True)
class RelabelConfig:
    reward_std_threshold: float | None = _f(None, "ensemble std below which a relabelled reward is kept "
                                                  "(default: the paper's value for the family)", min=0.0)
    next_state_std_threshold: float | None = _f(None, "the same for relabelled next states (default: the family's; "
                                                      "WalkerParam 0.2 as the reference code)", min=0.0)
    next_state_std_statistic: Literal["mean", "max"] = _f("mean", "which statistic over state dimensions of the "
                                                          "next-state ensemble's std is compared with the threshold "
                                                          "(reference: mean)")
    max_transitions: int = _f(50_000, "transitions per task relabelled (a seeded random subset); the triplet "
                                      "loss draws its context sets from them", min=1)


@dataclass(frozen=True)
class DistillConfig:
    variants: tuple[str, ...] = _f(("mbml",), "MBML variants `mtrl run` trains (registry methods trained by "
                                              f"distill: {', '.join(methods.names('distill'))})")
    relabel: Literal["learned", "ground-truth"] = _f("learned", "relabel with the learned ensembles or the true "
                                                                "reward function (ablation)")
    epochs: int = _f(1000, "training epochs", min=1)
    steps_per_epoch: int = _f(100, "gradient steps per epoch", min=1)
    eval_every: int = _f(0, "epochs between evaluations during training (0: only at the end)", min=0)
    checkpoint_every: int = _f(10, "epochs between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    algo: MBMLConfig = field(default_factory=MBMLConfig)


@dataclass(frozen=True)
class BaselinesConfig:
    algos: tuple[str, ...] = _f((), "multi-task baselines `mtrl run` trains (registry methods trained by "
                                    f"train-baseline: {', '.join(methods.names('train-baseline'))})")
    epochs: int = _f(1000, "training epochs", min=1)
    steps_per_epoch: int = _f(100, "training steps per epoch (Contextual BCQ: one pass over the K tasks, K updates "
                                   "per network)", min=1)
    eval_every: int = _f(0, "epochs between evaluations during training (0: only at the end)", min=0)
    checkpoint_every: int = _f(10, "epochs between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    sections: dict[str, Any] = sections_field(
        lambda: {m.name: m.config_type() for m in methods.methods("train-baseline")},
        "one section per baseline method of the registry, named like it (baselines.<method>.<key>)")


@dataclass(frozen=True)
class CQLStageConfig:
    """`mtrl train-cql`: the CQL family of HCSAC (seed 004) on every kind of data.kinds (docs/algorithms.md)."""

    methods: tuple[str, ...] = _f((), "methods `mtrl run` trains on every kind of data.kinds (of: "
                                      f"{', '.join(CQL_METHODS)}); the Walker configs list all of them")
    epochs: int = _f(1000, "training epochs (Sec. 3.1)", min=1)
    steps_per_epoch: int = _f(1000, "gradient steps per epoch (the paper does not say; 1000 makes its 1000 epochs "
                                    "the 1M steps of CQL's own runs)", min=1)
    eval_every: int = _f(10, "epochs between online evaluations on the training tasks (Sec. 3.1), and at the end",
                         min=1)
    eval_episodes: int = _f(5, "episodes per task and evaluation", min=1)
    final_evaluations: int = _f(1, "Table 1's score: the mean of the last this many evaluations", min=1)
    relabel_every: int = _f(100, "HCSAC: epochs between heuristic relabellings (Sec. 3.1)", min=1)
    relabel_quantile: float = _f(0.05, "HCSAC: the quantile of Q_i over D_i that a transition of D_j must reach "
                                       "to join task i's data (Eq. 10-11)", min=0.0, max=1.0)
    checkpoint_every: int = _f(10, "epochs between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    csac: CSACConfig = field(default_factory=CSACConfig)
    bc: BCConfig = field(default_factory=BCConfig)


@dataclass(frozen=True)
class EvaluateConfig:
    episodes: int = _f(5, "episodes per task (Alg. 5)", min=1)
    skip_episodes: int = _f(2, "leading episodes not counted in the return (PEARL/MBML protocol)", min=0)
    repeats: int = _f(1, "independent runs of the protocol per task, averaged (the paper: one; more reduce the "
                         "noise of sampled beliefs); evaluation during training always runs it once", min=1)
    probe_sets: int = _f(20, "context sets per task pair in the task-inference probe (mtrl/rl/probe.py)", min=1)
    probe_context_size: int = _f(64, "transitions per probe context set", min=1)
    context: Literal["online", "offline"] = _f("online", "online: Alg. 5, context gathered in the task; offline: "
                                                         "FOCAL's meta-test, z from rows of the task's offline data "
                                                         "(needs data.test_tasks; written to eval/offline/)")
    offline_context_size: int = _f(64, "rows of a task's offline data the offline protocol infers z from", min=1)
    belief: Literal["sample", "mean", "sample-then-mean"] = _f(
        "sample", "the z a context method acts with: a sample of q(z|c) (Alg. 5), its mean, or a sample in the "
                  "unscored episodes and the mean in the scored ones (every context method, in evaluate and in "
                  "the evaluations during training)")
    context_window: int = _f(0, "rows the online protocol infers each belief from: the last N collected in the "
                                "task (0: all of them, Alg. 5)", min=0)
    health_sets: int = _f(20, "context sets per task and size in the task-inference health check "
                              "(mtrl/rl/health.py)", min=2)


@dataclass(frozen=True)
class SacInitConfig:
    policies: tuple[str, ...] = _f(("mbml",), "multi-task policies (policies/<name>.h5) to initialise SAC from")
    baselines: tuple[str, ...] = _f(("random", "variation"), "baselines on the same tasks: random (SAC from "
                                    "random initialisation) and variation (App. J.2)")
    rollout_steps: int = _f(10_000, "transitions collected with the multi-task policy on each test task", min=1)
    imitation_steps: int = _f(10_000, "maximum-likelihood steps imitating those actions", min=1)
    imitation_batch: int = _f(256, "imitation batch size", min=1)
    warmup_steps: int = _f(10_000, "transitions the imitated policy collects into SAC's emptied buffer before the "
                                   "first update (reference code; 0: update as soon as a batch fits)", min=0)
    steps: int = _f(100_000, "SAC environment interactions per test task", min=1)
    eval_every: int = _f(5_000, "interactions between evaluations", min=1)
    eval_episodes: int = _f(5, "episodes per evaluation", min=1)
    checkpoint_every: int = _f(10_000, "interactions between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    sac: SACConfig = field(default_factory=lambda: SACConfig(
        critic_hidden=(1024,) * 9, separate_critic_batches=True, identical_critic_init=True, target_policy=True,
        damped_policy=True))


@dataclass(frozen=True)
class IWPLStageConfig:
    """`train-iwpl`: IWPL (Alg. 1) on all training tasks, one env per task in lockstep (docs/algorithms.md)."""

    steps: int = _f(100_000, "environment interactions per training task", min=1)
    warmup_steps: int = _f(1_000, "interactions acting by the prior alone before the first update (chosen)", min=0)
    eval_every: int = _f(5_000, "interactions between evaluations", min=1)
    eval_episodes: int = _f(5, "episodes per evaluation", min=1)
    checkpoint_every: int = _f(10_000, "interactions between resumable checkpoints", min=1)
    precision: Precision = _f("fp32", PRECISION_HELP)
    algo: IWPLConfig = field(default_factory=IWPLConfig)


@dataclass(frozen=True)
class AdaptConfig:
    """`adapt`: IWPA (Alg. 2) on each test task from train-iwpl's prior and features, on sac-init's budget
    (sac_init.steps, eval_every, eval_episodes, checkpoint_every), so the curves share one figure."""

    variants: tuple[str, ...] = _f((), "IWPA variants to run (none: train-iwpl and adapt do nothing): "
                                       + "; ".join(f"{k}: {v}" for k, v in methods.ADAPT_VARIANTS.items()))
    warmup_steps: int = _f(100, "interactions acting by the prior alone before the first update (App. A.2: 5 "
                                "episodes on sparse 2-D navigation, 2 on half-cheetah)", min=0)
    precision: Precision = _f("fp32", PRECISION_HELP)
    target_return: float | None = _f(None, "the report counts each adaptation run's interactions until its mean "
                                           "over test tasks first reaches this return, and their ratio to SAC from "
                                           "scratch (`random`); none: no such table (in no fingerprint)")
    algo: IWPLConfig = field(default_factory=lambda: IWPLConfig(batch_size=128, epsilon=30.0))


@dataclass(frozen=True)
class SlurmResources:
    partition: str | None = _f(None, "Slurm partition (default: the cluster's default partition)")
    time_min: int = _f(1440, "time limit of each job, in minutes", min=1)
    cpus: int = _f(2, "CPUs per job; torch threads default to them", min=1)
    gpus: int = _f(0, "GPUs per job (0: none requested; --device auto then runs on the CPU)", min=0)
    mem_gb: float = _f(8.0, "memory per job, in GB", min=0.1)


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of `mtrl launch slurm` (in no fingerprint: where work runs never changes what it computes)."""

    per_task: SlurmResources = field(default_factory=SlurmResources)
    multi_task: SlurmResources = field(default_factory=lambda: SlurmResources(time_min=2880, cpus=8, mem_gb=32.0))
    account: str | None = _f(None, "Slurm account to charge (sbatch --account); default: the user's")
    array_parallelism: int = _f(64, "per-task array jobs running at the same time, at most", min=1)


@dataclass(frozen=True)
class Config:
    seed: int = _f(0, "run seed: network initialisation, sampling, exploration", min=0)
    profile: str | None = _f(None, "the config file's profile this run was resolved from (set by --profile, kept by "
                                   "later commands; reports name it, a `smoke` report is flagged; in no fingerprint)")
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    bcq: BCQStageConfig = field(default_factory=BCQStageConfig)
    rewards: EnsembleConfig = field(default_factory=EnsembleConfig)
    dynamics: EnsembleConfig = field(default_factory=_dynamics_ensemble)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    cql: CQLStageConfig = field(default_factory=CQLStageConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sac_init: SacInitConfig = field(default_factory=SacInitConfig)
    iwpl: IWPLStageConfig = field(default_factory=IWPLStageConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def load_config(path: Path | None, profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Config from a YAML file (plus profile) or from an already-resolved mapping, with dotted overrides."""
    if path is not None:
        data = select_profile(read_config_file(path), profile, str(path)) | {"profile": profile}
    else:
        data = dict(base or {})
    for text in overrides:
        key, value = parse_override(text)
        data = set_path(data, key, value)
    config = build(Config, data)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that involve more than one field or the environment registry."""
    from mtrl.envs import FAMILIES
    from mtrl.envs.registry import get_family

    if config.env.family not in FAMILIES:
        raise ConfigError(f"config key 'env.family': unknown task family '{config.env.family}'; "
                          f"choose one of: {', '.join(FAMILIES)}")
    for key, names, stage in (("distill.variants", config.distill.variants, "distill"),
                              ("baselines.algos", config.baselines.algos, "train-baseline")):
        bad = [name for name in names if name not in methods.names(stage)]
        if bad:
            raise ConfigError(f"config key '{key}': '{bad[0]}' is not one of: {', '.join(methods.names(stage))}")
    bad = [name for name in config.cql.methods if name not in CQL_METHODS]
    if bad:
        raise ConfigError(f"config key 'cql.methods': '{bad[0]}' is not one of: {', '.join(CQL_METHODS)}")
    if "hcsac" in config.cql.methods and get_family(config.env.family).spec.varies != "reward":
        raise ConfigError(f"config key 'cql.methods': hcsac relabels rewards only, and {config.env.family}'s tasks "
                          "differ in dynamics; leave hcsac out for this family")
    for key, names in (("data.kinds", config.data.kinds), ("data.kind", (config.data.kind,))):
        bad = [name for name in names if name not in DATASET_KINDS]
        if bad:
            raise ConfigError(f"config key '{key}': '{bad[0]}' is not a dataset kind; choose from: "
                              f"{', '.join(DATASET_KINDS)}")
    if config.evaluate.context == "offline" and not config.data.test_tasks:
        raise ConfigError("config key 'evaluate.context': offline draws each test task's context from its offline "
                          "data; set data.test_tasks: true (collect then runs SAC on the test tasks too)")
    bad = [b for b in config.sac_init.baselines if b not in SAC_INIT_BASELINES]
    if bad:
        raise ConfigError(f"config key 'sac_init.baselines': '{bad[0]}' is not one of: "
                          f"{', '.join(SAC_INIT_BASELINES)}")
    for section, sac in (("collect", config.collect.sac), ("sac_init", config.sac_init.sac)):
        if sac.damped_policy and not sac.target_policy:
            raise ConfigError(f"config key '{section}.sac.damped_policy' needs '{section}.sac.target_policy: true' "
                              "(it copies the target policy into the actor)")
    bad = [v for v in config.adapt.variants if v not in methods.ADAPT_VARIANTS]
    if bad:
        raise ConfigError(f"config key 'adapt.variants': '{bad[0]}' is not one of: "
                          f"{', '.join(methods.ADAPT_VARIANTS)}")
    transfers_features = [v for v in config.adapt.variants if v != "behaviour"]
    if transfers_features and not config.iwpl.algo.shared_features:
        raise ConfigError(f"config key 'adapt.variants': '{transfers_features[0]}' transfers the features ψ; set "
                          "iwpl.algo.shared_features: true (Eq. 12)")
    for key in ("prior_hidden", "critic_hidden", "feature_dim"):
        if getattr(config.adapt.algo, key) != getattr(config.iwpl.algo, key):
            raise ConfigError(f"config keys 'adapt.algo.{key}' and 'iwpl.algo.{key}' differ; adapt loads "
                              "train-iwpl's networks, so set them equal")
    if config.sac_init.sac.critic_hidden != config.distill.algo.q_hidden:
        raise ConfigError("config keys 'sac_init.sac.critic_hidden' and 'distill.algo.q_hidden' differ; SAC's critics "
                          "start from Q_D, so set them equal")


def save_config(config: Config, run_dir: Path, header: str = "") -> Path:
    """Write the resolved config into the run directory (atomically, and only when it changed) and return its
    path."""
    path = Path(run_dir) / RESOLVED_NAME
    if config_saved(config, run_dir):
        return path  # unchanged: keep the header that says where it came from
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    write_text(path, (f"# {header}\n" if header else "") + text)  # atomic: concurrent shard jobs may write it
    return path


def config_saved(config: Config, run_dir: Path) -> bool:
    """Whether the run directory's config.yaml already holds `config` (saving it would write nothing)."""
    path = Path(run_dir) / RESOLVED_NAME
    return path.exists() and _without_header(path.read_text()) == yaml.safe_dump(to_dict(config), sort_keys=False)


def _without_header(text: str) -> str:
    return text.partition("\n")[2] if text.startswith("# ") else text


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved config a run directory was last used with."""
    path = Path(run_dir) / RESOLVED_NAME
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir}: no such run directory; start a run there with --config configs/<family>.yaml")
    if not path.exists():
        raise ConfigError(f"{run_dir} has no {RESOLVED_NAME}; start the run with --config configs/<family>.yaml")
    saved = read_yaml(path)
    if not saved:  # the defaults would silently describe another experiment
        raise ConfigError(f"{path} is empty; restore it, or give the experiment again with --config FILE "
                          "--profile NAME")
    return load_config(None, None, overrides, base=saved)
