"""A model already loaded, seen as prunenet sees a checkpoint (names, shapes, dtypes, tensors), and sliced
in place once its rows are chosen.

Names are those of the model's `state_dict`, which are the names `save_pretrained` stores, so the FFN map,
the selectors and the repairs serve a loaded model and a checkpoint with the same code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import refuse_non_finite
from .ffn_map import SlicePlan

IN_MEMORY = "memory"  # the shard every tensor of a loaded model "lives in"


class ModelTensors:
    """The tensors of a loaded `PreTrainedModel`, read where they sit (device and dtype untouched)."""

    def __init__(self, model: torch.nn.Module):
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "to_dict") or not hasattr(model, "base_model_prefix"):
            raise TypeError(f"expected a loaded transformers PreTrainedModel, got {type(model).__name__}")
        self.model = model
        self.path = Path(f"<in-memory {type(model).__name__}>")
        self.config = config.to_dict()
        self.tensors = dict(model.state_dict(keep_vars=True))
        self.weight_map = {name: IN_MEMORY for name in self.tensors}
        self.shards: list[str] = []

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def stored_dtype(self, name: str) -> torch.dtype:
        return self.tensors[name].dtype

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        tensor = self.tensors[name].detach()
        return tensor if rows is None else tensor[rows]

    def check_finite(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return refuse_non_finite(tensor, f"the loaded model's tensor {name!r}")

    def num_parameters(self) -> int:
        """Elements held, tied weights once (as a checkpoint stores them)."""
        seen, total = set(), 0
        for tensor in self.tensors.values():
            key = (tensor.data_ptr(), tensor.shape)
            if key not in seen:
                seen.add(key)
                total += tensor.numel()
        return total


def slice_in_place(model: torch.nn.Module, plan: SlicePlan, kept: torch.Tensor,
                   replacements: dict[str, torch.Tensor] | None = None) -> None:
    """Keep rows `kept` (L, k) of every FFN of `model`, as the writer does for a checkpoint, and set its config's
    FFN width; `replacements` (name -> tensor of the new shape) take the place of plain slices."""
    replacements = replacements or {}
    for name in [*plan.roles, *(name for name in replacements if name not in plan.roles)]:  # a refitted bias
        module_path, attribute = name.rsplit(".", 1)
        module = model.get_submodule(module_path)
        old = getattr(module, attribute)
        new = replacements.get(name)
        new = plan.apply(name, old.detach(), kept) if new is None else new.to(device=old.device, dtype=old.dtype)
        setattr(module, attribute, torch.nn.Parameter(new.contiguous(), requires_grad=old.requires_grad))
        if isinstance(module, torch.nn.Linear) and attribute == "weight":
            module.out_features, module.in_features = new.shape
    for key in plan.family.width_keys:
        setattr(model.config, key, kept.shape[1])
