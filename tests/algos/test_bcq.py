"""BCQ: Eq. 1 acting, learning on a fixed small dataset, checkpoints, the teacher interface MBML uses, and the
task axis (T tasks trained as one model = T independent single-task BCQs)."""

import dataclasses

import numpy as np
import pytest
import torch

from mtrl.algos.bcq import BCQ, BCQConfig, BCQPolicy
from mtrl.nn import to_numpy_tree, to_torch_tree

OBS, ACT, MAX_ACTION = 3, 2, 2.0
TINY = BCQConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), vae_hidden=(32, 32), batch_size=32, lr=1e-3)


def make_data(n=256, seed=0):
    """A fixed dataset whose behaviour actions are a smooth function of the state, inside the bounds."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    actions = MAX_ACTION * 0.8 * torch.tanh(obs[:, :ACT] - obs[:, ACT:].sum(-1, keepdim=True))
    return {
        "observations": obs,
        "actions": actions,
        "rewards": obs[:, 0] - actions.pow(2).sum(-1),
        "next_observations": obs + 0.1 * torch.randn(n, OBS, generator=g),
        "terminals": (torch.rand(n, generator=g) < 0.1).float(),
    }


def batches(data, steps, batch_size, seed=1):
    """Mini-batches of one task, on a task axis of 1: [1, batch_size, ...]."""
    g = torch.Generator().manual_seed(seed)
    n = len(data["observations"])
    for _ in range(steps):
        idx = torch.randint(n, (batch_size,), generator=g)
        yield {k: v[idx][None] for k, v in data.items()}


def train(algo, data, steps, seed=1):
    """`steps` updates; the metrics as floats (task 0's)."""
    return [{k: v.item() for k, v in algo.update(b).items()} for b in batches(data, steps, algo.cfg.batch_size, seed)]


def make_bcq(cfg=TINY, seed=0):
    return BCQ(cfg, OBS, ACT, MAX_ACTION, "cpu", seeds=[seed])


def test_defaults_are_the_reference_hyper_parameters():
    cfg = BCQConfig()
    assert (cfg.actor_hidden, cfg.critic_hidden, cfg.vae_hidden) == ((400, 300), (400, 300), (750, 750))
    assert (cfg.lmbda, cfg.batch_size, cfg.phi, cfg.num_candidates) == (0.75, 100, 0.05, 10)
    assert (cfg.tau, cfg.gamma, cfg.lr, cfg.latent_dim) == (0.005, 0.99, 3e-4, None)
    assert all(f.metadata.get("help") for f in dataclasses.fields(BCQConfig))
    assert make_bcq(TINY).vae.latent_dim == 2 * ACT


@pytest.mark.parametrize("batch", [False, True])
def test_act_is_eq1_within_bounds_and_near_a_candidate(batch):
    cfg = dataclasses.replace(TINY, phi=0.3)  # a large Φ, so that the bound on the correction is tested
    algo = make_bcq(cfg)
    train(algo, make_data(), 50)
    obs = np.random.default_rng(0).normal(size=(1, 5, OBS) if batch else (1, OBS)).astype(np.float32) * 3

    before = algo.generator.get_state()
    action = algo.act(obs)
    assert action.shape == obs.shape[:-1] + (ACT,)
    assert np.all(np.abs(action) <= MAX_ACTION)

    # Replay the same draws: n decoder candidates per state, each perturbed; the chosen one has the top Q1.
    algo.generator.set_state(before)
    with torch.no_grad():
        states = torch.as_tensor(obs).reshape(1, -1, 1, OBS).expand(1, -1, cfg.num_candidates, OBS)
        candidates = algo.vae.decode(states)
        perturbed = algo.actor(states, candidates)[0]
        q1 = algo.critic.q1(states[0:1], perturbed[None])[0]
        candidates = candidates[0]
    assert torch.all((perturbed - candidates).abs() <= cfg.phi * MAX_ACTION + 1e-6)
    assert (perturbed - candidates).abs().max() > 0.1 * cfg.phi * MAX_ACTION  # ξ does correct
    chosen = perturbed[torch.arange(len(perturbed)), q1.argmax(-1)]
    assert not torch.equal(chosen, perturbed[torch.arange(len(perturbed)), q1.argmin(-1)])  # the rule matters
    np.testing.assert_allclose(action.reshape(-1, ACT), chosen.numpy(), rtol=0, atol=1e-6)


def test_q1_is_the_first_of_the_twin_critics():
    critic = make_bcq().critic
    obs, act = torch.randn(1, 4, 7, OBS), torch.randn(1, 4, 7, ACT)
    q1, q2 = critic(obs, act)
    assert q1.shape == q2.shape == (1, 4, 7)
    torch.testing.assert_close(critic.q1(obs, act), q1)
    assert not torch.allclose(q1, q2)  # two independently initialised critics


def test_learning_on_a_fixed_dataset():
    """Critic and VAE losses fall, and ξ learns corrections that raise Q1 above the raw VAE candidates."""
    algo, data = make_bcq(), make_data()
    metrics = train(algo, data, 200)
    first, last = metrics[:20], metrics[-20:]
    for key in ("critic_loss", "recon_loss"):
        start, end = np.mean([m[key] for m in first]), np.mean([m[key] for m in last])
        assert end < 0.5 * start, (key, start, end)
    assert all(np.isfinite(v) for m in metrics for v in m.values())

    with torch.no_grad():
        obs = data["observations"][None]
        candidates = algo.vae.decode(obs)
        gain = algo.critic.q1(obs, algo.actor(obs, candidates)) - algo.critic.q1(obs, candidates)
    assert gain.mean() > 0, gain.mean()


def test_state_dict_round_trip_resumes_bit_identically(same_state):
    data = make_data()
    algo = make_bcq(seed=0)
    train(algo, data, 5)
    state = algo.state_dict()
    stored = to_numpy_tree(state)  # as an artifact keeps it: arrays and plain values
    (batch,) = batches(data, 1, TINY.batch_size, seed=7)
    expected = algo.update(batch)
    assert not torch.equal(expected["critic_loss"], algo.update(batch)["critic_loss"])  # training moves on

    resumed = make_bcq(seed=123)  # different initial weights and generator
    resumed.load_state_dict(to_torch_tree(stored))
    assert resumed.update(batch) == expected
    for a, b in zip(algo.state_dict()["critic"].values(), resumed.state_dict()["critic"].values(), strict=True):
        assert not torch.equal(a, b)  # the original took one more step
    algo.load_state_dict(to_torch_tree(stored))
    algo.update(batch)
    assert same_state(algo, resumed)  # networks, targets, optimisers and generator


def test_policy_state_builds_an_acting_only_teacher():
    algo = make_bcq()
    train(algo, make_data(), 20)
    state = to_torch_tree(to_numpy_tree(algo.policy_state_dict()))
    assert set(state) == {"obs_dim", "act_dim", "max_action", "tasks", "actor", "critic", "vae"}

    policy = BCQPolicy.from_policy_state(TINY, state)
    assert not hasattr(policy, "update") and not any(p.requires_grad for p in policy.critic.parameters())
    obs = np.random.default_rng(1).normal(size=(1, 4, OBS)).astype(np.float32)
    policy.generator.set_state(algo.generator.get_state())
    np.testing.assert_array_equal(policy.act(obs), algo.act(obs))


def test_vae_uses_its_latent_on_the_normalised_actions_of_a_small_raw_box():
    """PointGoalArc's raw box is ±0.1: its normalised actions span [-1, 1], and on a bimodal batch of them the
    VAE's latent carries the mode (KL per row clearly above 0). On raw ±0.1 actions the VAE loss never pays for
    the latent: it collapsed to the mean action (KL 0.000 measured), and BCQ copied that average."""
    from mtrl.envs import make_distribution

    dist = make_distribution("PointGoalArc", n_train=1, n_test=1)
    env, spec = dist.make_env(dist.train_tasks[0]), dist.spec
    g = torch.Generator().manual_seed(0)
    n = 512
    obs = torch.randn(n, spec.obs_dim, generator=g)
    modes = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)  # two opposite corners of the box
    actions = modes * torch.as_tensor(env.action_space.high) * 0.9
    data = {"observations": obs, "actions": actions, "rewards": torch.zeros(n), "next_observations": obs,
            "terminals": torch.zeros(n)}
    algo = BCQ(dataclasses.replace(TINY, vae_hidden=(64, 64), batch_size=128), spec.obs_dim, spec.act_dim,
               spec.max_action, "cpu", seeds=[0])
    metrics = train(algo, data, 300)
    kl_per_row = np.mean([m["kl_loss"] for m in metrics[-50:]]) * algo.vae.latent_dim
    assert kl_per_row > 0.5


