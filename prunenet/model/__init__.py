"""Where a model comes from and what it holds: checkpoints, families and their FFN map, the embedded model."""
from __future__ import annotations

import os

from .checkpoint import Checkpoint
from .embedded import resolve_model
from .families import Family, family_for


def open_model(model: str | os.PathLike, progress: bool = False) -> tuple[Checkpoint, Family]:
    """The checkpoint of a model folder or alias, validated, and its family."""
    checkpoint = Checkpoint(resolve_model(model, progress))
    return checkpoint, family_for(checkpoint.model_type)
