"""`random`: uniformly random rows, seeded (the baseline every selector must beat)."""
from __future__ import annotations

import torch

from .base import Ranking, WeightSelector
from .sampling import uniform


class RandomSelector(WeightSelector):
    name = "random"
    help = "uniformly random rows, seeded (a baseline)"

    def rank(self, weights: torch.Tensor, widths: list[int]) -> Ranking:
        return Ranking(priority=uniform(weights.shape[:2], torch.Generator().manual_seed(self.seed), weights.device))
