"""Gather-fused Gram matrices of the kept rows, batched over layers (DESIGN 3.3).

The singular values of W_s = W[kept] (k x h) are the square roots of the eigenvalues of its Gram
matrix: W_s^T W_s (h x h) when k >= h, W_s W_s^T (k x k) when k < h. When fewer rows are dropped than
kept, the Gram of the kept rows is cheaper as a downdate of the full one: G - W_d^T W_d over the
dropped rows d. Accumulation is always float32.

The Triton kernel never materialises W_s: each program loads its operand tiles straight from W through
the index list (`_load_kept_tile`, shared with `rsvd`), computes one upper-triangle tile of the
symmetric result with tl.dot, and writes it and its mirror image (syrk-like: half the products).

Both backends return bit-symmetric matrices by construction: the upper triangle (diagonal included) is
computed and the lower one copied from it (`mirror_upper_`, `_store_mirrored`). A product's two mirrored
entries are sums over the same terms, but in orders that may differ (per tile, BLAS kernel and CPU), so
computing both would leave them a rounding apart.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

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


def mirror_upper_(g: torch.Tensor) -> torch.Tensor:
    """In place: the lower triangle of each matrix of `g` (..., m, m) becomes the mirror image of its upper
    triangle (exact copies; the lower triangle is never read). Returns `g`."""
    g.triu_()
    # A contiguous copy of the transpose (far faster to add than a strided view; never g itself, as
    # .contiguous() would be for a 1 x 1 matrix).
    return g.add_(g.mT.clone(memory_format=torch.contiguous_format).tril_(-1))


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


@triton.jit
def _load_kept_tile(
    w_ptr, idx_ptr, stride_wn, stride_wh, stride_ik, r0, c0, k, h,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, TRANSPOSED: tl.constexpr,
):
    """Tile [r0:r0+BLOCK_R, c0:c0+BLOCK_C] of W_s = W[idx] (k x h), or of W_s^T (h x k) when TRANSPOSED,
    read from W through the index list; zero outside. w_ptr and idx_ptr point at one layer.

    Tile starts (r0, c0) enter as scalar (64-bit) pointer offsets, so the per-element offsets stay
    int32 (and the gathered row indices int64): far fewer registers than int64 offset tiles."""
    r = tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_C)
    if TRANSPOSED:
        c_ok = c < k - c0
        rows = tl.load(idx_ptr + c0 * stride_ik + c * stride_ik, mask=c_ok, other=0)
        ptrs = w_ptr + r0 * stride_wh + rows[None, :] * stride_wn + r[:, None] * stride_wh
        valid = (r[:, None] < h - r0) & c_ok[None, :]
    else:
        r_ok = r < k - r0
        rows = tl.load(idx_ptr + r0 * stride_ik + r * stride_ik, mask=r_ok, other=0)
        ptrs = w_ptr + c0 * stride_wh + rows[:, None] * stride_wn + c[None, :] * stride_wh
        valid = r_ok[:, None] & (c[None, :] < h - c0)
    return tl.load(ptrs, mask=valid, other=0.0)


@triton.jit
def _load_square_tile(ptr, m0, n0, size, stride_m, stride_n, BLOCK: tl.constexpr):
    """Block (m0, n0) of a size x size matrix, BLOCK x BLOCK, zero outside."""
    i = tl.arange(0, BLOCK)
    mask = (i[:, None] < size - m0) & (i[None, :] < size - n0)
    return tl.load(ptr + m0 * stride_m + n0 * stride_n + i[:, None] * stride_m + i[None, :] * stride_n, mask=mask,
                   other=0.0)


@triton.jit
def _store_mirrored(out_ptr, tile, m0, n0, size, stride_om, stride_on, BLOCK: tl.constexpr):
    """Store `tile`, block (m0, n0) of a symmetric size x size result with m0 <= n0, and its mirror image
    (m0 > n0 programs compute nothing). A diagonal tile keeps its upper triangle and mirrors it, an
    off-diagonal one is stored twice from the same registers (through transposed offsets, no register
    transpose), so the result is bit-symmetric."""
    i = tl.arange(0, BLOCK)
    mask = (i[:, None] < size - m0) & (i[None, :] < size - n0)
    if m0 == n0:
        tile = tl.where(i[:, None] <= i[None, :], tile, tl.trans(tile))
    along_mn = i[:, None] * stride_om + i[None, :] * stride_on  # tile[a, b] -> out[m0 + a, n0 + b]
    tl.store(out_ptr + m0 * stride_om + n0 * stride_on + along_mn, tile, mask=mask)
    if m0 != n0:
        along_nm = i[None, :] * stride_om + i[:, None] * stride_on  # tile[a, b] -> out[n0 + b, m0 + a]
        tl.store(out_ptr + n0 * stride_om + m0 * stride_on + along_nm, tile, mask=mask)


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
