"""Stage `sac-init` (MBML Sec. 5.3, App. J, Alg. 8–9): SAC on each unseen test task, started from a multi-task
policy, beside SAC baselines on the same tasks and seeds.

Initialised run: roll out the multi-task policy for `rollout_steps` transitions (belief from the prior, then
from the posterior over what was collected, as in evaluation), infer z as the posterior mean over all of them,
fit a new Gaussian policy to the collected actions by maximum likelihood (Alg. 8), start both critics from
Q_D(·, z), and train SAC with separate critic mini-batches and a target policy (Alg. 9). As in the official
code, SAC starts from an empty buffer that the imitated policy fills with `warmup_steps` transitions before the
first update (no random actions: they would discard the initialisation), and `sac.damped_policy` copies the
target policy back into the actor after every update, so each policy step is damped to `sac.policy_tau`.
Baselines: `random` — standard SAC from random initialisation; `variation` — App. J.2, the initialised run's
SAC (identically initialised critics on separate mini-batches, the damped target policy) from random
initialisation, with random-action warm-up. All use the critic size of Q_D (Table 8). Curves are returns
against SAC's own interactions (warm-up included); the rollout's `rollout_steps` interactions come on top for
the initialised run.

Task-batched (`--group-size`): units are (run, test task), listed run-major; the test tasks of one run in a group
train as one SAC with a task axis, one env per task in lockstep (`mtrl.rl.online`), each with its unit's seed,
so each task's curves are those of its own SAC. A task's initialisation (rollout, imitation) reseeds the global
generators with its unit's seed first, so it does not depend on the group either.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mtrl.algos.context import context_rows
from mtrl.config import SAC_INIT_BASELINES
from mtrl.data import TransitionBuffer
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, load_group_checkpoints, task_key
from mtrl.pipeline.run_data import n_test_tasks, read_distribution
from mtrl.rl.episodes import run_lockstep
from mtrl.rl.online import Schedule, train_online
from mtrl.rl.policies import load_multitask_policy
from mtrl.seeding import derive_seed, seed_everything


class SacInit(Stage):
    name = "sac-init"
    sections = ("sac_init",)
    task_batched = True  # the test tasks of one run (initialised or baseline) train as one task-batched SAC

    def units(self, config, run_dir):
        cfg = config.sac_init
        units = []
        for run in (*cfg.baselines, *cfg.policies):  # run-major: a group of consecutive units shares its run
            for t in range(n_test_tasks(config)):
                inputs = {"tasks": layout.tasks_input(run_dir)}
                if run not in SAC_INIT_BASELINES:
                    inputs["policy"] = Input(layout.policy(run_dir, run), "policy", "distill")
                output = Output(layout.sac_init(run_dir, run, t), "sac_init")
                units.append(Unit(f"{run}/{task_key(t)}", {"curves": output}, inputs,
                                  params={"run": run, "test_task": t}, task=t))
        return units

    def run_group(self, ctxs: list[UnitContext]) -> None:
        """The group's units of each run (a group may straddle two) as one task-batched SAC per run."""
        runs = list(dict.fromkeys(ctx.unit.params["run"] for ctx in ctxs))
        for run_name in runs:
            self._run_tasks([ctx for ctx in ctxs if ctx.unit.params["run"] == run_name])

    def _run_tasks(self, ctxs: list[UnitContext]) -> None:
        """One run (initialised or baseline) on the test tasks of `ctxs`; each task's curves are those of its
        own SAC with its unit's seed."""
        from mtrl.algos.sac import SAC

        UnitContext.share_clock(ctxs)
        ctx0 = ctxs[0]
        cfg, run_name = ctx0.config.sac_init, ctx0.unit.params["run"]
        dist = read_distribution(ctx0.unit.inputs["tasks"].path)
        spec, tasks = dist.spec, [dist.test_tasks[ctx.unit.params["test_task"]] for ctx in ctxs]
        sac_cfg = cfg.sac
        if run_name == "random":  # the reference SAC: independently initialised critics, one shared batch
            sac_cfg = dataclasses.replace(sac_cfg, separate_critic_batches=False, identical_critic_init=False,
                                          target_policy=False, damped_policy=False)
        saved = load_group_checkpoints(ctxs)
        inits, networks = [None] * len(ctxs), None
        if run_name not in SAC_INIT_BASELINES:
            if saved is not None:
                inits = [s["extra"] for s in saved]
            else:
                inits, networks = zip(*(self._initialise(ctx, dist, task, sac_cfg)
                                        for ctx, task in zip(ctxs, tasks, strict=True)), strict=True)
        condition = None
        if inits[0] is not None:
            condition = torch.stack([torch.as_tensor(init["z"], dtype=torch.float32) for init in inits])
        agent = SAC(sac_cfg, spec.obs_dim, spec.act_dim, spec.max_action, ctx0.device, critic_condition=condition,
                    tasks=len(ctxs), seeds=[ctx.seed for ctx in ctxs])
        if networks is not None:
            agent.init_critics_from([n["q_d"] for n in networks])
            agent.init_actor_from([n["actor"] for n in networks])
        if inits[0] is None:
            schedule = Schedule(cfg.steps, sac_cfg.random_steps, cfg.eval_every, cfg.eval_episodes,
                                cfg.checkpoint_every, precision=cfg.precision)
        else:
            schedule = Schedule(cfg.steps, cfg.warmup_steps, cfg.eval_every, cfg.eval_episodes, cfg.checkpoint_every,
                                random_warmup=False, precision=cfg.precision)
        buffers = [TransitionBuffer(cfg.steps, spec.obs_dim, spec.act_dim) for _ in ctxs]
        envs, eval_envs = ([dist.make_env(task) for task in tasks] for _ in range(2))
        runs = train_online(ctxs, agent, envs, eval_envs, buffers, schedule, saved, inits)
        for ctx, run, init in zip(ctxs, runs, inits, strict=True):
            with ctx.writer("curves") as w:
                run.write_curve(w, "curves")
                if init is not None:
                    w.tree("initialisation", init)
                w.attrs["run"] = run_name
                w.attrs["test_task"] = ctx.unit.params["test_task"]

    def _initialise(self, ctx: UnitContext, dist, task, sac_cfg) -> tuple[dict, dict]:
        """Alg. 8: roll out the multi-task policy, infer z, imitate its actions with a fresh Gaussian policy."""
        from mtrl.algos.sac import imitate
        from mtrl.nn import TanhGaussianActor, seeded_generator

        cfg, spec = ctx.config.sac_init, dist.spec
        seed_everything(ctx.seed)  # the imitated actor's initialisation: the task's own, whatever its group
        with ctx.read("policy") as art:
            policy = load_multitask_policy(art, ctx.device, ctx.seed)
        env, rows, returns = dist.make_env(task), [], []
        collected = 0
        while collected < cfg.rollout_steps:
            context = np.concatenate(rows) if rows else None
            belief = policy.infer(context)
            obs, act, rew, next_obs = run_lockstep([env], lambda o, _, b=belief: policy.act(o, b[None]),
                                                   ctx.seed + len(returns))[0]
            rows.append(context_rows(obs, act, next_obs, rew))
            returns.append(float(rew.sum()))
            collected += len(rew)
        context = np.concatenate(rows)[: cfg.rollout_steps]
        z, _ = policy.algo.posterior(context)
        obs_dim, act_dim = spec.obs_dim, spec.act_dim
        observations = torch.as_tensor(context[:, :obs_dim], device=ctx.device)
        actions = torch.as_tensor(context[:, obs_dim: obs_dim + act_dim], device=ctx.device)
        actor = TanhGaussianActor(obs_dim, act_dim, sac_cfg.actor_hidden, spec.max_action).to(ctx.device)
        generator = seeded_generator(ctx.device, derive_seed(ctx.seed, "imitation"))  # not the SAC's stream
        losses = imitate(actor, observations, actions, cfg.imitation_steps, cfg.imitation_batch, sac_cfg.actor_lr,
                         generator)
        init = {"z": z, "imitation_losses": np.array(losses), "rollout_returns": np.array(returns)}
        networks = {"q_d": policy.algo.q_d.state_dict(), "actor": actor.state_dict()}
        return init, networks
