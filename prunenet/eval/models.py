"""Loading the models to evaluate and describing them (size, FFN width, how prunenet made them).

Models are local folders, the embedded model's alias or Hub ids (`prunenet.model.resolve_model`), loaded in
float32 with plain `AutoModelForCausalLM.from_pretrained`, exactly as a user of the output would.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model import open_model, resolve_model
from ..model.ffn_map import describe
from ..writer import PROVENANCE

# What of a compressed model's prunenet.json is worth reporting (kept_rows is large and not).
_PROVENANCE_KEYS = ("ratio", "selector", "selection", "seed", "align", "ffn_width_before", "ffn_width_after")


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: torch.nn.Module
    info: dict


def resolve(name: str | os.PathLike, progress: bool = False) -> Path:
    """The local folder of a model name; ValueError naming it if it is neither a folder nor an alias."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"a model is a folder or an alias (str or path), got {type(name).__name__} {name!r}")
    return resolve_model(name, progress)


def load_model(name: str | os.PathLike, device: torch.device, progress: bool = False) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    path = resolve(name)
    _quiet_transformers(progress)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model {str(name)!r} ({path}) cannot be loaded: {exc}") from None
    model = model.to(device).eval()
    return LoadedModel(str(name), path, model, describe_model(path, model))


def load_tokenizer(path: Path, progress: bool = False):
    from transformers import AutoTokenizer

    _quiet_transformers(progress)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"no usable tokenizer in {str(path)!r}: {exc}") from None


def describe_model(path: Path, model: torch.nn.Module) -> dict:
    """Size and FFN width: from the checkpoint for prunenet's families, else from the loaded model."""
    try:
        checkpoint, family = open_model(path)
        info = describe(checkpoint, family)
    except ValueError:  # an architecture prunenet does not compress can still be evaluated
        config = model.config
        info = {
            "path": str(path),
            "model_type": getattr(config, "model_type", None),
            "layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "ffn_width": getattr(config, "intermediate_size", None),
            "parameters": sum(p.numel() for p in model.parameters()),  # tied weights count once
        }
    info.pop("shards", None)
    return {**info, **provenance(path)}


def provenance(path: Path) -> dict:
    """How prunenet made this model (ratio, selector, seed, align), all None for a model it did not make."""
    file = path / PROVENANCE
    found = {}
    if file.is_file():
        try:
            found = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"corrupt {str(file)!r}: {exc}") from None
        if not isinstance(found, dict):
            raise ValueError(f"corrupt {str(file)!r}: not a JSON object")
    return {key: found.get(key) for key in _PROVENANCE_KEYS}


def _quiet_transformers(progress: bool) -> None:
    if not progress:
        import transformers

        transformers.logging.disable_progress_bar()
