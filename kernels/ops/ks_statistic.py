"""Batched two-sample Kolmogorov-Smirnov statistic between sorted spectra, on the device.

The Triton kernel has no searchsorted: each program takes a block of the points (the concatenation of
a and b), counts the values of a and of b that are <= each point by comparing tiles (brute force:
(m + p)^2 comparisons per layer, 6.7e7 for two 4096-value spectra; not timed on a GPU yet), and writes
the block's largest CDF gap; torch takes the maximum over blocks.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import INTERPRET, autotune_configs, nan_buffer

# Points per program. Fixed (not autotuned) because it sets the size of the per-block maxima buffer.
_BLOCK_P = 16 if INTERPRET else 64


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"ks_statistic wants (L, m) and (L, p) tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError("ks_statistic needs at least one value per sample")


def ks_statistic_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sup_x |F_a(x) - F_b(x)| per row; `a` (L, m) and `b` (L, p) sorted ascending. Returns (L,) float32.

    The supremum of the difference of two right-continuous step functions is reached at one of the
    sample points, so both CDFs are evaluated at every point of a and of b.
    """
    _check(a, b)
    a = a.float().contiguous()
    b = b.float().contiguous()
    points = torch.cat([a, b], dim=1)
    cdf_a = torch.searchsorted(a, points, right=True).float() / a.shape[1]
    cdf_b = torch.searchsorted(b, points, right=True).float() / b.shape[1]
    return (cdf_a - cdf_b).abs().amax(dim=1)


@triton.jit
def _count_at_most(v_ptr, stride, size, x, BLOCK_C: tl.constexpr):
    """#{j < size : v[j] <= x[i]} for every point x[i], int32."""
    count = tl.zeros(x.shape, dtype=tl.int32)
    for c0 in range(0, size, BLOCK_C):
        offs = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        in_range = offs < size
        v = tl.load(v_ptr + offs * stride, mask=in_range, other=0.0).to(tl.float32)
        hit = (v[None, :] <= x[:, None]) & in_range[None, :]
        count += tl.sum(hit.to(tl.int32), axis=1)
    return count


@triton.autotune(
    configs=autotune_configs(
        [{"BLOCK_C": 64}, {"BLOCK_C": 128, "num_warps": 8}],
        {"BLOCK_C": 16},
    ),
    key=["m", "p"],
)
@triton.jit
def _ks_statistic_kernel(
    a_ptr, b_ptr, part_ptr, m, p,
    stride_al, stride_am, stride_bl, stride_bp, stride_pl,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    layer = tl.program_id(1).to(tl.int64)
    a_ptr += layer * stride_al
    b_ptr += layer * stride_bl
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    in_a = offs < m
    valid = offs < m + p
    from_a = tl.load(a_ptr + offs * stride_am, mask=in_a, other=0.0)
    from_b = tl.load(b_ptr + (offs - m) * stride_bp, mask=valid & ~in_a, other=0.0)
    x = tl.where(in_a, from_a, from_b).to(tl.float32)
    # Correctly rounded division (plain `/` is approximate on NVIDIA GPUs), so the CDFs equal the twin's.
    zero = tl.zeros((BLOCK_P,), dtype=tl.float32)
    cdf_a = tl.math.div_rn(_count_at_most(a_ptr, stride_am, m, x, BLOCK_C).to(tl.float32), zero + m)
    cdf_b = tl.math.div_rn(_count_at_most(b_ptr, stride_bp, p, x, BLOCK_C).to(tl.float32), zero + p)
    gap = tl.where(valid, tl.abs(cdf_a - cdf_b), 0.0)
    tl.store(part_ptr + layer * stride_pl + pid, tl.max(gap, axis=0))


def ks_statistic_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Triton twin of `ks_statistic_torch`: (L,) float32."""
    _check(a, b)
    L, m = a.shape
    p = b.shape[1]
    blocks = triton.cdiv(m + p, _BLOCK_P)
    part = nan_buffer((L, blocks), torch.float32, a.device)
    _ks_statistic_kernel[(blocks, L)](a, b, part, m, p, *a.stride(), *b.stride(), part.stride(0), BLOCK_P=_BLOCK_P)
    return part.amax(dim=1)
