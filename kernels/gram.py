"""Gather-fused Gram matrices of the kept rows, batched over layers (DESIGN 3.3).

The singular values of W_s = W[kept] (k x h) are the square roots of the eigenvalues of its Gram
matrix: W_s^T W_s (h x h) when k >= h, W_s W_s^T (k x k) when k < h. When fewer rows are dropped than
kept, the Gram of the kept rows is cheaper as a downdate of the full one: G - W_d^T W_d over the
dropped rows d. Accumulation is always float32.
"""
from __future__ import annotations

import torch


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
    as full_gram - W_d^T W_d.
    """
    _check(weights, kept, full_gram)
    n, h = weights.shape[1:]
    k = kept.shape[1]
    if use_downdate(n, k, h, full_gram):
        dropped = _gather(weights, dropped_rows(kept, n))
        return full_gram - dropped.transpose(1, 2) @ dropped
    rows = _gather(weights, kept)
    if k >= h:
        return rows.transpose(1, 2) @ rows
    return rows @ rows.transpose(1, 2)
