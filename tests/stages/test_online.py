"""The online SAC loop (mtrl.rl.online): the warm-up (random actions for collect and the SAC baselines, the
agent's own for sac-init), tasks in lockstep that stay independent runs, and resuming mid-episode."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tqdm

from mtrl.algos.sac import SAC, SACConfig
from mtrl.data import TransitionBuffer
from mtrl.envs import make_distribution
from mtrl.nn import to_numpy_tree, to_torch_tree
from mtrl.pipeline.base import load_group_checkpoints
from mtrl.rl.online import Schedule, train_online


class RecordingAgent:
    """Acts with a constant, counts exploring actions and the number of transitions before each update."""

    cfg = SimpleNamespace(batch_size=4, utd=1)
    max_action, act_dim, batches_per_update, tasks = 1.0, 2, 1, 1

    def __init__(self, buffer):
        self.buffer, self.exploring_acts, self.updates_at = buffer, 0, []

    def act(self, obs, deterministic=False):
        assert obs.shape == (1, 2)  # one observation per task
        self.exploring_acts += not deterministic
        return np.full((1, 2), 0.5, np.float32)

    def update(self, batch):
        assert batch["observations"].shape == (1, 4, 2)  # [tasks, B, obs]
        self.updates_at.append(self.buffer.size)


class MemoryCheckpointer:
    """A unit's checkpoints in memory; `kill_at`: raise `Killed` right after saving the checkpoint of that step."""

    def __init__(self, kill_at: int | None = None):
        self.state, self.kill_at = None, kill_at

    def load(self):
        return copy.deepcopy(self.state)

    def save(self, state):
        self.state = copy.deepcopy(state)
        if state["step"] == self.kill_at:
            raise Killed


class Killed(Exception):
    pass


def make_ctx(seed: int, key: str, checkpointer=None):
    return SimpleNamespace(seed=seed, device="cpu", log=SimpleNamespace(info=lambda message: None),
                           checkpointer=checkpointer or MemoryCheckpointer(),
                           progress=lambda total, **kw: tqdm.tqdm(total=total, disable=True),
                           stage=SimpleNamespace(name="test"), unit=SimpleNamespace(key=key), eval_seconds=0.0)


def run(schedule):
    dist = make_distribution("PointGoalArc", n_train=1, n_test=0)
    buffer = TransitionBuffer(schedule.steps, 2, 2)
    agent = RecordingAgent(buffer)
    env = dist.make_env(dist.train_tasks[0])
    train_online([make_ctx(0, "unit")], agent, [env], [dist.make_env(dist.train_tasks[0])], [buffer], schedule)
    return agent, buffer


@pytest.mark.parametrize("random_warmup", [True, False])
def test_no_update_before_the_warm_up_ends_and_who_acts_in_it(random_warmup):
    agent, buffer = run(Schedule(60, 20, eval_every=1000, eval_episodes=1, checkpoint_every=1000,
                                 random_warmup=random_warmup))
    assert agent.updates_at[0] == 20 and len(agent.updates_at) == 41  # one update per step from step 20 on
    actions = buffer.arrays()["actions"]
    if random_warmup:  # uniform in [-1, 1] for 20 steps, then the policy
        assert agent.exploring_acts == 40 and not np.allclose(actions[:20], 0.5)
    else:  # sac-init (reference): the initialised policy fills the emptied buffer before the first update
        assert agent.exploring_acts == 60
    np.testing.assert_array_equal(actions[20:], 0.5)


# ---------------------------------------------------------------- lockstep and resume, with a real (tiny) SAC

class ToyEnv:
    """Deterministic given its reset seed and actions; episodes end at different steps in every task: a time
    limit of `horizon` steps, and a termination when the point leaves the disc of radius 1.2."""

    def __init__(self, horizon: int, goal: tuple[float, float]):
        self.horizon, self.goal = horizon, np.array(goal)

    def reset(self, seed=None):
        self.x, self.t = np.random.default_rng(seed).uniform(-1.0, 1.0, 2), 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = self.x + 0.3 * np.asarray(action, np.float64)
        self.t += 1
        terminated = bool(np.linalg.norm(self.x) > 1.2)
        return (self.x.copy(), -float(np.linalg.norm(self.x - self.goal)), terminated,
                not terminated and self.t >= self.horizon, {})


