"""Gather-based slicing of the FFN: kept rows of the input matrices, kept columns of the output matrix.

All layers at once: gate and up (L, n, h) lose rows, down (L, h, n) loses columns, each written into a
new contiguous buffer. Any of the three may be None: the checkpoint writer streams one tensor at a time.
Fused gate_up matrices (phi3) pass as `gate` with the kept rows of both halves.

The Triton kernel is one launch over (block of kept positions, block of the hidden axis, layer): each
program copies its tile of gate rows, up rows and down columns (a 2D gather) into the new buffers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import autotune_configs, check_indices, nan_buffer


def _check(
    gate: torch.Tensor | None, up: torch.Tensor | None, down: torch.Tensor | None, kept: torch.Tensor
) -> None:
    if gate is None and up is None and down is None:
        raise ValueError("slice_ffn needs at least one of gate, up, down")
    for name, t in (("gate", gate), ("up", up), ("down", down)):
        if t is not None and t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (L, n, h) or (L, h, n) for down, got shape {tuple(t.shape)}")
    layers = next(t.shape[0] for t in (gate, up, down) if t is not None)
    if kept.dim() != 2 or kept.shape[0] != layers or kept.dtype != torch.int64:
        raise ValueError(f"kept must be int64 (L={layers}, k), got {kept.dtype} {tuple(kept.shape)}")
    if gate is not None and up is not None and up.shape != gate.shape:
        raise ValueError(f"up must match gate {tuple(gate.shape)}, got {tuple(up.shape)}")
    for name, t in (("gate", gate), ("up", up), ("down", down)):
        if t is not None and t.shape[0] != layers:
            raise ValueError(f"{name} has {t.shape[0]} layers, expected {layers}")


def _gather_rows(x: torch.Tensor | None, kept: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else torch.gather(x, 1, kept.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def slice_ffn_torch(
    gate: torch.Tensor | None, up: torch.Tensor | None, down: torch.Tensor | None, kept: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(gate[:, kept], up[:, kept], down[:, :, kept]) per layer, as new contiguous tensors of the input
    dtype; any of the three may be None (and comes back None)."""
    _check(gate, up, down, kept)
    down_k = None
    if down is not None:
        down_k = torch.gather(down, 2, kept.unsqueeze(1).expand(-1, down.shape[1], -1))
    return _gather_rows(gate, kept), _gather_rows(up, kept), down_k


@triton.jit
def _copy_tile(src_ptr, dst_ptr, rows, offs_k, offs_h, stride_sn, stride_sh, stride_dk, stride_dh, mask,
               GATHER_COLUMNS: tl.constexpr):
    """Copy the (kept positions x hidden) tile: src rows `rows` (or, with GATHER_COLUMNS, src columns
    `rows` of a (h, n) matrix) to positions offs_k of a contiguous destination."""
    if GATHER_COLUMNS:
        src = src_ptr + offs_h[None, :] * stride_sn + rows[:, None] * stride_sh
        dst = dst_ptr + offs_h[None, :] * stride_dk + offs_k[:, None] * stride_dh
    else:
        src = src_ptr + rows[:, None] * stride_sn + offs_h[None, :] * stride_sh
        dst = dst_ptr + offs_k[:, None] * stride_dk + offs_h[None, :] * stride_dh
    tl.store(dst, tl.load(src, mask=mask), mask=mask)


