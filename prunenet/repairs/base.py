"""What a repair is: given a layer's output matrix, its activation statistics and the kept columns, the
matrix (and bias) to write in place of the plain slice."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from ..calibration.statistics import LayerStats, OutputMatrix


class Repair:
    name: ClassVar[str]
    help: ClassVar[str]
    needs_statistics: ClassVar[bool]  # whether it needs the probes' activation statistics

    def refit(self, output: OutputMatrix, stats: LayerStats,
              kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(weight (h, k), bias) to write for the kept columns `kept`, or None for the plain slice."""
        raise NotImplementedError


class NoRepair(Repair):
    name = "none"
    help = "the plain slice"
    needs_statistics = False

    def refit(self, output, stats, kept):
        return None
