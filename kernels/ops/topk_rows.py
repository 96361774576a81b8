"""Batched top-k row selection: the kept rows of every layer, sorted ascending.

Sampling k of n rows without replacement with weights p has the distribution of the top k of
log p + Gumbel noise (the Gumbel-top-k trick), so one batched top-k serves both sampled and
deterministic selection.
Ties go to the lower row index, in both backends.

The Triton kernel holds one layer's row in one block and selects without sorting: a 32-step binary
search over the order-preserving int32 image of the float32 keys finds the k-th largest key exactly
(32 counting passes, no tl.sort, cheap on a GPU), then every key above it is kept, plus the first
k - c keys equal to it by index (c = how many are above), and a cumulative sum gives each kept index
its output position.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_utils import INTERPRET


def _check(keys: torch.Tensor, k: int) -> None:
    if keys.dim() != 2:
        raise ValueError(f"keys must be (L, n), got shape {tuple(keys.shape)}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= keys.shape[1]:
        raise ValueError(f"k={k} must be in [1, {keys.shape[1]}]")


def topk_rows_torch(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (L, k) int64 of the k largest keys per row, sorted ascending."""
    _check(keys, k)
    order = torch.sort(keys.float(), dim=1, descending=True, stable=True).indices
    return order[:, :k].sort(dim=1).values


@triton.jit
def _ordered_int(x):
    """int32 image of float32 x with the order of the floats (signed comparison): flip the magnitude bits
    of negatives. -0.0 is mapped to +0.0 and every NaN to the largest value, as torch.sort treats them."""
    x = tl.where(x == 0.0, 0.0, x)
    bits = x.to(tl.int32, bitcast=True)
    key = bits ^ tl.where(bits < 0, 0x7FFFFFFF, 0)
    return tl.where(x != x, 0x7FFFFFFF, key)


@triton.jit
def _topk_rows_kernel(keys_ptr, out_ptr, n, k, stride_kl, stride_kn, stride_ol, BLOCK: tl.constexpr):
    layer = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    x = tl.load(keys_ptr + layer * stride_kl + offs.to(tl.int64) * stride_kn, mask=valid, other=0.0)
    key = _ordered_int(x.to(tl.float32))
    # Largest t with #{key >= t} >= k, i.e. the k-th largest key; the interval [lo, hi] halves each step.
    lo = tl.full((), -2147483648, tl.int64)
    hi = tl.full((), 2147483647, tl.int64)
    for _ in range(32):
        mid = lo + (hi - lo + 1) // 2
        count = tl.sum((valid & (key >= mid)).to(tl.int32), axis=0)
        lo = tl.where(count >= k, mid, lo)
        hi = tl.where(count >= k, hi, mid - 1)
    above = valid & (key > lo)
    tied = valid & (key == lo)
    n_above = tl.sum(above.to(tl.int32), axis=0)
    keep = above | (tied & (tl.cumsum(tied.to(tl.int32), axis=0) <= k - n_above))
    position = tl.cumsum(keep.to(tl.int32), axis=0) - 1
    tl.store(out_ptr + layer * stride_ol + position, offs.to(tl.int64), mask=keep)


def topk_rows_triton(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Triton twin of `topk_rows_torch`: one program per layer, the whole row in one block."""
    _check(keys, k)
    L, n = keys.shape
    out = torch.full((L, k), -1, dtype=torch.int64, device=keys.device)
    block = triton.next_power_of_2(n)
    num_warps = 1 if INTERPRET else min(16, max(4, block // 1024))
    _topk_rows_kernel[(L,)](keys, out, n, k, *keys.stride(), out.stride(0), BLOCK=block, num_warps=num_warps)
    return out