HORIZONS, GOALS, SEEDS = (7, 11), ((0.5, 0.5), (-0.5, 0.2)), (101, 202)
# batch × act_dim = 32 per task: a bitwise match across group sizes needs a multiple of 32 (`mtrl.algos.sac`).
CFG = SACConfig(actor_hidden=(16,), critic_hidden=(16,), batch_size=16, random_steps=20)
SCHEDULE = Schedule(60, 20, eval_every=20, eval_episodes=2, checkpoint_every=27)  # steps 27, 54: mid-episode


def run_group(tasks, checkpointers=None, agent_seeds=None, resume=False):
    """`train_online` on the toy tasks `tasks` (indices into HORIZONS/GOALS/SEEDS) as one task-batched SAC."""
    checkpointers = checkpointers or [MemoryCheckpointer() for _ in tasks]
    ctxs = [make_ctx(SEEDS[t], f"task_{t}", c) for t, c in zip(tasks, checkpointers, strict=True)]
    agent = SAC(CFG, 2, 2, 1.0, "cpu", tasks=len(tasks), seeds=agent_seeds or [SEEDS[t] for t in tasks])
    envs, eval_envs = ([ToyEnv(HORIZONS[t], GOALS[t]) for t in tasks] for _ in range(2))
    buffers = [TransitionBuffer(SCHEDULE.steps, 2, 2) for _ in tasks]
    saved = load_group_checkpoints(ctxs) if resume else None
    if resume:
        assert saved is not None
    runs = train_online(ctxs, agent, envs, eval_envs, buffers, SCHEDULE, saved, extras=[{"task": t} for t in tasks])
    return agent, buffers, runs


def assert_same_run(a, b):
    """Two (agent state, buffer, run) of one task are the same, bit for bit."""
    (state_a, buffer_a, run_a), (state_b, buffer_b, run_b) = a, b
    tolerance = {"rtol": 0, "atol": 0}
    for key, values in buffer_a.arrays().items():
        np.testing.assert_allclose(values, buffer_b.arrays()[key], err_msg=key, **tolerance)
    torch.testing.assert_close(to_torch_tree(to_numpy_tree(state_a)), to_torch_tree(to_numpy_tree(state_b)),
                               **tolerance)
    assert (run_a.step, run_a.episode, run_a.episode_start) == (run_b.step, run_b.episode, run_b.episode_start)
    np.testing.assert_allclose(run_a.curve, run_b.curve, **tolerance)
    np.testing.assert_allclose(run_a.episode_returns, run_b.episode_returns, **tolerance)


def test_tasks_in_lockstep_are_the_runs_each_would_have_alone():
    """Two tasks whose episodes end at different steps, run as one task-batched SAC, give each task the buffer,
    agent and curves of its own single-task run, bit for bit (`mtrl.algos.sac`: on CPU, with B·act_dim a multiple
    of 32)."""
    agent, buffers, runs = run_group([0, 1])
    ends = [np.flatnonzero(b.arrays()["terminals"] | b.arrays()["timeouts"]) for b in buffers]
    assert not np.array_equal(ends[0], ends[1][: len(ends[0])])  # the tasks' episodes end at different steps
    assert runs[0].episode != runs[1].episode
    for t, (state, buffer, run) in enumerate(zip(agent.task_states(), buffers, runs, strict=True)):
        alone_agent, alone_buffers, alone_runs = run_group([t])
        assert_same_run((state, buffer, run), (alone_agent.state_dict(), alone_buffers[0], alone_runs[0]))


