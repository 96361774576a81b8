"""Gather-fused Gram matrices of the kept rows, batched over layers.

The singular values of W_s = W[kept] (k x h) are the square roots of the eigenvalues of its Gram
matrix: W_s^T W_s (h x h) when k >= h, W_s W_s^T (k x k) when k < h, whichever is smaller, so the
spectrum of the kept rows costs one small symmetric product instead of an SVD of W_s. When fewer rows
are dropped than kept, the Gram of the kept rows is cheaper as a downdate of the full one:
G - W_d^T W_d over the dropped rows d. Accumulation is always float32.

The Triton kernel never materialises W_s: each program loads its operand tiles straight from W through
the index list (`_tiles._load_kept_tile`), computes one upper-triangle tile of the symmetric result
with tl.dot, and writes it and its mirror image (`_tiles._store_mirrored`; syrk-like: half the
products). The twin mirrors its upper triangle the same way (`_tiles.mirror_upper_`): both backends
return bit-symmetric matrices.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._tiles import _load_kept_tile, _load_square_tile, _store_mirrored, mirror_upper_
from ._triton_utils import autotune_configs, check_indices, nan_buffer


def dropped_rows(kept: torch.Tensor, n: int) -> torch.Tensor:
    """The complement of `kept` (L, k) in range(n), as (L, n - k) ascending indices."""
    mask = torch.ones(kept.shape[0], n, dtype=torch.bool, device=kept.device)
    mask.scatter_(1, kept, False)
    return mask.nonzero()[:, 1].reshape(kept.shape[0], n - kept.shape[1])


def use_downdate(n: int, k: int, h: int, full_gram: torch.Tensor | None) -> bool:
    """Whether the downdate G - W_d^T W_d is the cheaper way to the kept rows' Gram."""
    return full_gram is not None and k >= h and n - k < k


def _check(weights: torch.Tensor, kept: torch.Tensor, full_gram: torch.Tensor | None) -> None:
    if weights.dim() != 3:
        raise ValueError(f"weights must be (L, n, h), got shape {tuple(weights.shape)}")
    if kept.dim() != 2 or kept.shape[0] != weights.shape[0] or kept.dtype != torch.int64:
        raise ValueError(f"kept must be int64 (L={weights.shape[0]}, k), got {kept.dtype} {tuple(kept.shape)}")
    if not 1 <= kept.shape[1] <= weights.shape[1]:
        raise ValueError(f"kept holds {kept.shape[1]} rows per layer; must be in [1, {weights.shape[1]}]")
    h = weights.shape[2]
    if full_gram is not None and full_gram.shape != (weights.shape[0], h, h):
        raise ValueError(f"full_gram must be {(weights.shape[0], h, h)}, got {tuple(full_gram.shape)}")


def _gather(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    index = rows.unsqueeze(-1).expand(-1, -1, weights.shape[2])
    return torch.gather(weights, 1, index).float()


def kept_gram_torch(weights: torch.Tensor, kept: torch.Tensor, full_gram: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix of weights[l, kept[l]] per layer: (L, h, h) if k >= h else (L, k, k), float32.

    With `full_gram` (the (L, h, h) Gram of all rows) and fewer rows dropped than kept, it is computed
    as full_gram - W_d^T W_d, from the upper triangle of full_gram. The result is bit-symmetric.
    """
    _check(weights, kept, full_gram)
    n, h = weights.shape[1:]
    k = kept.shape[1]
    if use_downdate(n, k, h, full_gram):
        dropped = _gather(weights, dropped_rows(kept, n))
        return mirror_upper_(full_gram - dropped.transpose(1, 2) @ dropped)
    rows = _gather(weights, kept)
    if k >= h:
        return mirror_upper_(rows.transpose(1, 2) @ rows)
    return mirror_upper_(rows @ rows.transpose(1, 2))


@triton.autotune(
    configs=autotune_configs(
        [
            {"BLOCK": 64, "BLOCK_K": 32, "num_warps": 4},
            {"BLOCK": 64, "BLOCK_K": 64, "num_warps": 4},
            {"BLOCK": 128, "BLOCK_K": 32, "num_warps": 8},
        ],
        {"BLOCK": 16, "BLOCK_K": 16},
    ),
    key=["size", "inner", "k"],
)
@triton.jit
def _kept_gram_kernel(
    w_ptr, idx_ptr, g_ptr, out_ptr,
    size, inner, k, h,
    stride_wl, stride_wn, stride_wh, stride_il, stride_ik,
    stride_gl, stride_gm, stride_gn, stride_ol, stride_om, stride_on,
    ROWS_INNER: tl.constexpr, DOWNDATE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[l] = A A^T (size x size) with A = W_s^T (h x k) if ROWS_INNER (the gathered rows are the
    reduction axis: W_s^T W_s) else A = W_s (k x h): W_s W_s^T. With DOWNDATE, out[l] = G[l] - A A^T,
    from the upper triangle of G. Programs below the diagonal exit; the others write their tile and its
    mirror image (`_store_mirrored`)."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    if pid_m > pid_n:
        return
    layer = tl.program_id(2).to(tl.int64)
    w_ptr += layer * stride_wl
    idx_ptr += layer * stride_il
    m0 = pid_m * BLOCK
    n0 = pid_n * BLOCK
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for t0 in range(0, inner, BLOCK_K):
        a = _load_kept_tile(w_ptr, idx_ptr, stride_wn, stride_wh, stride_ik, m0, t0, k, h, BLOCK, BLOCK_K, ROWS_INNER)
        b = _load_kept_tile(w_ptr, idx_ptr, stride_wn, stride_wh, stride_ik, n0, t0, k, h, BLOCK, BLOCK_K, ROWS_INNER)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
    result = acc
    if DOWNDATE:
        result = _load_square_tile(g_ptr + layer * stride_gl, m0, n0, size, stride_gm, stride_gn, BLOCK) - acc
    _store_mirrored(out_ptr + layer * stride_ol, result, m0, n0, size, stride_om, stride_on, BLOCK)


def kept_gram_triton(weights: torch.Tensor, kept: torch.Tensor, full_gram: torch.Tensor | None = None) -> torch.Tensor:
    """Triton twin of `kept_gram_torch`: one gather-fused launch for all layers, whichever of the three forms."""
    _check(weights, kept, full_gram)
    L, n, h = weights.shape
    check_indices(kept, n)
    k = kept.shape[1]
    downdate = use_downdate(n, k, h, full_gram)
    rows = dropped_rows(kept, n) if downdate else kept
    rows_inner = k >= h  # W_s^T W_s (h x h), reduced over the gathered rows; else W_s W_s^T (k x k) over h
    size = h if rows_inner else k
    out = nan_buffer((L, size, size), torch.float32, weights.device)
    g = full_gram if downdate else out
    grid = lambda meta: (triton.cdiv(size, meta["BLOCK"]), triton.cdiv(size, meta["BLOCK"]), L)  # noqa: E731
    _kept_gram_kernel[grid](
        weights, rows, g, out,
        size, rows.shape[1] if rows_inner else h, rows.shape[1], h,
        *weights.stride(), *rows.stride(), *g.stride(), *out.stride(),
        ROWS_INNER=rows_inner, DOWNDATE=downdate,
        UPCAST=weights.dtype not in (torch.float16, torch.bfloat16),
    )
    return out
