"""What a stage is: a step on the whole compressed model, given the original beside it."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from ..calibration.probes import Probes
    from ..config import CompressConfig, ProbeConfig


class Stage:
    name: ClassVar[str]
    help: ClassVar[str]

    def __init__(self, config: CompressConfig):
        self.config = config

    @staticmethod
    def enabled(config: CompressConfig) -> bool:
        """Whether `config` asks for this stage."""
        raise NotImplementedError

    def memory_bytes(self, parameters: int) -> int:
        """About how much memory the stage needs for a model of `parameters` elements, both models included."""
        raise NotImplementedError

    def run(self, teacher: torch.nn.Module, student: torch.nn.Module, text: Probes | None, progress: bool) -> dict:
        """Change `student` in place; return a JSON-ready report. `text`: the self-written text `text_probes`
        asked for (the longest any stage asked for), or None."""
        raise NotImplementedError

    def text_probes(self, probes: ProbeConfig) -> ProbeConfig | None:
        """The probe options of the self-written text the stage trains on (`probes`: the run's), or None."""
        return None
