"""Stages: work done on a whole compressed model after its rows are chosen and sliced, before it is written.

A stage sees the original model (the teacher) and one compressed model (the student), both loaded whole,
and changes the student in place. Adding a stage means one file with a `Stage` subclass, one entry in
`STAGES`, and its options as a group of `CompressConfig`.
"""
from __future__ import annotations

from .base import Stage
from .heal import HealStage

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (HealStage,)}

__all__ = ["STAGES", "Stage"]
