"""Where a model comes from and what it holds: checkpoints, families and their FFN map, the embedded model,
Hugging Face Hub ids."""
from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import Checkpoint
from .embedded import EMBEDDED, materialize
from .families import Family, family_for
from .hub import looks_like_repo_id, resolve_hub_model


def resolve_model(model: str | os.PathLike, progress: bool = False, revision: str | None = None) -> Path:
    """A local model folder for `model`: the folder itself, the embedded model's cache, or the local
    snapshot of a Hugging Face Hub id (the Hub cache first, then a download of what prunenet reads).
    A folder of that name wins over a Hub id."""
    if isinstance(model, str) and model in EMBEDDED:
        _no_revision(model, revision)
        return materialize(EMBEDDED[model], progress)
    path = Path(model)
    if path.is_dir():
        _no_revision(model, revision)
        return path
    if isinstance(model, str) and looks_like_repo_id(model):
        try:
            return resolve_hub_model(model, revision, progress).path
        except ValueError as exc:
            if "/" in model:  # written as a Hub id: the Hub's answer says it all
                raise
            raise ValueError(f"model {model!r} is neither a local folder nor a known alias "
                             f"({', '.join(sorted(EMBEDDED))}), and as a Hugging Face Hub id: {exc}") from None
    raise ValueError(f"model {str(model)!r} is neither a local folder, a known alias ({', '.join(sorted(EMBEDDED))}) "
                     "nor a Hugging Face Hub id ('org/name')")


def _no_revision(model, revision: str | None) -> None:
    if revision is not None:
        raise ValueError(f"revision {revision!r} applies to Hugging Face Hub ids, not to {str(model)!r}")


def open_model(model: str | os.PathLike, progress: bool = False,
               revision: str | None = None) -> tuple[Checkpoint, Family]:
    """The checkpoint of a model folder, alias or Hub id, validated, and its family."""
    checkpoint = Checkpoint(resolve_model(model, progress, revision))
    return checkpoint, family_for(checkpoint.model_type)
