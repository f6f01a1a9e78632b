"""Which SAC runs `sac-init` trains and how each starts (MBML Sec. 5.3, App. J), unit-sized: its units, how a group
is split into runs, and what each run hands SAC and the online loop — the `random` baseline's standard SAC, the
`variation` baseline's initialised-run SAC from scratch, and the initialised run's critics and actor from the
multi-task policy with z as the critic condition. SAC, the online loop and the rollout are recorders here (they
have tests of their own: test_sac_steps.py, test_online.py, test_sac_init_conditioning.py).
"""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_relabel_unit import make_config

from mtrl.algos import sac
from mtrl.pipeline import layout
from mtrl.rl.online import Schedule
from mtrl.stages import sac_init
from mtrl.stages.sac_init import SacInit

OBS, ACT = 2, 1
SCHEDULE = ("sac_init.steps=300", "sac_init.warmup_steps=40", "sac_init.eval_every=100", "sac_init.eval_episodes=3",
            "sac_init.checkpoint_every=150", "sac_init.sac.random_steps=30", "sac_init.precision=tf32")



def test_units_per_run_and_test_task_with_the_policy_as_input_of_initialised_runs(tmp_path):
    config = make_config("sac_init.policies=[mbml,neither]", "sac_init.baselines=[variation]")
    units = SacInit().units(config, tmp_path)
    assert [u.key for u in units] == ["variation/task_00", "variation/task_01", "mbml/task_00", "mbml/task_01",
                                      "neither/task_00", "neither/task_01"]  # run-major, baselines first
    for unit in units:
        run, t = unit.params["run"], unit.params["test_task"]
        assert unit.key == f"{run}/task_{t:02d}" and unit.task == t
        output = unit.outputs["curves"]
        assert (output.path, output.kind) == (tmp_path / "sac_init" / run / f"task_{t:02d}.h5", "sac_init")
        assert unit.inputs["tasks"] == layout.tasks_input(tmp_path)
        if run == "variation":
            assert list(unit.inputs) == ["tasks"]
        else:
            policy = unit.inputs["policy"]
            assert (policy.path, policy.kind, policy.stage) == (tmp_path / "policies" / f"{run}.h5", "policy",
                                                                "distill")
    assert [u.key for u in SacInit().units(make_config(), tmp_path)][::2] == ["random/task_00",
                                                                               "variation/task_00", "mbml/task_00"]


def test_a_group_straddling_two_runs_trains_one_sac_per_run_in_order():
    ctxs = [SimpleNamespace(unit=SimpleNamespace(params={"run": run})) for run in ("random", "random", "mbml")]
    stage, groups = SacInit(), []
    stage._run_tasks = lambda group: groups.append([ctx.unit.params["run"] for ctx in group])
    stage.run_group(ctxs)
    assert groups == [["random", "random"], ["mbml"]]


class Recorder:
    """Stands in for SAC, the online loop, the initialisation and the checkpoints; keeps what they were given."""

    def __init__(self, saved=None):
        self.saved, self.initialised, self.envs, self.written = saved, [], [], {}

    def sac(self, cfg, obs_dim, act_dim, max_action, device, critic_condition=None, tasks=1, seeds=None):
        self.agent = SimpleNamespace(cfg=cfg, sizes=(obs_dim, act_dim, max_action), device=device,
                                     condition=critic_condition, tasks=tasks, seeds=seeds, critics=None, actor=None)
        self.agent.init_critics_from = lambda states: setattr(self.agent, "critics", states)
        self.agent.init_actor_from = lambda states: setattr(self.agent, "actor", states)
        return self.agent

    def initialise(self, ctx, dist, task, sac_cfg):
        assert dist is self.dist, "the rollout's envs come from the run's task distribution"
        self.initialised.append((ctx.seed, task, sac_cfg))
        init = {"z": np.array([ctx.seed, 0.5, -1.0]), "rollout_returns": np.array([float(ctx.seed)])}
        return init, {"q_d": f"q_d of {task}", "actor": f"actor of {task}"}

    def make_env(self, task):
        self.envs.append(task)
        return [task]  # a fresh object per call

    def train_online(self, ctxs, agent, envs, eval_envs, buffers, schedule, saved, extras):
        self.online = SimpleNamespace(ctxs=ctxs, agent=agent, envs=envs, eval_envs=eval_envs, buffers=buffers,
                                      schedule=schedule, saved=saved, extras=extras)
        return [SimpleNamespace(write_curve=lambda w, name, t=t: w.trees.__setitem__(name, f"curve {t}"))
                for t in range(len(ctxs))]

    def writer(self, ctx):
        """ctx.writer: a FakeWriter for the unit's "curves" output, kept under its test task."""
        def make(output):
            if output != "curves":
                return None
            self.written[ctx.unit.params["test_task"]] = writer = FakeWriter()
            return writer

        return make


