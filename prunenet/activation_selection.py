"""Row rankings from activation statistics: the `activation` and `obs` selectors.

Both turn one layer's Gram matrix G = A^T A of the output matrix's inputs (n x n) and the output matrix
W (h x n) into a keep priority per row (higher is kept first). A ranking is nested, so one ranking
serves every ratio: the rows kept at ratio r are the top int((1 - r) n) priorities.

- `activation` (Wanda-style, structured): ||a_i|| ||W[:, i]||, the size of row i's contribution.
- `obs` (greedy structured Optimal Brain Surgeon under G): in `OBS_CHUNKS` steps down to the smallest
  width asked for, drop the rows with the smallest ||W'[:, i]||^2 / [G_K^-1]_ii, where W' is the
  least-squares refit of the kept columns (`repair.refit_output`), i.e. the output error each row's
  removal costs once the others compensate.
"""
from __future__ import annotations

import torch

from .repair import RIDGE

OBS_CHUNKS = 8


def activation_priority(gram: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||a_i||_2 * ||W[:, i]||_2 for every row i: (n,) float32."""
    return gram.diagonal().clamp_min(0).sqrt() * weight.float().norm(dim=0)


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
