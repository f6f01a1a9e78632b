"""The `paper` profiles carry the values MBML states (App. C Tables 2-8, Table 9, §5.3) and the official MBML
code's per-family configs (docs/algorithms.md, "Paper-profile budgets"); `mtrl config --keys` prints the defaults
a run really gets."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mtrl.cli import main
from mtrl.config import Config, load_config
from mtrl.configlib import field_help, to_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# a family's config sets env.family; base.yaml and shared includes (point_robots.yaml) do not
FAMILY_FILES = sorted(p for p in CONFIGS.glob("*.yaml") if "family" in (yaml.safe_load(p.read_text()).get("env") or {}))

# family: collect.steps (Table 9), bcq.steps (official BCQ/configs max_timesteps), sac_init.steps (official
# sac_with_initialization: 10K + domain_to_epoch × 1K), Batch PEARL (context, KL weight, reward scale) (official
# batch_pearl/configs; PEARL's configs for the Fwd-Back families and the point robots).
MBML = {
    "HalfCheetahVel": (60_000, 50_000, 60_000, (100, 0.1, 5.0)),
    "AntDir": (200_000, 125_000, 600_000, (256, 0.1, 5.0)),
    "AntGoal": (300_000, 100_000, 600_000, (256, 1.0, 5.0)),
    "WalkerParam": (300_000, 100_000, 400_000, (100, 0.1, 5.0)),
    "HumanoidDir-M": (600_000, 250_000, 600_000, (256, 0.1, 5.0)),
    "UmazeGoal-M": (30_000, 50_000, 60_000, (128, 0.1, 5.0)),
}
OTHER_PEARL = {
    "PointRobot": (100, 0.1, 100.0), "SparsePointRobot": (100, 0.1, 100.0), "PointRobotWind": (100, 0.1, 100.0),
    "PointGoalArc": (100, 0.1, 100.0), "HalfCheetahFwdBack": (256, 0.1, 5.0), "AntFwdBack": (256, 0.1, 5.0),
    "WalkerWalk": (100, 0.1, 5.0), "WalkerRun": (100, 0.1, 5.0), "WalkerWalkRun": (100, 0.1, 5.0),
}


# FOCAL's official configs (docs/algorithms.md, "FOCAL in the reference code, audited"): per family the task
# counts where the profile sets them, and baselines.focal's (regularisation, gamma, reward_scale, context_size,
# context_next_obs, alpha, alpha_max); every other family gets configs/default.py's values.
FOCAL_DEFAULT = ("policy", 0.99, 5.0, 64, False, 500.0, 2000.0)
FOCAL = {
    "SparsePointRobot": ((80, 20), ("none", 0.9, 100.0, 1024, False, 500.0, 2000.0)),
    "PointRobotWind": ((40, 10), ("none", 0.9, 100.0, 256, True, 500.0, 2000.0)),
    "PointRobot": ((80, 20), ("policy", 0.99, 100.0, 64, False, 500.0, 2000.0)),  # PEARL's point-robot.json
    "HalfCheetahVel": ((None, None), ("policy", 0.99, 5.0, 100, False, 50.0, 2000.0)),  # MBML's task counts
    "HalfCheetahFwdBack": ((None, None), ("value", 0.99, 5.0, 256, False, 500.0, 2000.0)),
    "AntFwdBack": ((None, None), ("value", 0.99, 5.0, 256, False, 1e6, 5e6)),
    "WalkerParam": ((None, None), ("policy", 0.99, 5.0, 100, True, 50.0, 1e4)),  # MBML's task counts
}


def paper(path: Path) -> Config:
    return load_config(path, "paper")


@pytest.fixture(scope="module")
def configs() -> dict[str, Config]:
    loaded = {}
    for path in FAMILY_FILES:
        config = paper(path)
        loaded[config.env.family] = config
    return loaded


def test_every_family_has_a_paper_profile_and_a_pinned_value(configs):
    assert set(configs) == set(MBML) | set(OTHER_PEARL)


@pytest.mark.parametrize("family", sorted(MBML))
def test_mbml_family_budgets(configs, family):
    collect, bcq, sac_init, pearl = MBML[family]
    config = configs[family]
    assert config.collect.steps == collect  # Table 9 "Interactions"
    assert config.bcq.steps == bcq
    assert config.sac_init.steps == sac_init
    bp = config.baselines.sections["batch-pearl"]
    assert (bp.context_size, bp.kl_beta, bp.reward_scale) == pearl


def test_humanoid_sac_init_budget_covers_the_section_5_3_claim(configs):
    # §5.3: random-init SAC needs ~350K interactions on HumanoidDir-M, MBML-init ~85K.
    assert configs["HumanoidDir-M"].sac_init.steps >= 350_000


@pytest.mark.parametrize("family", sorted(OTHER_PEARL))
def test_other_families_batch_pearl(configs, family):
    bp = configs[family].baselines.sections["batch-pearl"]
    assert (bp.context_size, bp.kl_beta, bp.reward_scale) == OTHER_PEARL[family]


@pytest.mark.parametrize("family", sorted(set(MBML) | set(OTHER_PEARL)))
def test_focal_follows_its_official_configs(configs, family):
    config = configs[family]
    tasks, values = FOCAL.get(family, ((None, None), FOCAL_DEFAULT))
    assert (config.env.n_train, config.env.n_test) == tasks
    f = config.baselines.sections["focal"]
    assert (f.regularisation, f.gamma, f.reward_scale, f.context_size, f.context_next_obs, f.alpha,
            f.alpha_max) == values
    # configs/default.py, for every family
    assert (f.train_alpha, f.alpha_lr, f.target_divergence) == (True, 1.0, 0.05)
    assert (f.discriminator_hidden, f.discriminator_lr, f.discriminator_steps) == ((256,) * 3, 1e-4, 3)
    assert (f.dml_form, f.dml_weight, f.dml_power, f.dml_beta, f.dml_epsilon) == ("reference", 10.0, -2.0, 1.0, 0.1)
    assert (f.z_dim, f.encoder_hidden, f.hidden, f.batch_size, f.lr, f.tau) == (
        20, (200,) * 3, (256,) * 3, 256, 3e-4, 0.005)
    assert not f.coupled  # allow_backward_z false


def test_values_the_paper_states_hold_in_every_paper_profile(configs):
    for family, config in configs.items():
        d, sections = config.distill.algo, config.baselines.sections
        cb, bp = sections["contextual-bcq"], sections["batch-pearl"]
        # Table 2 (and Tables 5-7 for the ablations' context sizes)
        assert (d.z_dim, d.num_candidates, d.lr, d.batch_size, d.context_size) == (20, 10, 3e-4, 128, 64), family
        assert (d.kl_beta, d.triplet_margin) == (0.1, 2.0), family
        assert (d.q_hidden, d.g_hidden, d.xi_hidden) == ((1024,) * 9, (1024,) * 7, (1024,) * 8), family
        assert (d.no_relabel_context_size, d.neither_context_size, d.hard_negative_sets) == (128, 128, 10), family
        assert d.encoder_hidden == (200,) * 3, family  # Table 4
        assert set(config.distill.variants) == {"mbml", "no-triplet", "no-relabel", "neither"}, family
        assert config.evaluate.episodes == 5, family
        # Table 3
        r, n = config.rewards, config.dynamics
        assert (r.members, r.hidden, r.lr, r.batch_size) == (20, (128,), 3e-4, 128), family
        assert (n.members, n.hidden, n.lr, n.batch_size) == (20, (256,) * 6, 3e-4, 128), family
        # App. C.1: BCQ's defaults with the learning rate lowered to 3e-4
        assert config.bcq.algo.lr == 3e-4, family
        # App. C.2 and Alg. 7
        assert (cb.critic_hidden, cb.vae_hidden, cb.actor_hidden) == ((1024,) * 9, (1024,) * 7, (1024,) * 8), family
        assert (cb.encoder_hidden, cb.z_dim, cb.context_size, cb.lr) == ((200,) * 3, 20, 128, 3e-4), family
        assert cb.per_task_updates, family
        assert bp.encoder_hidden == (200,) * 3, family  # Table 4
        assert set(config.baselines.algos) == {"contextual-bcq", "batch-pearl", "focal"}, family
        # §5.3 and Table 8
        s = config.sac_init
        assert (s.rollout_steps, s.sac.critic_hidden) == (10_000, (1024,) * 9), family
        assert (s.sac.tau, s.sac.policy_tau, s.sac.target_policy) == (0.005, 0.1, True), family


def test_config_keys_prints_the_defaults_a_run_gets():
    """Nested sections built by a default_factory (dynamics, sac_init.sac) print their factory's values."""
    resolved = {}

    def flatten(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}.")
            else:
                resolved[prefix + key] = value

    flatten(to_dict(load_config(None)))
    printed = {key: default for key, _, default in field_help(Config)}
    assert printed == resolved

    result = CliRunner().invoke(main, ["config", "--keys"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(" = ", 1) for line in result.output.splitlines() if " = " in line
                 and not line.startswith(" "))
    for key in ("dynamics.hidden", "dynamics.predict_delta", "sac_init.sac.critic_hidden",
                "sac_init.sac.separate_critic_batches", "sac_init.sac.identical_critic_init",
                "sac_init.sac.target_policy"):
        assert json.loads(lines[key]) == resolved[key], key
    assert json.loads(lines["dynamics.hidden"]) == [256] * 6
    assert json.loads(lines["sac_init.sac.critic_hidden"]) == [1024] * 9


def test_walker_walk_run_paper_profile_has_seed_004s_settings():
    """Sec. 3.1 of seed 004: medium and medium-replay data, 3 × 1024 tanh-Gaussian actor and critics, critic lr 3e-4,
    actor lr 1e-4, τ 0.01, γ 0.99, batch 1024, CQL weight 10 with 10 + 10 actions, 1000 epochs, evaluation every 10,
    relabelling every 100 epochs at the 5 % quantile."""
    config = paper(CONFIGS / "walker_walk_run.yaml")
    cql, sac = config.cql, config.cql.csac.sac
    assert config.data.kinds == ("medium", "medium-replay")
    assert cql.methods == ("bc", "csac", "mt-bc", "mtcsac", "hcsac")
    assert sac.actor_hidden == sac.critic_hidden == (1024,) * 3
    assert (sac.critic_lr, sac.actor_lr, sac.tau, sac.gamma, sac.batch_size) == (3e-4, 1e-4, 0.01, 0.99, 1024)
    assert (cql.csac.cql_weight, cql.csac.cql_samples) == (10.0, 10)
    assert (cql.epochs, cql.eval_every, cql.relabel_every, cql.relabel_quantile) == (1000, 10, 100, 0.05)


def test_cheetah_faithful_profile_is_the_official_per_task_stages_and_the_cpu_multi_task_ones():
    # issue 33's faithful seed (make reproduce-cheetah-faithful): data and teachers of the paper profile's sizes
    # under bf16, the multi-task stages at the cpu profile's sizes, every method with the same update budget
    path = CONFIGS / "half_cheetah_vel.yaml"
    faithful, official, cpu = (load_config(path, profile) for profile in ("faithful", "paper", "cpu"))
    assert faithful.collect.sac == official.collect.sac
    assert faithful.bcq.algo == official.bcq.algo
    assert faithful.rewards == official.rewards
    assert (faithful.collect.precision, faithful.bcq.precision) == ("bf16", "bf16")
    assert faithful.collect.steps > official.collect.steps  # Table 9's quality needs more than its 60K
    assert faithful.distill.algo == cpu.distill.algo
    assert faithful.baselines.sections == cpu.baselines.sections
    assert faithful.baselines.algos == cpu.baselines.algos
    assert (faithful.distill.epochs * faithful.distill.steps_per_epoch
            == faithful.baselines.epochs * faithful.baselines.steps_per_epoch
            > cpu.distill.epochs * cpu.distill.steps_per_epoch)
    assert faithful.evaluate.belief == "mean"  # the task-inference issue's pick for every context method
