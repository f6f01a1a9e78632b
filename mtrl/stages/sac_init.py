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
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mtrl.algos.context import context_rows
from mtrl.config import SAC_INIT_BASELINES
from mtrl.data import TransitionBuffer
from mtrl.pipeline import layout
from mtrl.pipeline.base import Input, Output, Stage, Unit, UnitContext, task_key
from mtrl.pipeline.run_data import n_test_tasks, read_distribution
from mtrl.rl.episodes import run_lockstep
from mtrl.rl.online import Schedule, train_online
from mtrl.rl.policies import load_multitask_policy


class SacInit(Stage):
    name = "sac-init"
    sections = ("sac_init",)

    def units(self, config, run_dir):
        cfg = config.sac_init
        units = []
        for t in range(n_test_tasks(config)):
            for run in (*cfg.baselines, *cfg.policies):
                inputs = {"tasks": layout.tasks_input(run_dir)}
                if run not in SAC_INIT_BASELINES:
                    inputs["policy"] = Input(layout.policy(run_dir, run), "policy", "distill")
                output = Output(layout.sac_init(run_dir, run, t), "sac_init")
                units.append(Unit(f"{run}/{task_key(t)}", {"curves": output}, inputs,
                                  params={"run": run, "test_task": t}, task=t))
        return units

    def run_unit(self, ctx: UnitContext) -> None:
        from mtrl.algos.sac import SAC

        cfg, run_name, t = ctx.config.sac_init, ctx.unit.params["run"], ctx.unit.params["test_task"]
        dist = read_distribution(ctx.unit.inputs["tasks"].path)
        spec, task = dist.spec, dist.test_tasks[t]
        sac_cfg = cfg.sac
        if run_name == "random":  # the reference SAC: independently initialised critics, one shared batch
            sac_cfg = dataclasses.replace(sac_cfg, separate_critic_batches=False, identical_critic_init=False,
                                          target_policy=False, damped_policy=False)
        saved = ctx.checkpointer.load()
        init, networks = None, None
        if run_name not in SAC_INIT_BASELINES:
            init = saved["extra"] if saved is not None else None
            if init is None:
                init, networks = self._initialise(ctx, dist, task, sac_cfg)
        condition = None if init is None else torch.as_tensor(init["z"], dtype=torch.float32)
        agent = SAC(sac_cfg, spec.obs_dim, spec.act_dim, spec.max_action, ctx.device, critic_condition=condition)
        if networks is not None:
            agent.init_critics_from(networks["q_d"])
            agent.init_actor_from(networks["actor"])
        if init is None:
            schedule = Schedule(cfg.steps, sac_cfg.random_steps, cfg.eval_every, cfg.eval_episodes,
                                cfg.checkpoint_every)
        else:
            schedule = Schedule(cfg.steps, cfg.warmup_steps, cfg.eval_every, cfg.eval_episodes, cfg.checkpoint_every,
                                random_warmup=False)
        buffer = TransitionBuffer(cfg.steps, spec.obs_dim, spec.act_dim)
        run = train_online(ctx, agent, dist.make_env(task), dist.make_env(task), buffer, schedule, extra=init)
        with ctx.writer("curves") as w:
            w.tree("curves", run.curve_tree())
            if init is not None:
                w.tree("initialisation", init)
            w.attrs["run"] = run_name
            w.attrs["test_task"] = t

    def _initialise(self, ctx: UnitContext, dist, task, sac_cfg) -> tuple[dict, dict]:
        """Alg. 8: roll out the multi-task policy, infer z, imitate its actions with a fresh Gaussian policy."""
        from mtrl.algos.sac import imitate
        from mtrl.nn import TanhGaussianActor, seeded_generator

        cfg, spec = ctx.config.sac_init, dist.spec
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
        generator = seeded_generator(ctx.device, ctx.seed)
        losses = imitate(actor, observations, actions, cfg.imitation_steps, cfg.imitation_batch, sac_cfg.actor_lr,
                         generator)
        init = {"z": z, "imitation_losses": np.array(losses), "rollout_returns": np.array(returns)}
        networks = {"q_d": policy.algo.q_d.state_dict(), "actor": actor.state_dict()}
        return init, networks