def test_resume_mid_episode_repeats_the_uninterrupted_run():
    """Killed right after the checkpoint of step 27 (both tasks mid-episode, at different points of their
    episodes), the group resumes from its checkpoints (agent built with other seeds, fresh envs and buffers) and
    ends bit for bit where the uninterrupted run ends."""
    agent, buffers, runs = run_group([0, 1])
    checkpointers = [MemoryCheckpointer(), MemoryCheckpointer(kill_at=27)]
    with pytest.raises(Killed):
        run_group([0, 1], checkpointers)
    saved = [c.state for c in checkpointers]
    assert [s["step"] for s in saved] == [27, 27] and [s["extra"] for s in saved] == [{"task": 0}, {"task": 1}]
    assert all(0 < 27 - s["run"]["episode_start"] for s in saved)  # mid-episode: replayed on resume
    assert saved[0]["run"]["episode_start"] != saved[1]["run"]["episode_start"]
    checkpointers[1].kill_at = None
    resumed_agent, resumed_buffers, resumed_runs = run_group([0, 1], checkpointers, agent_seeds=[7, 8], resume=True)
    for t in range(2):
        assert_same_run((resumed_agent.task_states()[t], resumed_buffers[t], resumed_runs[t]),
                        (agent.task_states()[t], buffers[t], runs[t]))


def test_resume_refuses_an_environment_that_does_not_replay():
    checkpointers = [MemoryCheckpointer(), MemoryCheckpointer(kill_at=27)]
    with pytest.raises(Killed):
        run_group([0, 1], checkpointers)
    start = checkpointers[1].state["run"]["episode_start"]
    checkpointers[1].state["buffer"]["arrays"]["actions"][start] += 0.1  # not what the env was given
    checkpointers[1].kill_at = None
    with pytest.raises(RuntimeError, match="diverged"):
        run_group([0, 1], checkpointers, resume=True)


def test_sac_init_groups_write_what_each_test_task_writes_alone(smoke_run, tmp_path):
    """The smoke pipeline ran sac-init as one group of its 6 units (3 runs × 2 test tasks: one task-batched SAC
    per run); rerun one unit at a time, every curve and initialisation is the same, bit for bit."""
    import shutil

    from smoke import run_stages

    from mtrl.artifacts import open_artifact

    config, run_dir = smoke_run
    shutil.copytree(run_dir, tmp_path / "run")
    run_stages(config, tmp_path / "run", ["sac-init"], group_size=1, force=True)
    log = (tmp_path / "run" / "logs" / "mtrl.log").read_text()
    assert "sac-init random/task_00: done" in log and "sac-init random/task_00..mbml/task_01 (6 tasks): done" in log
    for run in ("random", "variation", "mbml"):
        for task in (0, 1):
            trees = []
            for root in (run_dir, tmp_path / "run"):
                with open_artifact(root / "sac_init" / run / f"task_{task:02d}.h5", "sac_init") as art:
                    trees.append({name: art.tree(name) for name in ("curves", "initialisation") if name in art})
            torch.testing.assert_close(trees[0], trees[1], rtol=0, atol=0)


def test_sac_init_units_record_shares_that_add_up_to_their_group_time(smoke_run):
    """sac-init trains its group run after run (random, variation, mbml); each unit's `wall_seconds` is its share
    of its own run's time, so the stage time the report sums is the group's, not about two thirds of it (what
    shares of the whole group's clock, read when each run ends, added up to)."""
    from mtrl.artifacts import open_artifact

    _, run_dir = smoke_run
    seconds = 0.0
    for path in (run_dir / "sac_init").glob("*/task_*.h5"):
        with open_artifact(path, "sac_init") as art:
            seconds += float(art.attrs["wall_seconds"])
    (line,) = [line for line in (run_dir / "logs" / "mtrl.log").read_text().splitlines()
               if "sac-init random/task_00..mbml/task_01 (6 tasks): done in" in line]
    group_seconds = float(line.rsplit("done in ", 1)[1].rstrip("s"))
    assert 0.9 * group_seconds <= seconds <= group_seconds + 0.05
