"""Batched top-k row selection: the kept rows of every layer, sorted ascending.

Sampling k of n rows without replacement with weights p has the distribution of the top k of
log p + Gumbel noise (DESIGN 3.2), so one batched top-k serves both sampled and deterministic selection.
Ties go to the lower row index, in both backends.
"""
from __future__ import annotations

import torch


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
