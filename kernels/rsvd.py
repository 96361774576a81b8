"""Batched randomized SVD of the kept rows: the top q singular values of every layer (DESIGN 3.4).

Range finder on the row space of W_s = W[kept] (k x h): Y = W_s^T (W_s Omega), power iterations with
QR re-orthonormalisation, then the singular values of W_s Q from the small (p x p) eigenproblem of
(W_s Q)^T (W_s Q). The only heavy work is the two gather-fused products W_s X and W_s^T Y; QR and the
small eigenproblem are batched library calls.
"""
from __future__ import annotations

from typing import Callable

import torch

MatMul = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check(weights: torch.Tensor, kept: torch.Tensor, omega: torch.Tensor, q: int, power_iters: int) -> None:
    if weights.dim() != 3:
        raise ValueError(f"weights must be (L, n, h), got shape {tuple(weights.shape)}")
    L, n, h = weights.shape
    if kept.dim() != 2 or kept.shape[0] != L or kept.dtype != torch.int64:
        raise ValueError(f"kept must be int64 (L={L}, k), got {kept.dtype} {tuple(kept.shape)}")
    if omega.dim() != 3 or omega.shape[:2] != (L, h):
        raise ValueError(f"omega must be ({L}, {h}, p), got shape {tuple(omega.shape)}")
    p = omega.shape[2]
    if not 1 <= q <= min(p, kept.shape[1], h):
        raise ValueError(f"q={q} must be in [1, min(p={p}, k={kept.shape[1]}, h={h})]")
    if power_iters < 0:
        raise ValueError(f"power_iters={power_iters} must be >= 0")


def gathered_matmul_torch(weights: torch.Tensor, kept: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W[l, kept[l]] @ x[l]: (L, k, h) x (L, h, p) -> (L, k, p) float32."""
    rows = torch.gather(weights, 1, kept.unsqueeze(-1).expand(-1, -1, weights.shape[2])).float()
    return rows @ x.float()


def gathered_tmatmul_torch(weights: torch.Tensor, kept: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W[l, kept[l]]^T @ y[l]: (L, h, k) x (L, k, p) -> (L, h, p) float32."""
    rows = torch.gather(weights, 1, kept.unsqueeze(-1).expand(-1, -1, weights.shape[2])).float()
    return rows.transpose(1, 2) @ y.float()


def randomized_singular_values(
    weights: torch.Tensor,
    kept: torch.Tensor,
    omega: torch.Tensor,
    q: int,
    power_iters: int,
    matmul: MatMul,
    tmatmul: MatMul,
) -> torch.Tensor:
    """The algorithm, parameterised by the two gather-fused products (twin or Triton)."""
    _check(weights, kept, omega, q, power_iters)
    y = tmatmul(weights, kept, matmul(weights, kept, omega.float()))
    for _ in range(power_iters):
        basis = torch.linalg.qr(y).Q
        y = tmatmul(weights, kept, matmul(weights, kept, basis))
    basis = torch.linalg.qr(y).Q
    projected = matmul(weights, kept, basis)
    eig = torch.linalg.eigvalsh(projected.transpose(1, 2) @ projected)
    return eig[:, -q:].clamp_min(0).sqrt()


def topq_singular_values_torch(
    weights: torch.Tensor, kept: torch.Tensor, omega: torch.Tensor, q: int, power_iters: int = 2
) -> torch.Tensor:
    """Top q singular values (L, q) ascending of weights[l, kept[l]]; omega (L, h, p >= q) is the test matrix."""
    return randomized_singular_values(
        weights, kept, omega, q, power_iters, gathered_matmul_torch, gathered_tmatmul_torch
    )
