"""What a stage is: a step on the whole compressed model, given the original beside it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from ..config import CompressConfig


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

    def run(self, teacher: torch.nn.Module, student: torch.nn.Module, text: Any, progress: bool) -> dict:
        """Change `student` in place; return a JSON-ready report. `text`: what `prepare` returned."""
        raise NotImplementedError

    def text_tokens(self) -> tuple[int, int] | None:
        """(tokens, length) of self-written text the stage trains on, or None."""
        return None
