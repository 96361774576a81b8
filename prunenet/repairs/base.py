"""What a repair is: given a layer's output matrix, its activation statistics and the kept columns, the
tensors to write in place of the plain slices."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from ..calibration.statistics import LayerStats, OutputMatrix
    from ..config import CompressConfig
    from ..model.families import Family


@dataclass
class Refit:
    """One layer's repair: its output matrix's kept columns, and the input-matrix rows it changed, if any."""

    weight: torch.Tensor  # (h, k) float32
    bias: torch.Tensor | None
    # Input-matrix tensors (gate/up, fc1 and their biases) named as in the layer ("mlp.gate_proj.weight"),
    # kept rows only, where the repair changed them.
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    # (tokens, k): the output matrix's input on the probes computed with the changed rows (None: unchanged).
    activations: torch.Tensor | None = None


class Repair:
    name: ClassVar[str]
    help: ClassVar[str]
    needs_statistics: ClassVar[bool]  # whether it needs the probes' activation statistics
    needs_inputs: ClassVar[bool] = False  # whether it needs every probe token's FFN input (`LayerStats.inputs`)

    def configured(self, config: CompressConfig) -> Repair:
        """This repair with its options from `config` (a repair with none is itself)."""
        return self

    def check(self, family: Family) -> None:
        """Refuse, before any work, a family this repair cannot serve."""

    def refit(self, output: OutputMatrix, stats: LayerStats, kept: torch.Tensor) -> Refit | None:
        """The tensors to write for the kept columns `kept`, or None for the plain slice."""
        raise NotImplementedError


class NoRepair(Repair):
    name = "none"
    help = "the plain slice"
    needs_statistics = False

    def refit(self, output, stats, kept):
        return None
