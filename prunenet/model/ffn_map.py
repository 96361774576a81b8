"""The FFN map of a checkpoint: which tensors lose rows or columns, layer by layer, and the scored matrices."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

import prunenet_kernels as K

from .checkpoint import CONFIG
from .families import Family


class TensorSource(Protocol):
    """What the FFN map, the selectors and the repairs read: a checkpoint (`Checkpoint`) or a loaded model
    (`in_memory.ModelTensors`)."""

    path: Path
    config: dict
    weight_map: dict[str, str]  # tensor name -> the shard holding it
    shards: list[str]

    @property
    def model_type(self) -> str | None: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def stored_dtype(self, name: str) -> torch.dtype: ...
    def read(self, name: str, rows: slice | None = None) -> torch.Tensor: ...
    def check_finite(self, name: str, tensor: torch.Tensor) -> torch.Tensor: ...
    def num_parameters(self) -> int: ...


class SlicePlan:
    """For each FFN tensor of a checkpoint: its layer and whether it loses rows or columns."""

    def __init__(self, checkpoint: TensorSource, family: Family):
        self.checkpoint, self.family = checkpoint, family
        try:
            self.n = family.width(checkpoint.config)
        except ValueError as exc:
            raise ValueError(f"{str(checkpoint.path / CONFIG)!r}: {exc}") from None
        self.roles: dict[str, tuple[int, str]] = {}
        rows_per_n = 2 if family.fused_gate_up else 1
        for name in checkpoint.weight_map:
            found = family.match(name)
            if found is None:
                continue
            layer, suffix = found
            role = "rows" if suffix in family.row_sliced else "cols"
            shape = checkpoint.shape(name)
            width = shape[0] // rows_per_n if role == "rows" else (shape[1] if len(shape) == 2 else None)
            if width != self.n or (role == "rows" and shape[0] != rows_per_n * self.n):
                raise ValueError(
                    f"tensor {name!r} has shape {list(shape)}, which does not fit FFN width {self.n} from {CONFIG}"
                )
            self.roles[name] = (layer, role)

    def every_row(self) -> torch.Tensor:
        """Kept rows (L, n) that keep every row: what a ratio that removes none writes."""
        return torch.arange(self.n).expand(self.num_layers, self.n)

    @property
    def num_layers(self) -> int:
        return len({layer for layer, _ in self.roles.values()})

    def new_shape(self, name: str, shape: tuple[int, ...], k: int) -> tuple[int, ...]:
        if name not in self.roles:
            return shape
        if self.roles[name][1] == "rows":
            return ((2 if self.family.fused_gate_up else 1) * k, *shape[1:])
        return (shape[0], k)

    def apply(self, name: str, tensor: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Slice one tensor; `kept` (L, k) holds the kept rows of every layer."""
        if name not in self.roles:
            return tensor
        layer, role = self.roles[name]
        rows = kept[layer : layer + 1].to(tensor.device)
        if role == "cols":
            return K.slice_ffn(None, None, tensor.unsqueeze(0), rows)[2][0]
        if self.family.fused_gate_up:
            rows = torch.cat([rows, rows + self.n], dim=1)
        as_rows = tensor.reshape(1, tensor.shape[0], -1)  # a bias (n,) becomes (1, n, 1)
        return K.slice_ffn(as_rows, None, None, rows)[0][0].reshape(-1, *tensor.shape[1:])



def load_scored(checkpoint: TensorSource, plan: SlicePlan, device: torch.device) -> torch.Tensor:
    """The scored matrices of all layers stacked as (L, n, h): float32 on CPU, the stored dtype on GPU."""
    family = plan.family
    by_layer = {}
    for name, (layer, _) in plan.roles.items():
        if family.match(name)[1] == family.scored:
            by_layer[layer] = name
    if not by_layer or sorted(by_layer) != list(range(len(by_layer))):
        raise ValueError(f"{checkpoint.path}: the {family.scored!r} tensors do not cover layers 0..L-1")
    rows = slice(0, plan.n) if family.fused_gate_up else None
    first = checkpoint.check_finite(by_layer[0], checkpoint.read(by_layer[0], rows))
    dtype = torch.float32 if device.type == "cpu" else first.dtype
    # Filled layer by layer: only one layer's tensor is ever held beside the stack.
    stacked = torch.empty(len(by_layer), *first.shape, dtype=dtype, device=device)
    stacked[0] = first
    for layer in range(1, len(by_layer)):
        stacked[layer] = checkpoint.check_finite(by_layer[layer], checkpoint.read(by_layer[layer], rows))
    return stacked


def check_scored_finite(checkpoint: TensorSource, plan: SlicePlan) -> None:
    """Refuse NaN or Inf in a scored matrix up front, where `load_scored` is not called (one layer at a time)."""
    for name in plan.roles:
        if plan.family.match(name)[1] == plan.family.scored:
            checkpoint.check_finite(name, checkpoint.read(name))


def describe(checkpoint: TensorSource, family: Family, plan: SlicePlan | None = None) -> dict:
    plan = plan or SlicePlan(checkpoint, family)
    layers = {layer for layer, _ in plan.roles.values()}
    scored = next(name for name in plan.roles if family.match(name)[1] == family.scored)
    return {
        "path": str(checkpoint.path),
        "model_type": checkpoint.model_type,
        "layers": len(layers),
        "hidden_size": checkpoint.shape(scored)[1],
        "ffn_width": plan.n,
        "parameters": checkpoint.num_parameters(),
        "shards": len(checkpoint.shards),
    }


