"""Gather-based slicing of the FFN: kept rows of the input matrices, kept columns of the output matrix.

All layers at once: gate and up (L, n, h) lose rows, down (L, h, n) loses columns, each written into a
new contiguous buffer. Fused gate_up matrices (phi3) pass as `gate` with the kept rows of both halves.
"""
from __future__ import annotations

import torch


def _check(gate: torch.Tensor, up: torch.Tensor | None, down: torch.Tensor | None, kept: torch.Tensor) -> None:
    if gate.dim() != 3:
        raise ValueError(f"gate must be (L, n, h), got shape {tuple(gate.shape)}")
    if kept.dim() != 2 or kept.shape[0] != gate.shape[0] or kept.dtype != torch.int64:
        raise ValueError(f"kept must be int64 (L={gate.shape[0]}, k), got {kept.dtype} {tuple(kept.shape)}")
    if up is not None and up.shape != gate.shape:
        raise ValueError(f"up must match gate {tuple(gate.shape)}, got {tuple(up.shape)}")
    if down is not None and (down.dim() != 3 or down.shape[0] != gate.shape[0]):
        raise ValueError(f"down must be (L={gate.shape[0]}, h, n), got shape {tuple(down.shape)}")


def slice_ffn_torch(
    gate: torch.Tensor, up: torch.Tensor | None, down: torch.Tensor | None, kept: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(gate[:, kept], up[:, kept], down[:, :, kept]) per layer, as new contiguous tensors of the input dtype."""
    _check(gate, up, down, kept)
    row_index = kept.unsqueeze(-1).expand(-1, -1, gate.shape[2])
    gate_k = torch.gather(gate, 1, row_index)
    up_k = None if up is None else torch.gather(up, 1, row_index)
    down_k = None
    if down is not None:
        down_k = torch.gather(down, 2, kept.unsqueeze(1).expand(-1, down.shape[1], -1))
    return gate_k, up_k, down_k
