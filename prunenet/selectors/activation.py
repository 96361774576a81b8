"""`activation`: rows ranked by the size of their contribution on the probes, ||a_i|| ||W[:, i]|| (the default).

With G = A^T A the Gram matrix of the output matrix's inputs on the probe tokens and W (h x n) the output
matrix, row i's contribution to the layer's output has size ||a_i|| ||W[:, i]|| = sqrt(G_ii) ||W[:, i]||
(Wanda's score, per row rather than per weight). The ranking is nested: one ranking serves every ratio.
"""
from __future__ import annotations

import torch

from .base import StatisticsSelector


def activation_priority(gram: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||a_i||_2 * ||W[:, i]||_2 for every row i: (n,) float32."""
    return gram.diagonal().clamp_min(0).sqrt() * weight.float().norm(dim=0)


class ActivationSelector(StatisticsSelector):
    name = "activation"
    help = "rows ranked by ||a_i|| ||down[:, i]|| on probe text"

    def rank_layer(self, index, stats, output, smallest_width):
        return activation_priority(stats.gram, output.weight)
