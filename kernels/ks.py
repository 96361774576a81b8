"""Batched two-sample Kolmogorov-Smirnov statistic between sorted spectra, on the device."""
from __future__ import annotations

import torch


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
