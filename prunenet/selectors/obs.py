"""`obs`: greedy structured Optimal Brain Surgeon under the probes' Gram matrix.

In `OBS_CHUNKS` steps down to the smallest width asked for, drop the rows with the smallest
||W'[:, i]||^2 / [G_K^-1]_ii, where W' is the least-squares refit of the kept columns: the output error
each row's removal costs once the other rows compensate. Rows removed earlier rank lower, so the ranking
is nested and serves every ratio down to that width.
"""
from __future__ import annotations

import torch

from ..repairs.lsq import RIDGE
from .base import StatisticsSelector

OBS_CHUNKS = 8


def obs_priority(gram: torch.Tensor, weight: torch.Tensor, smallest_width: int) -> torch.Tensor:
    """Keep priority (n,) from greedy structured OBS down to `smallest_width` rows kept.

    Rows removed earlier get lower priority; rows never removed rank above all removed ones, by their
    final OBS score.
    """
    n = gram.shape[0]
    if not 1 <= smallest_width <= n:
        raise ValueError(f"smallest_width {smallest_width} must be in [1, {n}]")
    g, w = gram.double(), weight.double()
    kept = torch.arange(n)
    priority = torch.empty(n, dtype=torch.float64)
    to_drop = n - smallest_width
    dropped, step = 0, 0
    while True:
        system = g[kept][:, kept]
        system = system + RIDGE * system.diagonal().mean().clamp_min(1e-12) * torch.eye(len(kept), dtype=g.dtype)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(system))
        refit = w @ g[:, kept] @ inverse
        score = refit.square().sum(0) / inverse.diagonal()
        if dropped >= to_drop:
            priority[kept] = OBS_CHUNKS + 1 + score / score.max().clamp_min(1e-30)
            return priority.float()
        count = min(to_drop - dropped, -(-to_drop // OBS_CHUNKS))
        order = score.argsort()
        drop = order[:count]
        # Within a step, a larger score is removed later (ranks higher).
        priority[kept[drop]] = step + torch.arange(count, dtype=torch.float64) / count
        keep_mask = torch.ones(len(kept), dtype=torch.bool)
        keep_mask[drop] = False
        kept = kept[keep_mask]
        dropped += count
        step += 1


class ObsSelector(StatisticsSelector):
    name = "obs"
    help = "greedy structured OBS on the probes' activations"

    def rank_layer(self, index, stats, output, smallest_width):
        return obs_priority(stats.gram.cpu(), output.weight.cpu(), smallest_width)
