"""BCQ updates per second: `mtrl.algos.bcq.BCQ.update` against a plain reference-style BCQ update.

The reference below is written the straightforward way of the official implementation (separate nn.Linear
modules, two critic networks, default Adam, `repeat_interleave`, soft updates by a loop over parameters).
Both use the same sizes (actor and critics 400-300, VAE 750-750, latent 2·act_dim), batch 100, 10 candidates,
the same data and the same number of threads; mtrl's BCQ also under `bcq.precision: bf16` (autocast), at these
sizes and at the HalfCheetahVel `cpu` profile's (all networks 128-128). Rounds of
each alternate, and the best round of each counts, so
other load on the machine disturbs the ratio as little as possible. Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_bcq.py [--threads N] [--rounds R] [--updates U] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from mtrl.algos.bcq import BCQ, BCQConfig
from mtrl.nn import precision

OBS, ACT, MAX_ACTION, N_DATA = 27, 8, 1.0, 10_000  # AntDir-sized observations and actions


class RefActor(nn.Module):
    def __init__(self, state_dim, action_dim, max_action, phi=0.05):
        super().__init__()
        self.l1 = nn.Linear(state_dim + action_dim, 400)
        self.l2 = nn.Linear(400, 300)
        self.l3 = nn.Linear(300, action_dim)
        self.max_action, self.phi = max_action, phi

    def forward(self, state, action):
        a = F.relu(self.l1(torch.cat([state, action], 1)))
        a = F.relu(self.l2(a))
        a = self.phi * self.max_action * torch.tanh(self.l3(a))
        return (a + action).clamp(-self.max_action, self.max_action)


class RefCritic(nn.Module):
    def __init__(self, state_dim, action_dim):
        super().__init__()
        self.l1, self.l2, self.l3 = (
            nn.Linear(state_dim + action_dim, 400),
            nn.Linear(400, 300),
            nn.Linear(300, 1),
        )
        self.l4, self.l5, self.l6 = (
            nn.Linear(state_dim + action_dim, 400),
            nn.Linear(400, 300),
            nn.Linear(300, 1),
        )

    def forward(self, state, action):
        sa = torch.cat([state, action], 1)
        q1 = self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))
        q2 = self.l6(F.relu(self.l5(F.relu(self.l4(sa)))))
        return q1, q2

    def q1(self, state, action):
        return self.l3(F.relu(self.l2(F.relu(self.l1(torch.cat([state, action], 1))))))


class RefVAE(nn.Module):
    def __init__(self, state_dim, action_dim, latent_dim, max_action):
        super().__init__()
        self.e1, self.e2 = nn.Linear(state_dim + action_dim, 750), nn.Linear(750, 750)
        self.mean, self.log_std = nn.Linear(750, latent_dim), nn.Linear(750, latent_dim)
        self.d1, self.d2, self.d3 = (
            nn.Linear(state_dim + latent_dim, 750),
            nn.Linear(750, 750),
            nn.Linear(750, action_dim),
        )
        self.max_action, self.latent_dim = max_action, latent_dim

    def forward(self, state, action):
        z = F.relu(self.e2(F.relu(self.e1(torch.cat([state, action], 1)))))
        mean, log_std = self.mean(z), self.log_std(z).clamp(-4, 15)
        std = torch.exp(log_std)
        return self.decode(state, mean + std * torch.randn_like(std)), mean, std

    def decode(self, state, z=None):
        if z is None:
            z = torch.randn((state.shape[0], self.latent_dim)).clamp(-0.5, 0.5)
        a = F.relu(self.d2(F.relu(self.d1(torch.cat([state, z], 1)))))
        return self.max_action * torch.tanh(self.d3(a))


class RefBCQ:
    def __init__(self, state_dim, action_dim, max_action, lr=3e-4, gamma=0.99, tau=0.005, lmbda=0.75, n=10):
        self.actor = RefActor(state_dim, action_dim, max_action)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic = RefCritic(state_dim, action_dim)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.vae = RefVAE(state_dim, action_dim, 2 * action_dim, max_action)
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr)
        self.gamma, self.tau, self.lmbda, self.n = gamma, tau, lmbda, n

    def update(self, batch):
        state, action, next_state = batch["observations"], batch["actions"], batch["next_observations"]
        reward, not_done = batch["rewards"].reshape(-1, 1), 1 - batch["terminals"].reshape(-1, 1)
        batch_size = state.shape[0]

        recon, mean, std = self.vae(state, action)
        recon_loss = F.mse_loss(recon, action)
        kl_loss = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        vae_loss = recon_loss + 0.5 * kl_loss
        self.vae_optimizer.zero_grad()
        vae_loss.backward()
        self.vae_optimizer.step()

        with torch.no_grad():
            next_state = torch.repeat_interleave(next_state, self.n, 0)
            target_q1, target_q2 = self.critic_target(
                next_state, self.actor_target(next_state, self.vae.decode(next_state))
            )
            target_q = self.lmbda * torch.min(target_q1, target_q2) + (1 - self.lmbda) * torch.max(target_q1, target_q2)
            target_q = target_q.reshape(batch_size, -1).max(1)[0].reshape(-1, 1)
            target_q = reward + not_done * self.gamma * target_q
        current_q1, current_q2 = self.critic(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()

        perturbed_actions = self.actor(state, self.vae.decode(state))
        actor_loss = -self.critic.q1(state, perturbed_actions).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
            target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
        for param, target_param in zip(self.actor.parameters(), self.actor_target.parameters(), strict=True):
            target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "vae_loss": vae_loss.item(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=15, help="updates per round")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: process time, steadier on a busy machine"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = {
        "observations": torch.randn(N_DATA, OBS),
        "actions": torch.rand(N_DATA, ACT) * 2 - 1,
        "rewards": torch.randn(N_DATA),
        "next_observations": torch.randn(N_DATA, OBS),
        "terminals": (torch.rand(N_DATA) < 0.01).float(),
    }
    cfg = BCQConfig()
    batches = [{k: v[idx] for k, v in data.items()} for idx in torch.randint(N_DATA, (args.updates, cfg.batch_size))]
    ours, ours_bf16 = BCQ(cfg, OBS, ACT, MAX_ACTION, "cpu"), BCQ(cfg, OBS, ACT, MAX_ACTION, "cpu")
    small = BCQConfig(actor_hidden=(128, 128), critic_hidden=(128, 128), vae_hidden=(128, 128))  # HalfCheetahVel cpu
    small_fp32, small_bf16 = BCQ(small, OBS, ACT, MAX_ACTION, "cpu"), BCQ(small, OBS, ACT, MAX_ACTION, "cpu")
    task_axis = [{k: v[None] for k, v in batch.items()} for batch in batches]  # mtrl's BCQ: one task

    def bf16(bcq):
        def update(batch):
            with precision("bf16", "cpu"):  # `bcq.precision: bf16`
                bcq.update(batch)
        return update

    updates = {"mtrl BCQ": (ours.update, task_axis), "mtrl bf16": (bf16(ours_bf16), task_axis),
               "reference": (RefBCQ(OBS, ACT, MAX_ACTION).update, batches),
               "cpu fp32": (small_fp32.update, task_axis), "cpu bf16": (bf16(small_bf16), task_axis)}
    best = dict.fromkeys(updates, float("inf"))
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, (update, inputs) in updates.items():
            start = clock()
            for batch in inputs:
                update(batch)
            if round_:
                best[name] = min(best[name], (clock() - start) / len(batches))

    setup = f"obs {OBS}, act {ACT}, batch {cfg.batch_size}, {args.threads} thread(s)"
    print(f"BCQ update, {setup}, best of {args.rounds} rounds, {args.clock} clock:")
    for name, seconds in best.items():
        print(f"  {name:10s} {1 / seconds:7.1f} updates/s  ({1e3 * seconds:.1f} ms)")
    print(f"  speed-up   {best['reference'] / best['mtrl BCQ']:.2f}x (fp32 against the reference)")
    print(f"  bf16       {best['mtrl BCQ'] / best['mtrl bf16']:.2f}x (bf16 autocast against fp32, mtrl BCQ)")
    print(f"  bf16, cpu  {best['cpu fp32'] / best['cpu bf16']:.2f}x (the same at the HalfCheetahVel cpu profile's "
          f"128-128 networks)")


if __name__ == "__main__":
    main()