def test_two_tasks_in_one_model_train_as_two_independent_bcqs():
    """The task axis: a 2-task BCQ fed task 0's and task 1's batches ends where two single-task BCQs with the same
    seeds and batches end: weights, targets, Adam moments, generators and metrics (to float tolerance: the batched
    matmul may round differently from a 1-task one). Tasks that shared a gradient, a noise draw or a seed fail."""
    data = [make_data(seed=0), make_data(seed=5)]
    singles = [make_bcq(seed=11), make_bcq(seed=22)]
    metrics = [train(algo, d, 6, seed=3 + t) for t, (algo, d) in enumerate(zip(singles, data, strict=True))]

    both = BCQ(TINY, OBS, ACT, MAX_ACTION, "cpu", tasks=2, seeds=[11, 22])
    stacked = zip(batches(data[0], 6, TINY.batch_size, seed=3), batches(data[1], 6, TINY.batch_size, seed=4),
                  strict=True)
    joint = [both.update({k: torch.cat([a[k], b[k]]) for k in a}) for a, b in stacked]

    for t, single in enumerate(singles):
        torch.testing.assert_close(to_torch_tree(to_numpy_tree(both.task_states()[t])),
                                   to_torch_tree(to_numpy_tree(single.state_dict())), rtol=1e-5, atol=1e-6)
        for step, m in enumerate(joint):
            for key, value in m.items():
                assert value.shape == (2,)
                np.testing.assert_allclose(value[t].item(), metrics[t][step][key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(both.actor.net.layers[0].weight[0], both.actor.net.layers[0].weight[1])


def test_per_task_policies_stack_into_a_batched_teacher():
    """K per-task policy states stack into one K-task policy whose task t acts exactly as policy t alone."""
    algos = [make_bcq(seed=s) for s in (1, 2, 3)]
    for s, algo in enumerate(algos):
        train(algo, make_data(seed=s), 5)
    states = [to_numpy_tree(a.policy_state_dict()) for a in algos]
    teacher = BCQPolicy.from_policy_state(TINY, to_torch_tree(BCQPolicy.stack_policy_states(states)))
    assert teacher.tasks == 3
    obs = np.random.default_rng(2).normal(size=(3, 6, OBS)).astype(np.float32)
    generators = [torch.Generator().manual_seed(9) for _ in algos]
    together = teacher.act(obs, generators)
    for t, algo in enumerate(algos):
        alone = algo.act(obs[t:t + 1], [torch.Generator().manual_seed(9)])
        np.testing.assert_allclose(together[t], alone[0], rtol=1e-5, atol=1e-6)
    assert teacher.task_policy_states()[1]["tasks"] == 1
