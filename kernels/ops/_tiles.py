"""Pieces shared by several op files: tile loads and the mirrored store of symmetric results.

`_load_kept_tile` reads a tile of W_s = W[kept] straight from W through the index list, so that no op
materialises the gathered rows (`kept_gram`, `topq_singular_values`). `_load_square_tile` and
`_store_mirrored` read and write a tile of a symmetric result (`kept_gram`, `act_gram`).

Symmetric results are bit-symmetric in both backends: the upper triangle (diagonal included) is
computed and the lower one copied from it, by `_store_mirrored` in the kernels and `mirror_upper_` in
the twins. A product's two mirrored entries are sums over the same terms, but in orders that may
differ (per tile, BLAS kernel and CPU), so computing both would leave them a rounding apart.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def mirror_upper_(g: torch.Tensor) -> torch.Tensor:
    """In place: the lower triangle of each matrix of `g` (..., m, m) becomes the mirror image of its upper
    triangle (exact copies; the lower triangle is never read). Returns `g`."""
    g.triu_()
    # A contiguous copy of the transpose (far faster to add than a strided view; never g itself, as
    # .contiguous() would be for a 1 x 1 matrix).
    return g.add_(g.mT.clone(memory_format=torch.contiguous_format).tril_(-1))


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
