"""Pieces shared by the tests that pin the algorithms' maths (the `*_steps.py` / `*_terms.py` files): quantities
written out by hand, batches whose episodes end every other row, and what an optimiser steps."""

import torch


def tanh_gaussian_log_density(u: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log of the density of tanh(u), u ~ N(mean, std²), summed over the action: an actor's log π, which leaves out
    the constant −log max_action per dimension."""
    gaussian = torch.distributions.Normal(mean, std).log_prob(u)
    return (gaussian - torch.log(1 - torch.tanh(u).pow(2))).sum(-1)


def alternating_terminals(tasks: int, rows: int) -> torch.Tensor:
    """Terminal flags [tasks, rows]: every other row ends its episode, so a target shows both of its branches."""
    return torch.tensor([[0.0, 1.0] * (rows // 2)] * tasks)


def optimised_ids(optimizer: torch.optim.Optimizer) -> list[int]:
    """The ids of the parameters `optimizer` steps, in its order."""
    return [id(p) for group in optimizer.param_groups for p in group["params"]]