class FakeWriter:
    """What `ArtifactWriter` would have written: trees and attributes."""

    def __init__(self):
        self.trees, self.attrs = {}, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def tree(self, name, value):
        self.trees[name] = value


def run_tasks(monkeypatch, run, tasks=(1, 0), saved=None, overrides=()):
    """`_run_tasks` of one run on test tasks `tasks` (seeds 100 + t), everything expensive recorded."""
    config = make_config(*SCHEDULE, *overrides)
    rec = Recorder(saved)
    dist = SimpleNamespace(spec=SimpleNamespace(obs_dim=OBS, act_dim=ACT, max_action=1.0),
                           test_tasks=["task a", "task b", "task c"], make_env=rec.make_env)
    rec.dist = dist
    monkeypatch.setattr(sac_init, "read_distribution", lambda path: dist if path == "tasks.h5" else None)
    monkeypatch.setattr(sac, "SAC", rec.sac)
    monkeypatch.setattr(sac_init, "train_online", rec.train_online)
    monkeypatch.setattr(sac_init, "load_group_checkpoints", lambda group: rec.saved if group is ctxs else "wrong")
    stage = SacInit()
    monkeypatch.setattr(stage, "_initialise", rec.initialise)
    ctxs = []
    for t in tasks:
        ctx = SimpleNamespace(config=config, seed=100 + t, device=torch.device("cpu"), group_size=99,
                              unit=SimpleNamespace(params={"run": run, "test_task": t},
                                                   inputs={"tasks": SimpleNamespace(path="tasks.h5")}))
        ctx.writer = rec.writer(ctx)
        ctxs.append(ctx)
    stage._run_tasks(ctxs)
    return rec, config, ctxs


def _common(rec, config, ctxs, tasks=("task b", "task a")):
    """What every run shares: one task-batched SAC over the group's tasks with their seeds, a fresh env and
    eval env and an empty buffer of sac_init.steps per task, curves and attributes written per unit."""
    agent, online = rec.agent, rec.online
    assert agent.sizes == (OBS, ACT, 1.0) and agent.device == torch.device("cpu")
    assert agent.tasks == len(ctxs) and agent.seeds == [ctx.seed for ctx in ctxs]
    assert online.ctxs == ctxs and online.agent is agent
    assert rec.envs == [*tasks, *tasks]
    assert online.envs == [[t] for t in tasks] and online.eval_envs == [[t] for t in tasks]
    assert all(a is not b for a, b in zip(online.envs, online.eval_envs, strict=True))
    assert [(b.capacity, b.size, b.data["observations"].shape[1], b.data["actions"].shape[1])
            for b in online.buffers] == [(300, 0, OBS, ACT)] * len(ctxs)
    assert len({id(b) for b in online.buffers}) == len(ctxs)
    assert all(ctx.group_size == len(ctxs) for ctx in ctxs)  # the group's clock is shared
    for k, ctx in enumerate(ctxs):
        w = rec.written[ctx.unit.params["test_task"]]
        assert w.trees["curves"] == f"curve {k}"
        assert w.attrs == {"run": ctx.unit.params["run"], "test_task": ctx.unit.params["test_task"]}


def test_random_baseline_is_standard_sac_with_random_warmup(monkeypatch):
    rec, config, ctxs = run_tasks(monkeypatch, "random")
    _common(rec, config, ctxs)
    expected = dataclasses.replace(config.sac_init.sac, separate_critic_batches=False, identical_critic_init=False,
                                   target_policy=False, damped_policy=False)
    assert config.sac_init.sac.separate_critic_batches and config.sac_init.sac.damped_policy  # the defaults differ
    assert rec.agent.cfg == expected
    assert rec.agent.condition is None and rec.agent.critics is None and rec.agent.actor is None
    assert rec.initialised == []
    assert rec.online.schedule == Schedule(300, 30, 100, 3, 150, random_warmup=True, precision="tf32")
    assert rec.online.saved is None and rec.online.extras == [None, None]
    assert all("initialisation" not in w.trees for w in rec.written.values())


