"""Writing a compressed checkpoint: every shard streamed tensor by tensor, FFN tensors sliced on the way.

The output keeps the input's sharding and shard names, gets an updated index and config.json (new FFN
width), a copy of the tokenizer and generation files, and `prunenet.json` recording how it was made
(including the kept rows of every layer). It is written into a temporary folder beside the target and
renamed at the end, so an interrupted run leaves nothing half-written. `dtype` converts the floating-point
tensors as they are written (the fit and selection never see it: they read the checkpoint as stored).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

import prunenet_kernels as K

from .checkpoint import CONFIG, DTYPES, INDEX, Checkpoint, atomic_folder, write_json, write_safetensors
from .families import Family

PROVENANCE = "prunenet.json"
# Converted by --dtype; float8 tensors are quantised data (with scales beside them) and stay as they are.
_CONVERTED = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_CONFIG_DTYPE_KEYS = ("dtype", "torch_dtype")  # transformers >= 4.56 writes "dtype", older "torch_dtype"


def _stored(dtype: torch.dtype, target: torch.dtype | None) -> torch.dtype:
    return target if target is not None and dtype in _CONVERTED else dtype


class SlicePlan:
    """For each FFN tensor of a checkpoint: its layer and whether it loses rows or columns."""

    def __init__(self, checkpoint: Checkpoint, family: Family):
        self.family = family
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


def write_compressed(
    checkpoint: Checkpoint,
    plan: SlicePlan,
    kept: torch.Tensor,
    out: Path,
    overwrite: bool,
    provenance: dict,
    progress: bool = False,
    replacements: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write the compressed checkpoint; `replacements` (name -> tensor of the new shape) are written in
    place of plain slices, cast to the stored dtype (the refitted output matrices of `repair`).
    `dtype` (None: as stored) converts every float64/32/16 and bfloat16 tensor."""
    replacements = replacements or {}
    k = kept.shape[1]
    total_bytes = total_parameters = 0
    with atomic_folder(out, overwrite) as tmp:
        names = [name for shard in checkpoint.shards for name in checkpoint.headers[shard]]
        bar = tqdm(total=len(names), desc=f"write {out.name}", unit="tensor", disable=not progress)
        for shard in checkpoint.shards:
            header = checkpoint.headers[shard]
            layout = {
                name: (_stored(DTYPES[stored], dtype), plan.new_shape(name, shape, k))
                for name, (stored, shape) in header.items()
            }
            total_parameters += sum(math.prod(shape) for _, shape in layout.values())
            with checkpoint.open_shard(shard) as f:
                def stream():
                    for name in layout:
                        if name in replacements:
                            yield name, replacements[name].to(layout[name][0])
                        else:
                            yield name, plan.apply(name, f.get_tensor(name), kept).to(layout[name][0])
                        bar.update()
                total_bytes += write_safetensors(tmp / shard, layout, stream(), checkpoint.shard_metadata[shard])
        bar.close()
        if checkpoint.sharded:
            index = dict(checkpoint.index)
            index["metadata"] = {**index.get("metadata", {}), "total_size": total_bytes}
            if "total_parameters" in index["metadata"]:  # recent transformers write it: keep it true
                index["metadata"]["total_parameters"] = total_parameters
            write_json(tmp / INDEX, index)
        config = dict(checkpoint.config)
        for key in plan.family.width_keys:
            config[key] = k
        if dtype is not None:
            for key in [key for key in _CONFIG_DTYPE_KEYS if key in config] or ["dtype"]:
                config[key] = str(dtype).removeprefix("torch.")
        write_json(tmp / CONFIG, config)
        for path in checkpoint.auxiliary_files():
            shutil.copy2(path, tmp / path.name)
        write_json(tmp / PROVENANCE, {**provenance, "kept_rows": kept.cpu().tolist()})