@triton.autotune(
    configs=autotune_configs(
        [
            {"BLOCK_K": 32, "BLOCK_H": 128},
            {"BLOCK_K": 64, "BLOCK_H": 64},
            {"BLOCK_K": 64, "BLOCK_H": 128, "num_warps": 8},
        ],
        {"BLOCK_K": 8, "BLOCK_H": 16},
    ),
    key=["k", "h", "h_down"],
)
@triton.jit
def _slice_ffn_kernel(
    gate_ptr, up_ptr, down_ptr, kept_ptr, gate_out_ptr, up_out_ptr, down_out_ptr,
    k, h, h_down,
    stride_gl, stride_gn, stride_gh, stride_ul, stride_un, stride_uh,
    stride_dl, stride_dh, stride_dn, stride_kl, stride_kk,
    stride_gol, stride_gok, stride_goh, stride_uol, stride_uok, stride_uoh,
    stride_dol, stride_doh, stride_dok,
    HAS_GATE: tl.constexpr, HAS_UP: tl.constexpr, HAS_DOWN: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """gate_out[l, j] = gate[l, kept[l, j]], the same for up, and down_out[l, :, j] = down[l, :, kept[l, j]];
    h is the width of gate and up, h_down the height of down; absent matrices are skipped (HAS_* flags)."""
    pid_k = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1).to(tl.int64)
    layer = tl.program_id(2).to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
    k_mask = offs_k < k
    rows = tl.load(kept_ptr + layer * stride_kl + offs_k * stride_kk, mask=k_mask, other=0)
    mask = k_mask[:, None] & (offs_h[None, :] < h)
    if HAS_GATE:
        _copy_tile(gate_ptr + layer * stride_gl, gate_out_ptr + layer * stride_gol, rows, offs_k, offs_h,
                   stride_gn, stride_gh, stride_gok, stride_goh, mask, False)
    if HAS_UP:
        _copy_tile(up_ptr + layer * stride_ul, up_out_ptr + layer * stride_uol, rows, offs_k, offs_h,
                   stride_un, stride_uh, stride_uok, stride_uoh, mask, False)
    if HAS_DOWN:
        mask_down = k_mask[:, None] & (offs_h[None, :] < h_down)
        _copy_tile(down_ptr + layer * stride_dl, down_out_ptr + layer * stride_dol, rows, offs_k, offs_h,
                   stride_dh, stride_dn, stride_doh, stride_dok, mask_down, True)


def slice_ffn_triton(
    gate: torch.Tensor | None, up: torch.Tensor | None, down: torch.Tensor | None, kept: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Triton twin of `slice_ffn_torch`: every given matrix of every layer in one launch."""
    _check(gate, up, down, kept)
    L, k = kept.shape
    widths = [x.shape[1] for x in (gate, up) if x is not None] + ([] if down is None else [down.shape[2]])
    check_indices(kept, min(widths))  # rows of gate/up, columns of down
    rows_like = gate if gate is not None else up
    h = 0 if rows_like is None else rows_like.shape[2]
    h_down = 0 if down is None else down.shape[1]

    def sliced(x: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        return None if x is None else nan_buffer(shape, x.dtype, x.device)

    gate_k, up_k, down_k = sliced(gate, (L, k, h)), sliced(up, (L, k, h)), sliced(down, (L, h_down, k))
    # An absent matrix is stood in for by a present one (and its output); the HAS_* flags keep the kernel off it.
    present = next(x for x in (gate, up, down) if x is not None)
    present_k = next(x for x in (gate_k, up_k, down_k) if x is not None)
    args = [(present, present_k) if x is None else (x, x_k) for x, x_k in ((gate, gate_k), (up, up_k), (down, down_k))]
    (gate_in, gate_out), (up_in, up_out), (down_in, down_out) = args
    grid = lambda meta: (triton.cdiv(k, meta["BLOCK_K"]), triton.cdiv(max(h, h_down), meta["BLOCK_H"]), L)  # noqa: E731
    _slice_ffn_kernel[grid](
        gate_in, up_in, down_in, kept, gate_out, up_out, down_out,
        k, h, h_down,
        *gate_in.stride()[:3], *up_in.stride()[:3], *down_in.stride()[:3], *kept.stride(),
        *gate_out.stride(), *up_out.stride(), *down_out.stride(),
        HAS_GATE=gate is not None, HAS_UP=up is not None, HAS_DOWN=down is not None,
    )
    return gate_k, up_k, down_k
