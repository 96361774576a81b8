"""`magnitude`: the rows of largest L2 norm in the scored matrix (a weights-only baseline)."""
from __future__ import annotations

import torch

from .base import Ranking, WeightSelector


class MagnitudeSelector(WeightSelector):
    name = "magnitude"
    help = "the scored matrix's rows of largest norm (a baseline)"

    def rank(self, weights: torch.Tensor, widths: list[int]) -> Ranking:
        return Ranking(priority=weights.float().norm(dim=2))
