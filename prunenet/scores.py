"""Scores files: a model's row ranking saved once, then sliced at any ratio (`score`, `compress --scores`).

For a selector that trains a policy (the paper's), a scores file is that policy (`selectors/policy/`).
For every other selector it is a safetensors file holding `priority` (L, n), the keep priority of every
row of every layer (the rows kept at width k are each layer's top k), the probe tokens the ranking was
made on (so a later repair reuses them without generating again), and metadata naming the selector and
the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .calibration.probes import Probes
from .model.ffn_map import SlicePlan

KIND = "prunenet-scores"


@dataclass
class StoredScores:
    selector: str
    priority: torch.Tensor  # (L, n)
    probes: Probes | None
    metadata: dict

    def check(self, plan: SlicePlan) -> None:
        if tuple(self.priority.shape) != (plan.num_layers, plan.n):
            raise ValueError(f"scores {self.metadata.get('path')!r} rank {tuple(self.priority.shape)} rows, but the "
                             f"model has {plan.num_layers} layers of FFN width {plan.n}")

    def save(self, path: Path) -> None:
        tensors = {"priority": self.priority.float().contiguous()}
        if self.probes is not None:
            tensors["probe_tokens"] = self.probes.tokens.to(torch.int32).contiguous()
        metadata = {"kind": KIND, "selector": self.selector,
                    "probes": json.dumps(self.probes.info if self.probes is not None else None),
                    **{k: json.dumps(v) for k, v in self.metadata.items()}}
        save_file(tensors, str(path), metadata=metadata)


def stored_probe_info(path: str | os.PathLike) -> dict | None:
    """The info of the probes a scores file ranked on, from its header alone; None for a file without probes,
    a policy, or one that cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        info = json.loads(metadata.get("probes", "null")) if metadata.get("kind") == KIND else None
    except Exception:  # safetensors raises its own error type for every kind of damage
        return None
    return info if isinstance(info, dict) else None


def load_scores(path: str | os.PathLike, selector: str) -> StoredScores:
    """The ranking a scores file holds for `selector`."""
    if not Path(path).is_file():
        raise ValueError(f"scores file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for every kind of damage
        raise ValueError(f"corrupt scores file {str(path)!r}: {exc}") from None
    if metadata.get("kind") != KIND or "priority" not in tensors:
        raise ValueError(f"{str(path)!r} is not a prunenet scores file")
    if metadata["selector"] != selector:
        raise ValueError(f"scores file {str(path)!r} ranks rows for selector {metadata['selector']!r}, "
                         f"not {selector!r}")
    info = json.loads(metadata.get("probes", "null"))
    probes = Probes(tensors["probe_tokens"].long(), {**info, "from_scores": str(path)}) \
        if "probe_tokens" in tensors else None
    extra = {k: json.loads(v) for k, v in metadata.items() if k not in ("kind", "selector", "probes")}
    return StoredScores(metadata["selector"], tensors["priority"], probes, {**extra, "path": str(path)})
