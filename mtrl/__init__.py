"""mtrl: a staged pipeline for multi-task batch reinforcement learning (MBML and baselines)."""

__version__ = "0.1.0"