def test_variation_baseline_is_the_initialised_runs_sac_from_scratch(monkeypatch):
    rec, config, ctxs = run_tasks(monkeypatch, "variation")
    _common(rec, config, ctxs)
    assert rec.agent.cfg is config.sac_init.sac  # separate critic batches, identical critics, damped target policy
    assert rec.agent.condition is None and rec.agent.critics is None and rec.initialised == []
    assert rec.online.schedule == Schedule(300, 30, 100, 3, 150, random_warmup=True, precision="tf32")


def test_initialised_run_starts_from_the_policy_and_conditions_the_critics_on_z(monkeypatch):
    rec, config, ctxs = run_tasks(monkeypatch, "mbml")
    _common(rec, config, ctxs)
    assert rec.initialised == [(101, "task b", config.sac_init.sac), (100, "task a", config.sac_init.sac)]
    assert rec.agent.cfg is config.sac_init.sac
    assert rec.agent.condition.dtype == torch.float32
    np.testing.assert_array_equal(rec.agent.condition.numpy(), [[101, 0.5, -1.0], [100, 0.5, -1.0]])
    assert rec.agent.critics == ["q_d of task b", "q_d of task a"]  # Q_D of the policy, per task
    assert rec.agent.actor == ["actor of task b", "actor of task a"]  # the imitated actor, per task
    # the imitated policy warms up for sac_init.warmup_steps (no random actions: they would undo the start)
    assert rec.online.schedule == Schedule(300, 40, 100, 3, 150, random_warmup=False, precision="tf32")
    assert [e["rollout_returns"][0] for e in rec.online.extras] == [101.0, 100.0]  # kept in the checkpoints
    for t in (0, 1):
        assert rec.written[t].trees["initialisation"]["rollout_returns"][0] == 100 + t


def test_a_resumed_initialised_run_takes_z_from_its_checkpoints_and_does_not_initialise_again(monkeypatch):
    saved = [{"step": 150, "extra": {"z": np.array([7.0, 8.0, 9.0])}},
             {"step": 150, "extra": {"z": np.array([1.0, 2.0, 3.0])}}]
    rec, config, ctxs = run_tasks(monkeypatch, "mbml", saved=saved)
    assert rec.initialised == [] and rec.agent.critics is None and rec.agent.actor is None
    np.testing.assert_array_equal(rec.agent.condition.numpy(), [[7, 8, 9], [1, 2, 3]])
    assert rec.online.saved is saved and rec.online.extras == [s["extra"] for s in saved]
    assert rec.online.schedule.random_warmup is False and rec.online.schedule.warmup_steps == 40
    assert rec.written[1].trees["initialisation"] is saved[0]["extra"]


@pytest.mark.parametrize("run", ["random", "variation"])
def test_a_resumed_baseline_stays_unconditioned(monkeypatch, run):
    saved = [{"step": 150, "extra": None}, {"step": 150, "extra": None}]
    rec, config, ctxs = run_tasks(monkeypatch, run, saved=saved)
    assert rec.agent.condition is None and rec.online.saved is saved and rec.online.extras == [None, None]
    assert rec.online.schedule.random_warmup is True


@pytest.mark.parametrize("run", ["random", "mbml"])
def test_a_group_of_one_test_task(monkeypatch, run):
    """A group may hold a single task (e.g. --group-size 1): the same SAC with a task axis of one."""
    rec, config, ctxs = run_tasks(monkeypatch, run, tasks=(2,))
    _common(rec, config, ctxs, tasks=("task c",))
    assert (rec.agent.condition is None) == (run == "random")
    assert rec.online.schedule.random_warmup == (run == "random")
    if run == "mbml":
        np.testing.assert_array_equal(rec.agent.condition.numpy(), [[102, 0.5, -1.0]])
        assert rec.agent.critics == ["q_d of task c"] and rec.agent.actor == ["actor of task c"]
    else:
        assert rec.agent.cfg.separate_critic_batches is False
