"""How the multi-task methods draw their training batches from the task datasets (and relabel.h5)."""

from __future__ import annotations

import numpy as np

from mtrl.algos.context import context_rows
from mtrl.algos.mbml import RELABEL_VARIANTS
from mtrl.data import sample_rows
from mtrl.errors import ConfigError


class RelabelledContexts:
    """Per task j, the rows relabelled in relabel.h5 as context rows, and their relabelled versions per task i."""

    def __init__(self, rows: np.ndarray, rewards: np.ndarray, mask: np.ndarray, next_obs: np.ndarray | None,
                 obs_dim: int):
        self.rows = rows  # [K_j, M, D] original rows [s, a, s', r]
        self.rewards = rewards  # [K_i, K_j, M] relabelled rewards
        self.mask = mask  # [K_i, K_j, M] confident
        self.next_obs = next_obs  # [K_i, K_j, M, obs] relabelled next states (dynamics families) or None
        self.obs_dim = obs_dim

    @classmethod
    def load(cls, art, datasets: list[dict[str, np.ndarray]]) -> RelabelledContexts:
        indices = art.array("indices")  # [K, M] dataset rows that were relabelled
        rows = np.stack([context_rows(d["observations"][idx], d["actions"][idx], d["next_observations"][idx],
                                      d["rewards"][idx]) for d, idx in zip(datasets, indices, strict=True)])
        mask = art.array("reward_mask")
        next_obs = None
        if "next_observations" in art:
            next_obs = art.array("next_observations")
            mask = mask & art.array("next_state_mask")
        obs_dim = datasets[0]["observations"].shape[1]
        return cls(rows, art.array("rewards"), mask, next_obs, obs_dim)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Context c_j [K, size, D] and, for every i, c_{j→i} [K_i, K_j, size, D] with its confidence mask."""
        k, m, _ = self.rows.shape
        t = rng.integers(0, m, (k, size))
        context = np.take_along_axis(self.rows, t[:, :, None], 1)
        relabelled = np.broadcast_to(context, (k, *context.shape)).copy()
        tt = np.broadcast_to(t, (k, k, size))
        relabelled[..., -1] = np.take_along_axis(self.rewards, tt, 2)
        if self.next_obs is not None:
            o = self.obs_dim
            a = relabelled.shape[-1] - 2 * o - 1
            relabelled[..., o + a: 2 * o + a] = np.take_along_axis(self.next_obs, tt[..., None], 2)
        return context, relabelled, np.take_along_axis(self.mask, tt, 2)


def mbml_sampler(datasets: list[dict[str, np.ndarray]], cfg, variant: str, relabelled: RelabelledContexts | None):
    """MBML's batches (the keys of `MBML.batch_shapes`): per task a training batch, and the variant's context
    sets; the relabel variants add the context rows relabelled by every task's models (relabel.h5)."""
    if variant in RELABEL_VARIANTS and relabelled is None:
        raise ConfigError(f"variant {variant} needs relabel.h5; run `mtrl relabel` first")

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = [rng.integers(0, len(d["rewards"]), cfg.batch_size) for d in datasets]
        batch = {
            "observations": np.stack([d["observations"][i] for d, i in zip(datasets, idx, strict=True)]),
            "actions": np.stack([d["actions"][i] for d, i in zip(datasets, idx, strict=True)]),
        }
        if variant in RELABEL_VARIANTS:
            context, relabelled_context, mask = relabelled.sample(rng, cfg.context_size)
            batch |= {"context": context, "relabelled_context": relabelled_context, "relabel_mask": mask}
        elif variant == "no-relabel":
            batch["context"] = context_sets(datasets, rng, (cfg.hard_negative_sets, cfg.no_relabel_context_size))
        else:
            batch["context"] = context_sets(datasets, rng, (cfg.neither_context_size,))
        return batch

    return sample


def context_sets(datasets: list[dict[str, np.ndarray]], rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Context rows [s, a, s', r] drawn uniformly (with replacement) from each task's own data: [K, *shape, D]."""
    rows = []
    for d in datasets:
        idx = rng.integers(0, len(d["rewards"]), shape)
        rows.append(context_rows(d["observations"][idx], d["actions"][idx], d["next_observations"][idx],
                                 d["rewards"][idx]))
    return np.stack(rows)


def baseline_sampler(datasets: list[dict[str, np.ndarray]], cfg, variant: None = None, relabelled: None = None):
    """The baselines' batches: per task, `cfg.batch_size` transitions and a context set of `cfg.context_size`
    rows, both uniform over its dataset (Alg. 6 line 5, Alg. 7 lines 5-6), stacked over tasks."""

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = [sample_rows(d, rng.integers(0, len(d["rewards"]), cfg.batch_size)) for d in datasets]
        batch = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        batch["context"] = context_sets(datasets, rng, (cfg.context_size,))
        return batch

    return sample


def focal_sampler(datasets: list[dict[str, np.ndarray]], cfg, variant: None = None, relabelled: None = None):
    """FOCAL's batches: the baselines' (per task, `cfg.batch_size` transitions and a context set), plus a second,
    independent context set per task: `context` [K, 2, context_size, D], the same-task pairs of Eq. 13."""
    baseline = baseline_sampler(datasets, cfg)

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        batch = baseline(rng)
        batch["context"] = np.stack([batch["context"], context_sets(datasets, rng, (cfg.context_size,))], 1)
        return batch

    return sample
