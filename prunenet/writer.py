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

from .atomic import atomic_folder
from .model.checkpoint import CONFIG, DTYPES, INDEX, Checkpoint, write_json, write_safetensors
from .model.ffn_map import SlicePlan
from .progress import progress_bar

PROVENANCE = "prunenet.json"
# Converted by --dtype; float8 tensors are quantised data (with scales beside them) and stay as they are.
_CONVERTED = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_CONFIG_DTYPE_KEYS = ("dtype", "torch_dtype")  # transformers >= 4.56 writes "dtype", older "torch_dtype"


def output_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a `dtype` option ("auto": None, each tensor as stored)."""
    return None if name == "auto" else getattr(torch, name)


def _stored(dtype: torch.dtype, target: torch.dtype | None) -> torch.dtype:
    return target if target is not None and dtype in _CONVERTED else dtype


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
) -> int:
    """Write the compressed checkpoint and return its parameter count (elements stored); `replacements`
    (name -> tensor of the new shape) are written in place of plain slices, cast to the stored dtype (the
    repaired output matrices). `dtype` (None: as stored) converts every float64/32/16 and bfloat16 tensor."""
    replacements = replacements or {}
    k = kept.shape[1]
    total_bytes = total_parameters = 0
    with atomic_folder(out, overwrite) as tmp:
        names = [name for shard in checkpoint.shards for name in checkpoint.headers[shard]]
        bar = progress_bar(total=len(names), desc=f"write {out.name}", unit="tensor", disable=not progress)
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
    return total_parameters

