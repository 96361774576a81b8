"""Helpers shared by the Triton launchers: interpreter detection, autotune configs, output buffers."""
from __future__ import annotations

import os

import torch
import triton

# Triton's CPU interpreter (TRITON_INTERPRET=1, read by Triton at its first import) runs each program
# in numpy: one small config there, a short autotune list keyed on shapes on a GPU.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def autotune_configs(gpu: list[dict], interpret: dict) -> list[triton.Config]:
    """triton.Config list: `gpu` (a dict may carry num_warps, default 4), or `interpret` alone in the interpreter."""
    if INTERPRET:
        return [triton.Config(dict(interpret), num_warps=1)]
    configs = []
    for c in gpu:
        meta = {key: value for key, value in c.items() if key != "num_warps"}
        configs.append(triton.Config(meta, num_warps=c.get("num_warps", 4)))
    return configs


def nan_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Output buffer pre-filled with NaN, so that an element a kernel fails to write cannot pass a comparison."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def check_indices(index: torch.Tensor, bound: int, name: str = "kept") -> None:
    """Raise ValueError unless every entry of `index` lies in [0, bound).

    The kernels gather through index lists without bounds checks (torch.gather, in the twins, has them),
    so a bad index would read outside the tensor. One min/max reduction; it synchronises with the device.
    """
    if index.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(index))
    if low < 0 or high >= bound:
        raise ValueError(f"{name} holds indices in [{low}, {high}]; they must lie in [0, {bound})")
