"""Task samplers: each maps (rng, n) to a float64 array [n, task_dim].

They are module-level functions bound with functools.partial in the registry, so a distribution
pickles (worker processes can receive it). None of them imports MuJoCo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# WalkerParam task layout on Gymnasium's Walker2d-v5 model: (model field, number of entries, log base).
# Every entry is multiplied by base ** U(-limit, limit), as in the rand_param_envs walker used by MBML/PEARL.
WALKER_PARAM_LAYOUT = (
    ("body_mass", 8, 1.5),  # nbody (world body included, its mass is 0)
    ("body_inertia", 8 * 3, 1.5),
    ("dof_damping", 9, 1.3),  # nv
    ("geom_friction", 8 * 3, 1.5),  # ngeom x (sliding, torsional, rolling)
)
WALKER_PARAM_DIM = sum(size for _, size, _ in WALKER_PARAM_LAYOUT)


def uniform_scalar(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """One parameter ~ U(low, high): a direction angle or a target velocity."""
    return rng.uniform(low, high, size=(n, 1))


def uniform_box(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """A 2-D point ~ U[low, high]^2: a goal in a square or a wind vector."""
    return rng.uniform(low, high, size=(n, 2))


def points_on_arc(rng: np.random.Generator, n: int, radius: float, max_angle: float) -> np.ndarray:
    """2-D points at `radius` with angle ~ U(0, max_angle)."""
    angle = rng.uniform(0.0, max_angle, size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def stratified_points_on_arc(rng: np.random.Generator, n: int, radius: float, max_angle: float) -> np.ndarray:
    """2-D points at `radius`, one angle uniform in each of n equal slices of (0, max_angle): a test split
    that spans the whole arc (n independent draws can bunch up: 7 of PointGoalArc's 8 did)."""
    angle = (np.arange(n) + rng.uniform(0.0, 1.0, size=n)) * (max_angle / max(n, 1))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def points_in_sector(rng: np.random.Generator, n: int, max_radius: float, max_angle: float) -> np.ndarray:
    """2-D points uniform over the disc sector of `max_radius` and angles (0, max_angle) (AntGoal)."""
    angle = rng.uniform(0.0, max_angle, size=n)
    radius = max_radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def cycle(rng: np.random.Generator, n: int, choices: Sequence[Sequence[float]]) -> np.ndarray:
    """The first n items of choices, choices, ...: for finite task sets (the rng is not used)."""
    del rng
    table = np.asarray(choices, dtype=np.float64)
    return table[np.arange(n) % len(table)]


def walker_param_scales(rng: np.random.Generator, n: int, log_scale_limit: float) -> np.ndarray:
    """Multipliers for the Walker2d physical parameters, laid out as WALKER_PARAM_LAYOUT."""
    base = np.concatenate([np.full(size, b) for _, size, b in WALKER_PARAM_LAYOUT])
    return base ** rng.uniform(-log_scale_limit, log_scale_limit, size=(n, WALKER_PARAM_DIM))


def umaze_goals(rng: np.random.Generator, n: int) -> np.ndarray:
    """Goals in the two arms of the U-maze, alternating upper/lower arm (balanced, as in MBML's code).

    MBML draws x ~ U(0.4, 1.2) or U(2.4, 3.2), y ~ U(1, 2) in D4RL maze2d coordinates. D4RL places
    the ball 0.2 off the cell grid (body at (1.2, 1.2), walls at integer cells + 1), so in cell units
    those goals are the arms of the U; in Gymnasium-Robotics' centred frame (x = column - 2,
    y = 2 - row) they are x ~ U(-0.8, 0.2) and y ~ U(0.6, 1.4) (upper arm) or U(-1.4, -0.6) (lower).
    """
    x = rng.uniform(-0.8, 0.2, size=n)
    y = rng.uniform(0.6, 1.4, size=n)
    y[1::2] *= -1.0
    return np.stack([x, y], axis=1)
